package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// Defaults for Config.
const (
	DefaultConfDir   = "/etc/cni/net.d"
	DefaultBinDir    = "/opt/cni/bin"
	ConflistName     = "10-kproxy.conflist"
	NetworkName      = "kproxy"
	DefaultBridge    = "cni0"
	CNIVersion       = "1.0.0"
	minimumIPv4MTU   = 576
	minimumIPv6MTU   = 1280
	maximumBridgeMTU = 65535
)

// Config is what the conflist depends on.
type Config struct {
	// PodCIDRs: the node's pod subnets (one per family); host-local hands out addresses
	// from them and the bridge gets the first address of each as the pods' gateway.
	PodCIDRs []netip.Prefix
	// MTU of cni0 and the pods' interfaces: datapath.Plan.PodMTU.
	MTU int
	// Bridge name (default cni0).
	Bridge string
	// DataDir of host-local (default: the plugin's /var/lib/cni/networks).
	DataDir string
}

type conflist struct {
	CNIVersion string   `json:"cniVersion"`
	Name       string   `json:"name"`
	Plugins    []plugin `json:"plugins"`
}

type plugin struct {
	Type         string          `json:"type"`
	Bridge       string          `json:"bridge,omitempty"`
	IsGateway    bool            `json:"isGateway,omitempty"`
	HairpinMode  bool            `json:"hairpinMode,omitempty"`
	IPMasq       *bool           `json:"ipMasq,omitempty"`
	MTU          int             `json:"mtu,omitempty"`
	IPAM         *ipam           `json:"ipam,omitempty"`
	Capabilities map[string]bool `json:"capabilities,omitempty"`
}

type ipam struct {
	Type    string        `json:"type"`
	Ranges  [][]ipamRange `json:"ranges"`
	Routes  []ipamRoute   `json:"routes"`
	DataDir string        `json:"dataDir,omitempty"`
}

type ipamRange struct {
	Subnet string `json:"subnet"`
}

type ipamRoute struct {
	Dst string `json:"dst"`
}

// RenderConflist returns the conflist for cfg, indented, ending in a newline.
func RenderConflist(cfg Config) ([]byte, error) {
	if len(cfg.PodCIDRs) == 0 {
		return nil, errors.New("cni conflist: no pod CIDR")
	}
	if cfg.MTU > maximumBridgeMTU {
		return nil, fmt.Errorf("cni conflist: mtu %d out of range", cfg.MTU)
	}
	br := cfg.Bridge
	if br == "" {
		br = DefaultBridge
	}
	ip := &ipam{Type: "host-local", DataDir: cfg.DataDir}
	seen := map[bool]bool{}
	for _, p := range cfg.PodCIDRs {
		if !p.IsValid() {
			return nil, fmt.Errorf("cni conflist: invalid pod CIDR %v", p)
		}
		is4 := p.Addr().Is4()
		if seen[is4] {
			return nil, fmt.Errorf("cni conflist: two pod CIDRs of one family (%s)", p)
		}
		seen[is4] = true
		if min := minMTU(is4); cfg.MTU != 0 && cfg.MTU < min {
			return nil, fmt.Errorf("cni conflist: mtu %d below the minimum %d for %s", cfg.MTU, min, p)
		}
		ip.Ranges = append(ip.Ranges, []ipamRange{{Subnet: p.Masked().String()}})
		def := "0.0.0.0/0"
		if !is4 {
			def = "::/0"
		}
		ip.Routes = append(ip.Routes, ipamRoute{Dst: def})
	}
	noMasq := false
	c := conflist{CNIVersion: CNIVersion, Name: NetworkName, Plugins: []plugin{
		{Type: "bridge", Bridge: br, IsGateway: true, HairpinMode: true, IPMasq: &noMasq, MTU: cfg.MTU, IPAM: ip},
		{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
	}}
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func minMTU(is4 bool) int {
	if is4 {
		return minimumIPv4MTU
	}
	return minimumIPv6MTU
}

// WriteConflist writes data to dir/10-kproxy.conflist atomically, unless the file already
// holds it. It reports whether it wrote.
func WriteConflist(dir string, data []byte) (bool, error) {
	path := filepath.Join(dir, ConflistName)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, "."+ConflistName+".*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, err
	}
	return true, nil
}
