//go:build netns

package cni

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pluginDir is where build-plugins.sh puts the upstream plugins (KPROXY_CNI_BIN overrides).
func pluginDir(t *testing.T) string {
	dir := os.Getenv("KPROXY_CNI_BIN")
	if dir == "" {
		dir = "/var/cache/kproxy/cni-plugins-v1.9.1/bin"
	}
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Skipf("upstream CNI plugins not built (run datapath/cni/build-plugins.sh): %v", err)
		}
	}
	return dir
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// invoke runs one plugin of the list inside the node namespace, as a runtime does: its
// config with the list's name and cniVersion (and the previous result) on stdin.
func invoke(t *testing.T, bin, nodeNS, podNS, cmd string, conf map[string]any) []byte {
	t.Helper()
	stdin, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command("ip", "netns", "exec", nodeNS, filepath.Join(bin, conf["type"].(string)))
	c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=kpdtest", "CNI_NETNS=/run/netns/" + podNS,
		"CNI_IFNAME=eth0", "CNI_PATH=" + bin, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	c.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout %s\nstderr %s", cmd, conf["type"], err, out, stderr.String())
	}
	return out
}

// TestConflistWithUpstreamPlugins attaches a pod namespace with the real bridge + host-local
// + portmap plugins driven by the rendered conflist, and checks what the pod got.
func TestConflistWithUpstreamPlugins(t *testing.T) {
	bin := pluginDir(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	tag := "kpd-" + hex.EncodeToString(b)
	nodeNS, podNS := tag+"-n1", tag+"-p1"
	for _, ns := range []string{nodeNS, podNS} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	data, err := RenderConflist(Config{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}, MTU: 1450, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	var prev json.RawMessage
	for _, p := range list.Plugins {
		p["name"], p["cniVersion"] = list.Name, list.CNIVersion
		if prev != nil {
			p["prevResult"] = prev
		}
		prev = invoke(t, bin, nodeNS, podNS, "ADD", p)
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(prev, &res); err != nil {
		t.Fatalf("result %s: %v", prev, err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address != "100.64.1.2/24" || res.IPs[0].Gateway != "100.64.1.1" {
		t.Errorf("result ips %+v, want 100.64.1.2/24 gw 100.64.1.1", res.IPs)
	}
	pod := sh(t, "ip", "-n", podNS, "-o", "addr", "show", "dev", "eth0") + sh(t, "ip", "-n", podNS, "link", "show", "eth0") +
		sh(t, "ip", "-n", podNS, "route")
	for _, want := range []string{"inet 100.64.1.2/24", "mtu 1450", "default via 100.64.1.1 dev eth0"} {
		if !strings.Contains(pod, want) {
			t.Errorf("pod namespace lacks %q:\n%s", want, pod)
		}
	}
	node := sh(t, "ip", "-n", nodeNS, "-o", "addr", "show", "dev", "cni0") + sh(t, "ip", "netns", "exec", nodeNS, "bridge", "-d", "link")
	for _, want := range []string{"inet 100.64.1.1/24", "hairpin on"} {
		if !strings.Contains(node, want) {
			t.Errorf("node namespace lacks %q:\n%s", want, node)
		}
	}
	// DEL in reverse order releases the address.
	for i := len(list.Plugins) - 1; i >= 0; i-- {
		delete(list.Plugins[i], "prevResult")
		invoke(t, bin, nodeNS, podNS, "DEL", list.Plugins[i])
	}
}
