package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// AddCNIPod creates pod k of node n (netns <node>-cK) the way a container runtime does with
// kproxy's datapath: it runs the plugin chain of the conflist node n's kproxy wrote (the
// upstream bridge, host-local and portmap binaries from binDir, built by
// datapath/cni/build-plugins.sh) with CNI_COMMAND=ADD inside the node's namespace, takes the
// pod's address from the result and starts the echo server. host-local keeps its leases in the
// state directory instead of /var/lib/cni. The pod is not in n.Pods (those are the harness's
// veth pods); Cleanup removes it with the rest.
func (c *Cluster) AddCNIPod(ctx context.Context, n *Node, k int, binDir string) (*Pod, error) {
	name := fmt.Sprintf("%s-c%d", n.Name, k)
	data, err := os.ReadFile(filepath.Join(c.CNIConfDir(n), "10-kproxy.conflist"))
	if err != nil {
		return nil, err
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("conflist of %s: %w", n.Name, err)
	}
	if err := ipBatch([]string{"netns", "add", name}, []string{"-n", name, "link", "set", "lo", "up"}); err != nil {
		return nil, err
	}
	var prev json.RawMessage
	for _, conf := range list.Plugins {
		conf["cniVersion"], conf["name"] = list.CNIVersion, list.Name
		if ipam, ok := conf["ipam"].(map[string]any); ok {
			ipam["dataDir"] = filepath.Join(c.State, "cni", "ipam-"+n.Name)
		}
		if prev != nil {
			conf["prevResult"] = prev
		}
		typ, _ := conf["type"].(string)
		if prev, err = c.runCNIPlugin(ctx, n, name, binDir, typ, conf); err != nil {
			return nil, err
		}
	}
	var result struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(prev, &result); err != nil || len(result.IPs) == 0 {
		return nil, fmt.Errorf("CNI result for %s: no address (%w): %s", name, err, prev)
	}
	p, err := netip.ParsePrefix(result.IPs[0].Address)
	if err != nil {
		return nil, fmt.Errorf("CNI result for %s: %w", name, err)
	}
	pod := &Pod{Name: name, Node: n, IP: p.Addr()}
	return pod, c.startEcho(ctx, pod)
}

// runCNIPlugin execs one plugin in node n's namespace for pod netns pod and returns its
// result.
func (c *Cluster) runCNIPlugin(ctx context.Context, n *Node, pod, binDir, typ string, conf map[string]any) (json.RawMessage, error) {
	in, err := json.Marshal(conf)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+NetnsPath(n.Name), "--", filepath.Join(binDir, typ))
	cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+pod, "CNI_NETNS="+NetnsPath(pod),
		"CNI_IFNAME=eth0", "CNI_PATH="+binDir)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("CNI %s ADD for %s on %s: %w: %s %s", typ, pod, n.Name, err,
			strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return json.RawMessage(bytes.TrimSpace(stdout.Bytes())), nil
}
