package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/datapath"
	"github.com/kproxy/kproxy/internal/netnsutil"
)

// The topologies, all in network namespaces named <tag>-*: nothing in the root namespace.
// Addresses from the test plan (/work/shared/TESTING.md): underlay 192.0.2.0/24, pods
// 100.64.0.0/16 (one /24 per node).
//
// veth-limit (the reference: what two pods joined by nothing but a veth pair can do):
//
//	<tag>-pa  eth0 100.64.1.10/16 ──veth── eth0 100.64.2.10/16  <tag>-pb
//
// vxlan, host-gw, ipip (two nodes joined by an underlay veth, one pod per node attached as
// the CNI bridge plugin does it from kproxy's conflist: cni0 bridge with the pod subnet's first
// address, a veth with the backend's pod MTU, default route via cni0):
//
//	<tag>-pa  eth0 100.64.1.10/24 ─veth─ vp@cni0 100.64.1.1/24  <tag>-na  eth0 192.0.2.11/24
//	                                                                        │ veth (underlay, MTU 1500)
//	<tag>-pb  eth0 100.64.2.10/24 ─veth─ vp@cni0 100.64.2.1/24  <tag>-nb  eth0 192.0.2.12/24
//
// and then each node's datapath programmed by package datapath (ComputePlan + Reconciler.Sync
// over a netlink Handle in the node's namespace): the device, routes, neighbour and FDB
// entries kproxy --datapath=<backend> writes. Both nodes share one /24 underlay, so host-gw
// needs no router. No iptables rules are written (the egress masquerade does not apply to
// pod-to-pod traffic).

const (
	podAIP   = "100.64.1.10"
	podBIP   = "100.64.2.10"
	nodeAIP  = "192.0.2.11"
	nodeBIP  = "192.0.2.12"
	underlay = 24
)

// topo is one backend's namespaces.
type topo struct {
	tag     string
	backend string
	podMTU  int
	made    []string // namespaces created, in order
}

func (tp *topo) ns(s string) string { return tp.tag + "-" + s }
func (tp *topo) podA() string       { return tp.ns("pa") }
func (tp *topo) podB() string       { return tp.ns("pb") }
func (tp *topo) nodeA() string      { return tp.ns("na") }
func (tp *topo) nodeB() string      { return tp.ns("nb") }

// ipCmd runs `ip args...` and returns its error with the output.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// runAll runs each command, stopping at the first error.
func runAll(cmds [][]string) error {
	for _, c := range cmds {
		if err := ipCmd(c...); err != nil {
			return err
		}
	}
	return nil
}

// addNS creates a namespace with lo up and records it for destroy.
func (tp *topo) addNS(name string) error {
	if err := ipCmd("netns", "add", name); err != nil {
		return err
	}
	tp.made = append(tp.made, name)
	return ipCmd("-n", name, "link", "set", "lo", "up")
}

// writeSysctl writes /proc/sys/<key> (dots → slashes) inside namespace ns.
func writeSysctl(ns, key, value string) error {
	return netnsutil.Do(netnsutil.Path(ns), func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(key, ".", "/"), []byte(value), 0o644)
	})
}

// backendOf maps a benchmark backend name to the datapath's.
func backendOf(name string) (datapath.Backend, bool) {
	switch name {
	case "vxlan":
		return datapath.BackendVXLAN, true
	case "host-gw":
		return datapath.BackendHostGW, true
	case "ipip":
		return datapath.BackendIPIP, true
	}
	return "", false
}

// buildTopo makes backend's topology under tag. On error, what was made is still recorded:
// the caller destroys it either way.
func buildTopo(ctx context.Context, tag, backend string) (*topo, error) {
	tp := &topo{tag: tag, backend: backend, podMTU: datapath.DefaultMTU}
	if backend == limitBackend {
		return tp, tp.buildLimit()
	}
	be, ok := backendOf(backend)
	if !ok {
		return tp, fmt.Errorf("unknown backend %q", backend)
	}
	cfg := datapath.Config{Backend: be, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}}
	tp.podMTU = datapath.PodMTU(cfg, netip.MustParseAddr(nodeAIP))
	if err := tp.buildNodes(); err != nil {
		return tp, err
	}
	return tp, tp.program(ctx, cfg)
}

func (tp *topo) buildLimit() error {
	a, b := tp.podA(), tp.podB()
	for _, n := range []string{a, b} {
		if err := tp.addNS(n); err != nil {
			return err
		}
	}
	return runAll([][]string{
		{"-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b},
		{"-n", a, "addr", "add", podAIP + "/16", "dev", "eth0"},
		{"-n", b, "addr", "add", podBIP + "/16", "dev", "eth0"},
		{"-n", a, "link", "set", "eth0", "up"},
		{"-n", b, "link", "set", "eth0", "up"},
	})
}

func (tp *topo) buildNodes() error {
	for _, n := range []string{tp.nodeA(), tp.nodeB(), tp.podA(), tp.podB()} {
		if err := tp.addNS(n); err != nil {
			return err
		}
	}
	na, nb := tp.nodeA(), tp.nodeB()
	if err := runAll([][]string{
		{"-n", na, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", nb},
		{"-n", na, "addr", "add", fmt.Sprintf("%s/%d", nodeAIP, underlay), "dev", "eth0"},
		{"-n", nb, "addr", "add", fmt.Sprintf("%s/%d", nodeBIP, underlay), "dev", "eth0"},
		{"-n", na, "link", "set", "eth0", "up"},
		{"-n", nb, "link", "set", "eth0", "up"},
	}); err != nil {
		return err
	}
	mtu := fmt.Sprint(tp.podMTU)
	for i, p := range []struct{ node, pod, podIP string }{{na, tp.podA(), podAIP}, {nb, tp.podB(), podBIP}} {
		gw := fmt.Sprintf("100.64.%d.1", i+1)
		if err := writeSysctl(p.node, "net.ipv4.ip_forward", "1"); err != nil {
			return fmt.Errorf("%s: ip_forward: %w", p.node, err)
		}
		if err := runAll([][]string{
			{"-n", p.node, "link", "add", "cni0", "mtu", mtu, "type", "bridge"},
			{"-n", p.node, "addr", "add", gw + "/24", "dev", "cni0"},
			{"-n", p.node, "link", "set", "cni0", "up"},
			{"-n", p.node, "link", "add", "vp", "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", p.pod},
			{"-n", p.node, "link", "set", "vp", "master", "cni0", "up"},
			{"-n", p.pod, "addr", "add", p.podIP + "/24", "dev", "eth0"},
			{"-n", p.pod, "link", "set", "eth0", "up"},
			{"-n", p.pod, "route", "add", "default", "via", gw},
		}); err != nil {
			return err
		}
	}
	return nil
}

// program computes each node's plan from both nodes and syncs it into the node's namespace
// with the datapath package's netlink writer: what the kproxy agent does on each node.
func (tp *topo) program(ctx context.Context, cfg datapath.Config) error {
	a, b := netip.MustParseAddr(nodeAIP), netip.MustParseAddr(nodeBIP)
	nodes := []datapath.Node{
		{Name: "node-a", IP: a, VTEPMAC: datapath.VTEPMACFor(a), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.1.0/24")}},
		{Name: "node-b", IP: b, VTEPMAC: datapath.VTEPMACFor(b), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.2.0/24")}},
	}
	for i, ns := range []string{tp.nodeA(), tp.nodeB()} {
		self := datapath.Self{Node: nodes[i], Underlay: netip.PrefixFrom(nodes[i].IP, underlay)}
		plan, err := datapath.ComputePlan(cfg, self, nodes)
		if err != nil {
			return fmt.Errorf("%s: plan: %w", ns, err)
		}
		if len(plan.Skipped) > 0 {
			return fmt.Errorf("%s: plan skipped peers: %v", ns, plan.Skipped)
		}
		if plan.PodMTU != tp.podMTU {
			return fmt.Errorf("%s: plan pod MTU %d, topology built with %d", ns, plan.PodMTU, tp.podMTU)
		}
		h, err := datapath.NewHandle(netnsutil.Path(ns))
		if err != nil {
			return err
		}
		_, err = datapath.NewReconciler(h).Sync(ctx, plan)
		_ = h.Close()
		if err != nil {
			return fmt.Errorf("%s: datapath sync: %w", ns, err)
		}
	}
	return nil
}

// destroy deletes every namespace the topology made (their links go with them: every link
// of a topology lives in its namespaces, the veth pairs' both ends included).
func (tp *topo) destroy() error {
	var errs []error
	for i := len(tp.made) - 1; i >= 0; i-- {
		if err := ipCmd("netns", "del", tp.made[i]); err != nil {
			errs = append(errs, err)
		}
	}
	tp.made = nil
	return errors.Join(errs...)
}

// sweep deletes every namespace whose name starts with prefix+"-" (what a failed destroy
// or an interrupted run left) and returns the names it deleted.
func sweep(prefix string) ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var deleted []string
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix+"-") {
			continue
		}
		if err := ipCmd("netns", "del", f[0]); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, f[0])
	}
	return deleted, errors.Join(errs...)
}

// probeIPIP checks that this kernel can make an IPIP device in a namespace (the host's has
// no ipip module: "Unknown device type").
func probeIPIP(prefix string) error {
	ns := prefix + "-probe"
	if err := ipCmd("netns", "add", ns); err != nil {
		return err
	}
	defer func() { _ = ipCmd("netns", "del", ns) }()
	out, err := exec.Command("ip", "-n", ns, "link", "add", "name", "kpdpprobe", "type", "ipip", "local", nodeAIP).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("`ip link add type ipip`: %s", msg)
	}
	return nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// crossDevice is the device of node A that pod A's traffic to pod B must leave through: the
// tunnel device of an encapsulating backend, the underlay for host-gw; "" for veth-limit.
func crossDevice(backend string) string {
	switch backend {
	case "vxlan":
		return datapath.VXLANDeviceName(datapath.DefaultVNI)
	case "ipip":
		return datapath.IPIPDeviceName
	case "host-gw":
		return "eth0"
	}
	return ""
}

// txBytes reads a device's transmitted-bytes counter in namespace ns over netlink.
func txBytes(ns, dev string) (uint64, error) {
	h, err := netns.GetFromPath(netnsutil.Path(ns))
	if err != nil {
		return 0, err
	}
	defer func() { _ = h.Close() }()
	nl, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, err
	}
	defer nl.Close()
	l, err := nl.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("%s in %s: %w", dev, ns, err)
	}
	if l.Attrs().Statistics == nil {
		return 0, fmt.Errorf("%s in %s: no statistics", dev, ns)
	}
	return l.Attrs().Statistics.TxBytes, nil
}
