//go:build netns

package conntrack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netns"
	v1 "k8s.io/api/core/v1"
)

// testNS is a network namespace made for one test, deleted at its end.
type testNS struct {
	name string
}

func newTestNS(t *testing.T) testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	for _, tool := range []string{"ip", "iptables", "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (apt-get install -y iproute2 iptables conntrack): %v", tool, err)
		}
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	ns := testNS{name: "kpc-" + hex.EncodeToString(b)}
	run(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("delete namespace %s: %v: %s", ns.name, err, out)
		}
	})
	return ns
}

func (ns testNS) path() string { return "/run/netns/" + ns.name }

// exec runs a command inside the namespace.
func (ns testNS) exec(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "netns", "exec", ns.name}, args...)...)
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sendUDP sends one datagram from src to dst, from a socket opened inside the namespace.
func (ns testNS) sendUDP(t *testing.T, src, dst string) {
	t.Helper()
	conn := ns.listenUDP(t, netip.MustParseAddrPort(src))
	defer func() { _ = conn.Close() }()
	if _, err := conn.WriteToUDPAddrPort([]byte("ping"), netip.MustParseAddrPort(dst)); err != nil {
		t.Fatalf("send %s -> %s: %v", src, dst, err)
	}
}

// listenUDP opens a UDP socket in the namespace (a socket stays in the namespace it was
// created in).
func (ns testNS) listenUDP(t *testing.T, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = orig.Close() }()
	target, err := netns.GetFromName(ns.name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = target.Close() }()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	conn, lerr := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err := netns.Set(orig); err != nil {
		// The thread is in the wrong namespace: let it die with the goroutine.
		runtime.LockOSThread()
		t.Fatalf("return to the original namespace: %v", err)
	}
	if lerr != nil {
		t.Fatalf("listen %s: %v", addr, lerr)
	}
	return conn
}

// conntrackL lists the namespace's UDP entries with the conntrack tool.
func (ns testNS) conntrackL(t *testing.T) []Flow {
	t.Helper()
	var out []Flow
	for _, line := range strings.Split(ns.exec(t, "conntrack", "-L", "-p", "udp"), "\n") {
		if !strings.HasPrefix(line, "udp") {
			continue
		}
		var kv []string // src, dst, sport, dport values, original then reply
		for _, field := range strings.Fields(line) {
			k, v, ok := strings.Cut(field, "=")
			if ok && slices.Contains([]string{"src", "dst", "sport", "dport"}, k) {
				kv = append(kv, v)
			}
		}
		if len(kv) != 8 {
			t.Fatalf("cannot parse conntrack line %q", line)
		}
		ap := func(ip, port string) netip.AddrPort { return netip.MustParseAddrPort(net.JoinHostPort(ip, port)) }
		out = append(out, Flow{
			Protocol: v1.ProtocolUDP,
			Original: Tuple{Src: ap(kv[0], kv[2]), Dst: ap(kv[1], kv[3])},
			Reply:    Tuple{Src: ap(kv[4], kv[6]), Dst: ap(kv[5], kv[7])},
		})
	}
	slices.SortFunc(out, compareFlows)
	return out
}

// TestReconcileKernel creates real UDP conntrack entries through DNAT rules in a fresh
// namespace, reconciles, and checks with `conntrack -L` that exactly the stale ones are gone.
// The same run over a Fake seeded with the listed entries must leave the same table.
func TestReconcileKernel(t *testing.T) {
	ns := newTestNS(t)
	ns.exec(t, "ip", "link", "set", "lo", "up")
	// Node IP, endpoints and service IPs, all local on lo.
	for _, a := range []string{"100.64.0.1", "100.64.0.10", "100.64.0.11", "100.64.0.12", "100.100.0.10", "100.100.0.20"} {
		ns.exec(t, "ip", "addr", "add", a+"/32", "dev", "lo")
	}
	// One DNAT rule per client source port, so each flow gets the target we choose.
	dnat := []struct{ dst, dport, sport, to string }{
		{"100.100.0.10", "53", "40001", "100.64.0.10:5353"},  // serving endpoint: kept
		{"100.100.0.10", "53", "40002", "100.64.0.11:5353"},  // removed endpoint: stale
		{"100.100.0.20", "53", "40003", "100.64.0.12:5353"},  // service now without endpoints: stale
		{"100.64.0.1", "30053", "40004", "100.64.0.11:5353"}, // node port, removed endpoint: stale
		{"100.64.0.1", "30053", "40005", "100.64.0.10:5353"}, // node port, serving endpoint: kept
	}
	for _, r := range dnat {
		ns.exec(t, "iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-d", r.dst, "--dport", r.dport,
			"--sport", r.sport, "-j", "DNAT", "--to-destination", r.to)
	}
	for _, r := range dnat {
		ns.sendUDP(t, "100.64.0.1:"+r.sport, r.dst+":"+r.dport)
	}
	ns.sendUDP(t, "100.64.0.1:40006", "100.64.0.12:9999") // unrelated, not DNATed: kept

	flow := func(sport, dst, replySrc string) Flow {
		return udp("100.64.0.1:"+sport, dst, replySrc)
	}
	all := []Flow{
		flow("40001", "100.100.0.10:53", "100.64.0.10:5353"),
		flow("40002", "100.100.0.10:53", "100.64.0.11:5353"),
		flow("40003", "100.100.0.20:53", "100.64.0.12:5353"),
		flow("40004", "100.64.0.1:30053", "100.64.0.11:5353"),
		flow("40005", "100.64.0.1:30053", "100.64.0.10:5353"),
		flow("40006", "100.64.0.12:9999", "100.64.0.12:9999"),
	}
	slices.SortFunc(all, compareFlows)
	if diff := cmp.Diff(all, ns.conntrackL(t), addrPortCmp); diff != "" {
		t.Fatalf("conntrack -L before (-want +got):\n%s", diff)
	}

	ct, err := New(Options{NetNSPath: ns.path()})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	ctx := context.Background()
	listed, err := ct.List(ctx, v1.IPv4Protocol, v1.ProtocolUDP, v1.ProtocolSCTP)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(listed, compareFlows)
	if diff := cmp.Diff(all, listed, addrPortCmp); diff != "" {
		t.Fatalf("List (-want +got):\n%s", diff)
	}

	targets := Targets{
		Frontends: map[Frontend]Backends{
			fe(v1.ProtocolUDP, "100.100.0.10:53"): backends("100.64.0.10:5353"),
			fe(v1.ProtocolUDP, "100.100.0.20:53"): {},
		},
		NodePorts: map[NodePort]Backends{
			{Protocol: v1.ProtocolUDP, Port: 30053}: backends("100.64.0.10:5353"),
		},
		NodeIPs: addrs("100.64.0.1"),
	}
	want := []Flow{all[0], all[4], all[5]} // 40001, 40005, 40006 (sorted by source port)
	slices.SortFunc(want, compareFlows)

	fake, err := NewFake(listed...)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		ct    Interface
		after func() []Flow
	}{
		{"fake", fake, fake.Flows},
		{"kernel", ct, func() []Flow { return ns.conntrackL(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Reconcile(ctx, tc.ct, v1.IPv4Protocol, targets)
			if err != nil || n != 3 {
				t.Fatalf("Reconcile: got %d, %v; want 3, nil", n, err)
			}
			if diff := cmp.Diff(want, tc.after(), addrPortCmp); diff != "" {
				t.Errorf("entries left (-want +got):\n%s", diff)
			}
			n, err = Reconcile(ctx, tc.ct, v1.IPv4Protocol, targets)
			if err != nil || n != 0 {
				t.Errorf("second Reconcile: got %d, %v; want 0, nil", n, err)
			}
		})
	}
}

// TestDeleteKeepsRecreatedFlow checks that Delete matches the reply tuple too: an entry with
// the same original tuple but another DNAT target (re-created after the listing) stays.
func TestDeleteKeepsRecreatedFlow(t *testing.T) {
	ns := newTestNS(t)
	ns.exec(t, "ip", "link", "set", "lo", "up")
	for _, a := range []string{"100.64.0.1", "100.64.0.10", "100.100.0.10"} {
		ns.exec(t, "ip", "addr", "add", a+"/32", "dev", "lo")
	}
	ns.exec(t, "iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-d", "100.100.0.10", "--dport", "53",
		"-j", "DNAT", "--to-destination", "100.64.0.10:5353")
	ns.sendUDP(t, "100.64.0.1:40001", "100.100.0.10:53")

	ct, err := New(Options{NetNSPath: ns.path()})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	ctx := context.Background()
	live := udp("100.64.0.1:40001", "100.100.0.10:53", "100.64.0.10:5353")
	other := udp("100.64.0.1:40001", "100.100.0.10:53", "100.64.0.11:5353")
	if n, err := ct.Delete(ctx, []Flow{other}); err != nil || n != 0 {
		t.Fatalf("delete with another reply tuple: got %d, %v; want 0, nil", n, err)
	}
	if diff := cmp.Diff([]Flow{live}, ns.conntrackL(t), addrPortCmp); diff != "" {
		t.Fatalf("entries (-want +got):\n%s", diff)
	}
	if n, err := ct.Delete(ctx, []Flow{live}); err != nil || n != 1 {
		t.Fatalf("delete: got %d, %v; want 1, nil", n, err)
	}
	if got := ns.conntrackL(t); len(got) != 0 {
		t.Errorf("entries left: %v", got)
	}
}

func TestNewBadNamespace(t *testing.T) {
	if _, err := New(Options{NetNSPath: fmt.Sprintf("/run/netns/kpc-missing-%d", os.Getpid())}); err == nil {
		t.Fatal("New with a missing namespace: got no error")
	}
}
