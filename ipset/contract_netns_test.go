//go:build netns

package ipset

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kproxy/kproxy/internal/netnsutil"
)

// Kernel contract tests: `go test -tags netns ./ipset/` as root. Each test works in a
// network namespace of its own (kps-<random>, removed at the end), never in the
// caller's. They need iproute2's ip, ipset(8) (to cross-check what Handle reads) and
// iptables (to reference a set).

// newTestNS creates a network namespace and returns its path.
func newTestNS(t *testing.T) (name, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the netns tests need root")
	}
	name, path = netnsutil.CreateTemp(t, "kps")
	// ipset must work in the namespace before any test result means anything.
	run(t, "ip", "netns", "exec", name, "ipset", "list", "-n")
	return name, path
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type kernelBackend struct {
	ns string
	h  *Handle
}

func (b *kernelBackend) iface() Interface { return b.h }

func (b *kernelBackend) ruleArgs(op, name string) []string {
	return []string{"ip", "netns", "exec", b.ns, "iptables", "-w", op, "INPUT",
		"-m", "set", "--match-set", name, "dst,dst", "-j", "ACCEPT"}
}

func (b *kernelBackend) reference(t *testing.T, name string) {
	run(t, b.ruleArgs("-A", name)...)
}

func (b *kernelBackend) unreference(t *testing.T, name string) {
	run(t, b.ruleArgs("-D", name)...)
}

// checkState compares what Handle read with what `ipset list` prints.
func (b *kernelBackend) checkState(t *testing.T, state map[string][]string) {
	t.Helper()
	cli := map[string][]string{}
	var cur string
	inMembers := false
	for _, line := range strings.Split(run(t, "ip", "netns", "exec", b.ns, "ipset", "list"), "\n") {
		switch {
		case strings.HasPrefix(line, "Name: "):
			cur, inMembers = strings.TrimPrefix(line, "Name: "), false
			cli[cur] = []string{}
		case line == "Members:":
			inMembers = true
		case line == "":
			inMembers = false
		case inMembers:
			cli[cur] = append(cli[cur], line)
		}
	}
	for _, es := range cli {
		sort.Strings(es)
	}
	if diff := cmp.Diff(cli, state); diff != "" {
		t.Errorf("ipset list (-) and Handle (+) disagree:\n%s", diff)
	}
}

func TestContractKernel(t *testing.T) {
	ns, path := newTestNS(t)
	h, err := New(Options{NetNSPath: path})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(h.Close)
	b := &kernelBackend{ns: ns, h: h}
	runContract(t, func(t *testing.T) backend {
		// Each case starts from an empty namespace: no rules, no sets.
		run(t, "ip", "netns", "exec", ns, "iptables", "-w", "-F", "INPUT")
		ctx := context.Background()
		names, err := h.ListSets(ctx)
		if err != nil {
			t.Fatalf("ListSets: %v", err)
		}
		for _, n := range names {
			if err := h.DestroySet(ctx, n); err != nil {
				t.Fatalf("DestroySet %s: %v", n, err)
			}
		}
		return b
	})
}

// TestHandleStaysInItsNamespace: a set made through a Handle is in its namespace only.
func TestHandleStaysInItsNamespace(t *testing.T) {
	ns1, path1 := newTestNS(t)
	ns2, path2 := newTestNS(t)
	ctx := context.Background()
	h1, err := New(Options{NetNSPath: path1})
	if err != nil {
		t.Fatal(err)
	}
	defer h1.Close()
	h2, err := New(Options{NetNSPath: path2})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if err := h1.EnsureSet(ctx, Set{Name: "KPT-ONLY-IN-1", Type: HashIP}); err != nil {
		t.Fatal(err)
	}
	if got := run(t, "ip", "netns", "exec", ns1, "ipset", "list", "-n"); got != "KPT-ONLY-IN-1\n" {
		t.Errorf("ipset list -n in %s = %q", ns1, got)
	}
	if got := run(t, "ip", "netns", "exec", ns2, "ipset", "list", "-n"); got != "" {
		t.Errorf("ipset list -n in %s = %q, want nothing", ns2, got)
	}
	if names, err := h2.ListSets(ctx); err != nil || len(names) != 0 {
		t.Errorf("h2.ListSets = %v, %v; want none", names, err)
	}
}

// TestKernelLargeSets checks the dump of sets that span many netlink messages, and
// reports what one entry costs.
func TestKernelLargeSets(t *testing.T) {
	_, path := newTestNS(t)
	ctx := context.Background()
	h, err := New(Options{NetNSPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	n := 20000
	if os.Getenv("KPROXY_IN_VM") == "1" {
		n = 3000 // TCG runs this ~50x slower; 3000 entries still span many dump messages
	}
	var want []Entry
	for i := 0; i < n; i++ {
		a := [4]byte{100, 100, byte(i >> 8), byte(i)}
		want = append(want, Entry{IP: netip.AddrFrom4(a), Protocol: ProtocolTCP, Port: uint16(80 + i%3)})
	}
	set := Set{Name: "KPT-BIG", Type: HashIPPort}
	if err := h.EnsureSet(ctx, set); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := h.AddEntries(ctx, set.Name, want); err != nil {
		t.Fatal(err)
	}
	addTime := time.Since(start)
	start = time.Now()
	got, err := h.ListEntries(ctx, set.Name)
	if err != nil {
		t.Fatal(err)
	}
	listTime := time.Since(start)
	sortEntries(want)
	if diff := cmp.Diff(entryStrings(want), entryStrings(got)); diff != "" {
		t.Fatalf("entries differ (-want +got):\n%s", diff)
	}
	t.Logf("%d hash:ip,port entries: add %v (%v/entry), list %v", n, addTime, addTime/time.Duration(n), listTime)

	ports := Set{Name: "KPT-PORTS", Type: BitmapPort}
	if err := h.EnsureSet(ctx, ports); err != nil {
		t.Fatal(err)
	}
	var pe []Entry
	for p := 30000; p < 32768; p++ {
		pe = append(pe, Entry{Port: uint16(p)})
	}
	if err := h.AddEntries(ctx, ports.Name, pe); err != nil {
		t.Fatal(err)
	}
	gotp, err := h.ListEntries(ctx, ports.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotp) != len(pe) {
		t.Fatalf("bitmap:port lists %d entries, want %d", len(gotp), len(pe))
	}
	start = time.Now()
	names, err := h.ListSets(ctx)
	if err != nil || len(names) != 2 {
		t.Fatalf("ListSets = %v, %v", names, err)
	}
	t.Logf("ListSets with %d entries in the namespace: %v", n+len(pe), time.Since(start))
}

// TestReconcileKernel runs the Reconcile scenario of reconcile_test.go on the kernel,
// references being iptables rules.
func TestReconcileKernel(t *testing.T) {
	ns, path := newTestNS(t)
	h, err := New(Options{NetNSPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	b := &kernelBackend{ns: ns, h: h}
	reconcileScenario(t, h, func(name string, on bool) {
		if on {
			b.reference(t, name)
		} else {
			b.unreference(t, name)
		}
	})
	b.checkState(t, readState(t, h))
}

// TestKubeProxyTakeover: sets made by kube-proxy (the ipset CLI, revision 7, with the
// arguments upstream's runner passes) are taken over by Reconcile as they are, and
// kube-proxy's `ipset create -exist` accepts the sets kproxy makes.
func TestKubeProxyTakeover(t *testing.T) {
	ns, path := newTestNS(t)
	ctx := context.Background()
	h, err := New(Options{NetNSPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ipsetCLI := func(args ...string) string {
		return run(t, append([]string{"ip", "netns", "exec", ns, "ipset"}, args...)...)
	}
	// What kube-proxy runs (pkg/proxy/ipvs/ipset/ipset.go createSet).
	kubeProxyCreate := func(s Set) {
		args := []string{"create", s.Name, string(s.Type)}
		if s.Type.isHash() {
			args = append(args, "family", string(s.Family), "hashsize", "1024", "maxelem", "65536")
		} else {
			args = append(args, "range", "0-65535")
		}
		ipsetCLI(append(args, "-exist")...)
	}
	sets := KubeSets(FamilyIPv4)
	for _, s := range sets {
		kubeProxyCreate(s)
	}
	ipsetCLI("add", KubeClusterIP, "100.100.0.10,tcp:80")
	ipsetCLI("add", KubeClusterIP, "100.100.0.99,tcp:80")
	ipsetCLI("add", KubeNodePortTCP, "30080")
	// an entry kproxy cannot express (so cannot delete one by one): the set is rebuilt
	ipsetCLI("add", KubeClusterIP, "100.100.0.98,icmp:echo-request")

	var desired []SetState
	for _, s := range sets {
		st := SetState{Set: s}
		switch s.Name {
		case KubeClusterIP:
			st.Entries = []Entry{eIPPort("100.100.0.10", "tcp", 80), eIPPort("100.100.0.11", "udp", 53)}
		case KubeNodePortTCP:
			st.Entries = []Entry{ePort(30080), ePort(30081)}
		}
		desired = append(desired, st)
	}
	res, err := Reconcile(ctx, h, desired, ReconcileOptions{})
	if err != nil {
		t.Fatalf("Reconcile over kube-proxy's sets: %v", err)
	}
	if diff := cmp.Diff(ReconcileResult{Added: 1, Rebuilt: 1}, res); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	got, err := h.ListEntries(ctx, KubeClusterIP)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"100.100.0.10,tcp:80", "100.100.0.11,udp:53"}, entryStrings(got)); diff != "" {
		t.Errorf("KUBE-CLUSTER-IP (-want +got):\n%s", diff)
	}

	// The other way round: kproxy's sets, then kube-proxy starting on the node.
	for _, s := range sets {
		if err := h.DestroySet(ctx, s.Name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Reconcile(ctx, h, desired, ReconcileOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		kubeProxyCreate(s) // fails the test if ipset says the set differs
	}
	ipsetCLI("add", KubeNodePortTCP, "30082")
	got, err = h.ListEntries(ctx, KubeNodePortTCP)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"30080", "30081", "30082"}, entryStrings(got)); diff != "" {
		t.Errorf("KUBE-NODE-PORT-TCP (-want +got):\n%s", diff)
	}
}

// TestForeignTypeSet: a set of a type kproxy does not use, made by someone else under a
// name kproxy wants, is a type mismatch, and its entries are not touched.
func TestForeignTypeSet(t *testing.T) {
	ns, path := newTestNS(t)
	ctx := context.Background()
	h, err := New(Options{NetNSPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	run(t, "ip", "netns", "exec", ns, "ipset", "create", "KPT-FOREIGN", "hash:net,port")
	run(t, "ip", "netns", "exec", ns, "ipset", "add", "KPT-FOREIGN", "10.0.0.0/8,tcp:80")
	if err := h.EnsureSet(ctx, Set{Name: "KPT-FOREIGN", Type: HashIPPort}); !errors.Is(err, ErrTypeMismatch) {
		t.Errorf("EnsureSet over hash:net,port = %v, want ErrTypeMismatch", err)
	}
	if err := h.AddEntries(ctx, "KPT-FOREIGN", []Entry{eIPPort("10.0.0.1", "tcp", 80)}); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("AddEntries to hash:net,port = %v, want ErrInvalidEntry", err)
	}
	if names, err := h.ListSets(ctx); err != nil || len(names) != 1 {
		t.Errorf("ListSets = %v, %v", names, err)
	}
	if out := run(t, "ip", "netns", "exec", ns, "ipset", "list", "KPT-FOREIGN"); !strings.Contains(out, "10.0.0.0/8,tcp:80") {
		t.Errorf("the foreign set changed:\n%s", out)
	}
}
