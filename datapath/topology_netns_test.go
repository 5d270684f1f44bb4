//go:build netns

package datapath

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/netnsutil"
)

// topo is three nodes on a fabric bridge, each with a cni0 bridge and one pod, all in
// namespaces of their own (kpd-<tag>-...): nothing touches the root namespace.
//
//	fabric  kpd-T-fab: bridge fab 192.0.2.1/24
//	node i  kpd-T-ni:  eth0 192.0.2.1i/24 (veth to fab), cni0 100.64.i.1/24, ip_forward
//	pod i   kpd-T-pi:  eth0 100.64.i.10/24 (veth to cni0), default via 100.64.i.1
type topo struct {
	t     *testing.T
	tag   string
	nodes []Node
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newTopo(t *testing.T, podMTU int) *topo {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	tp := &topo{t: t, tag: "kpd-" + hex.EncodeToString(b)}
	t.Cleanup(tp.cleanup)
	fab := tp.ns("fab")
	run(t, "ip", "netns", "add", fab)
	run(t, "ip", "-n", fab, "link", "add", "fab", "type", "bridge")
	run(t, "ip", "-n", fab, "addr", "add", "192.0.2.1/24", "dev", "fab")
	run(t, "ip", "-n", fab, "link", "set", "fab", "up")
	for i := 1; i <= 3; i++ {
		n, p := tp.node(i), tp.pod(i)
		ip := fmt.Sprintf("192.0.2.1%d", i)
		run(t, "ip", "netns", "add", n)
		run(t, "ip", "netns", "add", p)
		run(t, "ip", "-n", fab, "link", "add", fmt.Sprintf("vf%d", i), "type", "veth", "peer", "name", "eth0", "netns", n)
		run(t, "ip", "-n", fab, "link", "set", fmt.Sprintf("vf%d", i), "master", "fab", "up")
		run(t, "ip", "-n", n, "addr", "add", ip+"/24", "dev", "eth0")
		run(t, "ip", "-n", n, "link", "set", "eth0", "up")
		run(t, "ip", "-n", n, "link", "set", "lo", "up")
		run(t, "ip", "-n", n, "link", "add", "cni0", "mtu", fmt.Sprint(podMTU), "type", "bridge")
		run(t, "ip", "-n", n, "addr", "add", fmt.Sprintf("100.64.%d.1/24", i), "dev", "cni0")
		run(t, "ip", "-n", n, "link", "set", "cni0", "up")
		run(t, "ip", "netns", "exec", n, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
		run(t, "ip", "-n", n, "link", "add", "vp", "mtu", fmt.Sprint(podMTU), "type", "veth", "peer", "name", "eth0", "mtu", fmt.Sprint(podMTU), "netns", p)
		run(t, "ip", "-n", n, "link", "set", "vp", "master", "cni0", "up")
		run(t, "ip", "-n", p, "addr", "add", fmt.Sprintf("100.64.%d.10/24", i), "dev", "eth0")
		run(t, "ip", "-n", p, "link", "set", "eth0", "up")
		run(t, "ip", "-n", p, "link", "set", "lo", "up")
		run(t, "ip", "-n", p, "route", "add", "default", "via", fmt.Sprintf("100.64.%d.1", i))
		a := netip.MustParseAddr(ip)
		tp.nodes = append(tp.nodes, Node{Name: fmt.Sprintf("n%d", i), IP: a, VTEPMAC: VTEPMACFor(a),
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("100.64.%d.0/24", i))}})
	}
	return tp
}

func (tp *topo) ns(s string) string        { return tp.tag + "-" + s }
func (tp *topo) node(i int) string         { return tp.ns(fmt.Sprintf("n%d", i)) }
func (tp *topo) pod(i int) string          { return tp.ns(fmt.Sprintf("p%d", i)) }
func podIP(i int) string                   { return fmt.Sprintf("100.64.%d.10", i) }
func (tp *topo) nsPath(name string) string { return "/run/netns/" + name }

func (tp *topo) cleanup() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], tp.tag+"-") {
			if out, err := exec.Command("ip", "netns", "del", f[0]).CombinedOutput(); err != nil {
				tp.t.Errorf("delete netns %s: %v %s", f[0], err, out)
			}
		}
	}
}

// self is node i as ComputePlan sees it.
func (tp *topo) self(i int) Self {
	n := tp.nodes[i-1]
	return Self{Node: n, Underlay: netip.PrefixFrom(n.IP, 24)}
}

// dump prints what an operator would look at on node i.
func (tp *topo) dump(i int) string {
	n := tp.node(i)
	var b strings.Builder
	for _, args := range [][]string{{"-d", "link"}, {"route"}, {"neigh"}} {
		out, _ := exec.Command("ip", append([]string{"-n", n}, args...)...).CombinedOutput()
		b.Write(out)
	}
	out, _ := exec.Command("ip", "netns", "exec", n, "bridge", "fdb", "show").CombinedOutput()
	b.Write(out)
	return b.String()
}

// fragCreates reads the IPv4 FragCreates counter of a namespace (/proc/net/snmp).
func fragCreates(name string) (n int, err error) {
	err = netnsutil.Do(netnsutil.Path(name), func() error {
		data, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		lines := strings.Split(string(data), "\n")
		for i := 0; i+1 < len(lines); i++ {
			if !strings.HasPrefix(lines[i], "Ip: ") || !strings.HasPrefix(lines[i+1], "Ip: ") {
				continue
			}
			keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			for k := range keys {
				if keys[k] == "FragCreates" {
					_, err := fmt.Sscan(vals[k], &n)
					return err
				}
			}
		}
		return fmt.Errorf("no FragCreates in snmp")
	})
	return n, err
}

func tpAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
