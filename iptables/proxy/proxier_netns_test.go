//go:build netns

package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/netnsutil"
	"github.com/kproxy/kproxy/iptables"
)

// newNetNS creates a fresh network namespace (kpt-<random>), deleted at the end of the test,
// and returns a Runner bound to it.
func newNetNS(t *testing.T) *iptables.Runner {
	t.Helper()
	return iptables.New(iptables.Options{NetNSPath: newNetNSPath(t)})
}

// newNetNSPath creates a fresh network namespace, deleted at the end of the test, and returns
// its path.
func newNetNSPath(t testing.TB) string {
	t.Helper()
	_, path := netnsutil.CreateTemp(t, "kpt")
	return path
}

// counting counts the restores that reach the kernel.
type counting struct {
	iptables.Interface
	restores int
}

func (c *counting) Restore(ctx context.Context, data []byte) error {
	c.restores++
	return c.Interface.Restore(ctx, data)
}

// tables returns the nat and filter tables without iptables-save's comment lines.
func tables(t *testing.T, ipt iptables.Interface) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		data, err := ipt.Save(context.Background(), table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.SplitAfter(string(data), "\n") {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(line)
			}
		}
	}
	return b.String()
}

// TestProxierKernel runs the same syncs against the kernel and the Fake: the tables must be
// identical after each, and syncs with nothing changed (including a restarted proxier's)
// must not write.
func TestProxierKernel(t *testing.T) {
	ctx := context.Background()
	cfg := Config{ClusterCIDR: clusterCIDR, MasqueradeRandomFully: true}
	kernel := &counting{Interface: newNetNS(t)}
	fake := iptables.NewFake(iptables.IPv4)
	pk, pf := NewProxier(kernel, cfg), NewProxier(fake, cfg)

	steps := []struct {
		name  string
		world *world
		full  bool
	}{
		{"first sync", threeEndpoints().add(servicePort(dnsUDP, "100.100.0.53", 53)), true},
		{"endpoint removed", oneService().add(servicePort(dnsUDP, "100.100.0.53", 53), readyEP("100.64.1.20", 53)), false},
		{"no change, partial", oneService().add(servicePort(dnsUDP, "100.100.0.53", 53), readyEP("100.64.1.20", 53)), false},
		{"no change, full", oneService().add(servicePort(dnsUDP, "100.100.0.53", 53), readyEP("100.64.1.20", 53)), true},
		{"service removed", oneService(), false},
	}
	for _, s := range steps {
		before := kernel.restores
		for _, p := range []*Proxier{pk, pf} {
			if err := p.Apply(ctx, s.world.snapshot(), testNode, s.full); err != nil {
				t.Fatalf("%s: Apply: %v", s.name, err)
			}
		}
		if diff := cmp.Diff(tables(t, kernel), tables(t, fake)); diff != "" {
			t.Errorf("%s: kernel and fake differ (-kernel +fake):\n%s", s.name, diff)
		}
		if wrote := kernel.restores > before; wrote == strings.HasPrefix(s.name, "no change") {
			t.Errorf("%s: wrote = %v", s.name, wrote)
		}
	}

	restarted := NewProxier(kernel, cfg)
	before := kernel.restores
	if err := restarted.Apply(ctx, oneService().snapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	if kernel.restores != before {
		t.Errorf("a restarted proxier with nothing changed wrote %d restores", kernel.restores-before)
	}
	if got := tables(t, kernel); !slices.Contains(strings.Split(got, "\n"),
		`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`) {
		t.Errorf("no base jump in the kernel's nat table:\n%s", got)
	}
}

// TestRenderCasesKernel writes every golden case into a fresh namespace and into a Fake: the
// kernel must accept it, iptables-save must show what the Fake shows (so the canonical forms
// kproxy compares with are the kernel's), and a second, idle sync must write nothing.
func TestRenderCasesKernel(t *testing.T) {
	for _, tc := range renderCases() {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := tc.cfg
			if len(cfg.NodePortAddresses) > 0 {
				cfg.InterfaceAddrs = func() ([]netip.Addr, error) { return tc.nodePortIPs, nil }
			}
			kernel := &counting{Interface: iptables.New(iptables.Options{IPv6: cfg.Family == iptables.IPv6, NetNSPath: newNetNSPath(t)})}
			fake := iptables.NewFake(cfg.Family)
			for _, ipt := range []iptables.Interface{kernel, fake} {
				if err := NewProxier(ipt, cfg).Apply(ctx, tc.world.changedSnapshot(), testNode, true); err != nil {
					t.Fatalf("Apply: %v", err)
				}
			}
			if diff := cmp.Diff(tables(t, kernel), tables(t, fake)); diff != "" {
				t.Errorf("kernel and fake differ (-kernel +fake):\n%s", diff)
			}
			before := kernel.restores
			if err := NewProxier(kernel, cfg).Apply(ctx, tc.world.snapshot(), testNode, true); err != nil {
				t.Fatal(err)
			}
			if kernel.restores != before {
				t.Errorf("a second proxier's first sync wrote %d restores: some canonical form differs from the kernel's", kernel.restores-before)
			}
		})
	}
}

// TestRepairFromLinesKernel: after a sync wrote them, the cache keeps per-service chains as
// iptables-save's lines only; a repair writes those lines back with the real
// iptables-restore, and the kernel ends as a fresh proxier would leave it.
func TestRepairFromLinesKernel(t *testing.T) {
	ctx := context.Background()
	cfg := Config{ClusterCIDR: clusterCIDR, MasqueradeRandomFully: true}
	kernel := newNetNS(t)
	p := NewProxier(kernel, cfg)
	w := manyServices(5)
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	want := tables(t, kernel)
	name := portName("ns1", "svc001", "p80", v1.ProtocolTCP)
	sep := endpointChainName(name, "tcp", readyEP("100.64.1.2", 8080))
	svc := serviceChainName(name, "tcp")
	if c := p.cache.ports[name]; c == nil || c.rules.chains[0].Rules != nil {
		t.Fatal("the cache kept the rendered rules of a written chain")
	}
	edits := fmt.Sprintf("*nat\n-F %s\n-D %s 1\nCOMMIT\n", sep, svc)
	if err := kernel.Restore(ctx, []byte(edits)); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx, w.snapshot(), testNode, false); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, tables(t, kernel)); diff != "" {
		t.Errorf("after the repair (-before the edits +now):\n%s", diff)
	}
	if st := p.Stats(); st.Repairs != 1 {
		t.Errorf("stats %+v, want one repair", st)
	}
}

// TestSharedChainEditsKernel: with the nf_tables generation, partial syncs that add and remove
// services edit nat and filter KUBE-SERVICES by rule position with the real iptables-restore,
// and after each the kernel holds what a fresh proxier's full sync writes into empty tables
// (nat KUBE-SERVICES's service rules in another order: new ones go to the head) and what a
// restarted proxier finds nothing to write to.
func TestSharedChainEditsKernel(t *testing.T) {
	ctx := context.Background()
	cfg := Config{ClusterCIDR: clusterCIDR, MasqueradeRandomFully: true}
	runner := iptables.New(iptables.Options{NetNSPath: newNetNSPath(t)})
	kernel := &teeRestores{Interface: runner}
	gcfg := cfg
	gcfg.Generation = runner.Generation
	p := NewProxier(kernel, gcfg)
	w := manyServices(80) // nat KUBE-SERVICES: 81 rules (past minEditLines)
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	edited := 0
	for i, step := range []struct {
		add, remove []int
	}{
		{add: []int{100}},
		{remove: []int{3}},
		{add: []int{101, 102, 5}, remove: []int{7, 20, 79}},
		{remove: []int{100, 101}},
		{add: []int{3, 7}},
	} {
		changed := map[types.NamespacedName]struct{}{}
		for _, n := range step.add {
			name := portName("ns1", fmt.Sprintf("svc%03d", n), "p80", v1.ProtocolTCP)
			w.add(svc(name, fmt.Sprintf("100.100.3.%d", n+1), nodePort(int32(31000+n))), readyEP(fmt.Sprintf("100.64.3.%d", n+1), 8080))
			changed[name.NamespacedName] = struct{}{}
		}
		for _, n := range step.remove {
			name := portName("ns1", fmt.Sprintf("svc%03d", n), "p80", v1.ProtocolTCP)
			delete(w.services, name)
			delete(w.endpoints, name)
			changed[name.NamespacedName] = struct{}{}
		}
		kernel.payloads = nil
		snap := w.snapshot()
		snap.Changed = changed
		if err := p.Apply(ctx, snap, testNode, false); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		for _, pl := range kernel.payloads {
			if positionalEdit.MatchString(pl) {
				edited++
			}
		}
		// The restores moved the generation by their own commits only: the idle sync after
		// them trusts the kernel without reading it.
		before := p.Stats()
		if err := p.Apply(ctx, w.snapshot(), testNode, false); err != nil {
			t.Fatal(err)
		}
		if st := p.Stats(); st.Quiet != before.Quiet+1 || st.Verifications != before.Verifications {
			t.Errorf("step %d: the idle sync after the proxier's own restores: stats %+v, before %+v; want one more quiet sync", i, st, before)
		}
		fresh := newNetNS(t)
		if err := NewProxier(fresh, cfg).Apply(ctx, w.snapshot(), testNode, true); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(sortedServices(tables(t, fresh)), sortedServices(tables(t, runner))); diff != "" {
			t.Errorf("step %d: tables differ from a fresh full sync's (-fresh +edited):\n%s", i, diff)
		}
		// A restarted proxier reads the rules back as it wrote them: nothing to write.
		again := &teeRestores{Interface: runner}
		if err := NewProxier(again, gcfg).Apply(ctx, w.snapshot(), testNode, true); err != nil || len(again.payloads) > 0 {
			t.Errorf("step %d: a restarted proxier's full sync: %v, wrote:\n%s", i, err, strings.Join(again.payloads, "----\n"))
		}
	}
	if edited == 0 {
		t.Error("no partial sync edited a chain in place")
	}
}

// teeRestores records the payloads of the restores it passes on.
type teeRestores struct {
	iptables.Interface
	payloads []string
}

func (t *teeRestores) Restore(ctx context.Context, data []byte) error {
	t.payloads = append(t.payloads, string(data))
	return t.Interface.Restore(ctx, data)
}

// useLegacy makes iptables-legacy the iptables of every command the test runs (a directory of
// symlinks to xtables-legacy-multi first in PATH, as kpbench -backends legacy does).
func useLegacy(t *testing.T) {
	t.Helper()
	bin, err := exec.LookPath("xtables-legacy-multi")
	if err != nil {
		t.Skip("no xtables-legacy-multi here")
	}
	dir := t.TempDir()
	for _, tool := range []string{"iptables", "iptables-save", "iptables-restore"} {
		if err := os.Symlink(bin, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	if out, err := exec.Command("iptables", "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), "legacy") {
		t.Fatalf("iptables --version with the legacy PATH: %q, %v", out, err)
	}
}

// TestSharedChainEditsLegacyKernel: iptables-legacy has no nf_tables generation, so partial
// syncs write long shared chains whole; a sync that read the tables (here the idle check
// after a hand edit) edits them by position, which iptables-legacy-restore applies as
// iptables-nft does. After each step the tables are what a fresh full sync writes.
func TestSharedChainEditsLegacyKernel(t *testing.T) {
	useLegacy(t)
	ctx := context.Background()
	cfg := Config{ClusterCIDR: clusterCIDR}
	runner := iptables.New(iptables.Options{NetNSPath: newNetNSPath(t)})
	if _, ok, _ := runner.Generation(); ok {
		t.Fatal("a generation with iptables-legacy")
	}
	kernel := &teeRestores{Interface: runner}
	gcfg := cfg
	gcfg.Generation = runner.Generation
	p := NewProxier(kernel, gcfg)
	w := manyServices(80)
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	matchesFresh := func(step string) {
		t.Helper()
		fresh := newNetNS(t)
		if err := NewProxier(fresh, cfg).Apply(ctx, w.snapshot(), testNode, true); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(sortedServices(tables(t, fresh)), sortedServices(tables(t, runner))); diff != "" {
			t.Errorf("%s: tables differ from a fresh full sync's (-fresh +kproxy):\n%s", step, diff)
		}
	}

	name := portName("ns1", "svc-new", "p80", v1.ProtocolTCP)
	w.add(svc(name, "100.100.2.1"), readyEP("100.64.3.1", 8080))
	kernel.payloads = nil
	if err := p.Apply(ctx, changedOne(w, name), testNode, false); err != nil {
		t.Fatal(err)
	}
	if all := strings.Join(kernel.payloads, ""); positionalEdit.MatchString(all) || !strings.Contains(all, ":KUBE-SERVICES ") {
		t.Errorf("partial sync without a generation: want KUBE-SERVICES written whole, no positional edits:\n%s", all)
	}
	matchesFresh("service added")

	if err := runner.Restore(ctx, []byte("*nat\n-D KUBE-SERVICES 7\n-D KUBE-SERVICES 3\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	kernel.payloads = nil
	if err := p.Apply(ctx, w.snapshot(), testNode, false); err != nil { // the idle check
		t.Fatal(err)
	}
	if all := strings.Join(kernel.payloads, ""); !positionalEdit.MatchString(all) || strings.Contains(all, ":KUBE-SERVICES ") {
		t.Errorf("repair after reading the tables: want positional edits only:\n%s", all)
	}
	matchesFresh("two rules deleted by hand, repaired")
}
