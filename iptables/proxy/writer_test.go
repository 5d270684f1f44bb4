package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// recording records every restore payload and counts saves.
type recording struct {
	*iptables.Fake
	payloads []string
	saves    int
	// before, when set, runs before the next restore (another writer getting in first).
	before func()
}

func (r *recording) Restore(ctx context.Context, data []byte) error {
	r.payloads = append(r.payloads, string(data))
	if f := r.before; f != nil {
		r.before = nil
		f()
	}
	return r.Fake.Restore(ctx, data)
}

func (r *recording) Save(ctx context.Context, table iptables.Table) ([]byte, error) {
	r.saves++
	return r.Fake.Save(ctx, table)
}

// manyServices is n NodePort services with ETP Local (so KUBE-EXT, KUBE-SVC, KUBE-SVL and
// KUBE-SEP chains), one local and one remote endpoint each.
func manyServices(n int) *world {
	w := newWorld()
	for i := range n {
		name := portName("ns1", fmt.Sprintf("svc%03d", i), "p80", v1.ProtocolTCP)
		w.add(svc(name, fmt.Sprintf("100.100.1.%d", i+1), nodePort(int32(30000+i)), etpLocal(int32(32000+i))),
			readyEP(fmt.Sprintf("100.64.1.%d", i+1), 8080), remoteEP(fmt.Sprintf("100.64.2.%d", i+1), 8080))
	}
	return w
}

func declaredChains(payload string) (svcChains, shared int) {
	for _, line := range strings.Split(payload, "\n") {
		switch {
		case !strings.HasPrefix(line, ":"):
		case isServiceChain(iptables.Chain(strings.Fields(line[1:])[0])):
			svcChains++
		default:
			shared++
		}
	}
	return svcChains, shared
}

// A large change is written in batches of whole services, then the shared chains, then the
// deletions, every restore accepted by the Fake (which rejects jumps to missing chains and
// deletions of referenced chains); the result is the same as one big restore.
func TestBatchedWrites(t *testing.T) {
	rec := &recording{Fake: iptables.NewFake(iptables.IPv4)}
	p := NewProxier(rec, Config{ClusterCIDR: clusterCIDR, BatchServices: 2})
	ctx := context.Background()
	if err := p.Apply(ctx, manyServices(5).changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	// 5 services of 5 chains each (EXT, SVC, SVL, 2 SEP), 2 per restore, then the shared ones.
	if len(rec.payloads) != 4 {
		t.Fatalf("%d restores, want 4 (2+2+1 services, then the shared chains)", len(rec.payloads))
	}
	for i, want := range []int{10, 10, 5, 0} {
		if got, _ := declaredChains(rec.payloads[i]); got != want {
			t.Errorf("restore %d declares %d per-service chains, want %d", i+1, got, want)
		}
	}
	if !strings.Contains(rec.payloads[0], ":KUBE-MARK-MASQ") || !strings.Contains(rec.payloads[3], ":KUBE-SERVICES") {
		t.Errorf("KUBE-MARK-MASQ must come with the first batch and KUBE-SERVICES last:\n%s", strings.Join(rec.payloads, "----\n"))
	}
	oneShot := iptables.NewFake(iptables.IPv4)
	if err := NewProxier(oneShot, Config{ClusterCIDR: clusterCIDR, BatchServices: 1000}).Apply(ctx, manyServices(5).changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(oneShot.Dump(), rec.Dump()); diff != "" {
		t.Errorf("batched and single restore differ (-single +batched):\n%s", diff)
	}

	// Deleting every service: KUBE-SERVICES first, then the 25 stale chains 10 per restore.
	rec.payloads = nil
	if err := p.Apply(ctx, newWorld().changedSnapshot(), testNode, false); err != nil {
		t.Fatal(err)
	}
	if len(rec.payloads) != 4 {
		t.Fatalf("%d restores for the deletion, want 4:\n%s", len(rec.payloads), strings.Join(rec.payloads, "----\n"))
	}
	for _, c := range userChains(t, rec.Fake, "KUBE-") {
		if isServiceChain(c) {
			t.Errorf("stale chain %s left", c)
		}
	}
}

// Into a table that already holds many chains, a restore writes more services than
// Config.BatchServices (one more per natChainsPerBatchService chains known): a commit into a
// large table costs the kernel's check of all of it, so fewer restores are cheaper. A cold
// start, into empty tables, keeps the configured batch.
func TestBatchGrowsWithTheTable(t *testing.T) {
	rec := &recording{Fake: iptables.NewFake(iptables.IPv4)}
	p := NewProxier(rec, Config{ClusterCIDR: clusterCIDR, BatchServices: 2, Generation: rec.Generation})
	ctx := context.Background()
	all := manyServices(140)
	w := newWorld()
	var names []endpoints.ServicePortName
	for name := range all.services {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b endpoints.ServicePortName) int { return strings.Compare(a.String(), b.String()) })
	for _, name := range names[:130] {
		w.add(all.services[name], all.endpoints[name]...)
	}
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	if len(rec.payloads) != 66 {
		t.Errorf("cold start of 130 services: %d restores, want 66 (65 of 2 services, the shared chains)", len(rec.payloads))
	}
	known := len(p.known[iptables.TableNAT])
	batch := p.cfg.batchFor(known)
	if batch != known/natChainsPerBatchService || batch < 10 {
		t.Fatalf("batchFor(%d nat chains) = %d, want %d", known, batch, known/natChainsPerBatchService)
	}
	rec.payloads = nil
	for _, name := range names[130:] {
		w.add(all.services[name], all.endpoints[name]...)
	}
	snap := w.snapshot()
	snap.Changed = map[types.NamespacedName]struct{}{}
	for _, name := range names[130:] {
		snap.Changed[name.NamespacedName] = struct{}{}
	}
	if err := p.Apply(ctx, snap, testNode, false); err != nil {
		t.Fatal(err)
	}
	if len(rec.payloads) != 1 {
		t.Fatalf("10 services added to a table of %d nat chains: %d restores, want 1:\n%s", known, len(rec.payloads), strings.Join(rec.payloads, "----\n"))
	}
	if got, _ := declaredChains(rec.payloads[0]); got != 50 || !strings.Contains(rec.payloads[0], "KUBE-SERVICES") {
		t.Errorf("the restore declares %d per-service chains, want 50, and edits KUBE-SERVICES:\n%s", got, rec.payloads[0])
	}
	oneShot := iptables.NewFake(iptables.IPv4)
	if err := NewProxier(oneShot, Config{ClusterCIDR: clusterCIDR}).Apply(ctx, all.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sortedServices(oneShot.Dump()), sortedServices(rec.Dump())); diff != "" {
		t.Errorf("grown and written at once differ (-once +grown):\n%s", diff)
	}
	if head := regexp.MustCompile(`(?m)^-I KUBE-SERVICES [0-9]+ `).FindAllString(strings.Split(rec.payloads[0], "*filter")[0], -1); len(head) != 10 || slices.ContainsFunc(head, func(l string) bool { return l != "-I KUBE-SERVICES 1 " }) {
		t.Errorf("the 10 new services' KUBE-SERVICES rules are inserted as %q, want 10 at position 1", head)
	}
}

// sortedServices returns an iptables-save dump with the service rules of nat KUBE-SERVICES
// and KUBE-NODEPORTS sorted in place: the order of those rules is the kernel's history
// (arrangeServices), not part of what the chain does. The jumps to KUBE-NODEPORTS are not
// moved: they must stay last.
func sortedServices(dump string) string {
	lines := strings.Split(dump, "\n")
	for _, chain := range orderFreeChains {
		var at []int
		var services []string
		nat := false
		for i, l := range lines {
			if strings.HasPrefix(l, "*") {
				nat = l == "*nat"
			}
			if nat && strings.HasPrefix(l, "-A "+string(chain)+" ") && !strings.Contains(l, commentNodePorts) {
				at = append(at, i)
				services = append(services, l)
			}
		}
		slices.Sort(services)
		for k, i := range at {
			lines[i] = services[k]
		}
	}
	return strings.Join(lines, "\n")
}

// A partial sync (services changed) trusts memory and does not run iptables-save; a sync with
// nothing changed reads the tables and puts back what was deleted by hand.
func TestIdleSyncRepairsHandEdits(t *testing.T) {
	rec := &recording{Fake: iptables.NewFake(iptables.IPv4)}
	p := NewProxier(rec, Config{ClusterCIDR: clusterCIDR})
	ctx := context.Background()
	w := manyServices(3)
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	want := rec.Dump()
	saves := rec.saves
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, false); err != nil {
		t.Fatal(err)
	}
	if rec.saves != saves {
		t.Errorf("a partial sync ran iptables-save %d times", rec.saves-saves)
	}

	sep := endpointChainName(portName("ns1", "svc001", "p80", v1.ProtocolTCP), "tcp", readyEP("100.64.1.2", 8080))
	edits := fmt.Sprintf("*nat\n-D %s 2\n-D KUBE-SERVICES 1\n-D PREROUTING 1\nCOMMIT\n*filter\n-F KUBE-FORWARD\nCOMMIT\n", sep)
	if err := rec.Fake.Restore(ctx, []byte(edits)); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx, w.snapshot(), testNode, false); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, rec.Dump()); diff != "" {
		t.Errorf("after the idle sync (-before the edits +now):\n%s", diff)
	}
	if st := p.Stats(); st.Verifications != 1 || st.Repairs != 1 {
		t.Errorf("stats %+v, want one verification that repaired", st)
	}
	restores := len(rec.payloads)
	if err := p.Apply(ctx, w.snapshot(), testNode, false); err != nil {
		t.Fatal(err)
	}
	if len(rec.payloads) != restores {
		t.Errorf("an idle sync with nothing to repair wrote:\n%s", rec.payloads[len(rec.payloads)-1])
	}
}

// With the nf_tables generation, an idle sync reads the tables only when someone else changed
// the kernel since the last read found them as desired or since the proxier's own restores:
// after a change by hand (and repairs it), also when the proxier wrote after that change;
// otherwise it reads nothing and writes nothing, but still writes what changed on its side
// (the service CIDRs).
func TestIdleSyncReadsOnlyWhenTheGenerationMoved(t *testing.T) {
	rec := &recording{Fake: iptables.NewFake(iptables.IPv4)}
	p := NewProxier(rec, Config{ClusterCIDR: clusterCIDR, Generation: rec.Generation})
	ctx := context.Background()
	w := manyServices(3)
	idle := func(step string, wantSaves, wantRestores int) {
		t.Helper()
		saves, restores := rec.saves, len(rec.payloads)
		if err := p.Apply(ctx, w.snapshot(), testNode, false); err != nil {
			t.Fatal(err)
		}
		if got := rec.saves - saves; (got > 0) != (wantSaves > 0) {
			t.Errorf("%s: %d table reads, want %d", step, got, wantSaves)
		}
		if got := len(rec.payloads) - restores; got != wantRestores {
			t.Errorf("%s: %d restores, want %d", step, got, wantRestores)
		}
	}
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	want := rec.Dump()
	idle("first idle sync after the full sync's write", 0, 0)
	idle("second idle sync", 0, 0)

	sep := endpointChainName(portName("ns1", "svc001", "p80", v1.ProtocolTCP), "tcp", readyEP("100.64.1.2", 8080))
	edits := fmt.Sprintf("*nat\n-D %s 2\n-D KUBE-SERVICES 1\nCOMMIT\n", sep)
	if err := rec.Fake.Restore(ctx, []byte(edits)); err != nil {
		t.Fatal(err)
	}
	idle("idle sync after a change by hand", 1, 1)
	if diff := cmp.Diff(want, rec.Dump()); diff != "" {
		t.Errorf("after the repair (-before the edits +now):\n%s", diff)
	}
	idle("idle sync after the repair", 0, 0)

	// partial gives a service port new endpoints through a partial sync.
	partial := func(name endpoints.ServicePortName, eps []endpoints.Endpoint) {
		t.Helper()
		w.endpoints[name] = eps
		if err := p.Apply(ctx, changedOne(w, name), testNode, false); err != nil {
			t.Fatal(err)
		}
	}
	// The proxier's own partial write, from a kernel it knows exactly, leaves it known.
	name := portName("ns1", "svc001", "p80", v1.ProtocolTCP)
	all := w.endpoints[name]
	partial(name, all[:1])
	idle("idle sync after a partial sync", 0, 0)
	partial(name, all)
	// A change by hand, then a partial write that moves the generation again: the idle sync
	// must still read, and repair.
	if err := rec.Fake.Restore(ctx, []byte("*nat\n-D KUBE-SERVICES 1\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	other := portName("ns1", "svc002", "p80", v1.ProtocolTCP)
	otherAll := w.endpoints[other]
	partial(other, otherAll[:1])
	idle("idle sync after a change by hand and a partial sync", 1, 1)
	idle("idle sync after that", 0, 0)
	// A change by hand between the proxier's check of the generation and its restore: the
	// restore moves the generation by one commit too many, so the idle sync must read.
	rec.before = func() {
		if err := rec.Fake.Restore(ctx, []byte("*nat\n-D KUBE-SERVICES 1\nCOMMIT\n")); err != nil {
			t.Fatal(err)
		}
	}
	partial(other, otherAll)
	idle("idle sync after a change by hand during a partial sync's restore", 1, 1)

	// Someone else's change stops the idle syncs from trusting the kernel, not the partial
	// syncs after the next write from editing shared chains in place.
	defer func(n int) { minEditLines = n }(minEditLines)
	minEditLines = 1
	for _, foreign := range []string{"*filter\n:KPTEST-FOREIGN - [0:0]\nCOMMIT\n", "*filter\n-X KPTEST-FOREIGN\nCOMMIT\n"} {
		if err := rec.Fake.Restore(ctx, []byte(foreign)); err != nil {
			t.Fatal(err)
		}
	}
	partial(other, otherAll[:1])
	gone := portName("ns1", "svc000", "p80", v1.ProtocolTCP)
	delete(w.services, gone)
	delete(w.endpoints, gone)
	rec.payloads = nil
	if err := p.Apply(ctx, changedOne(w, gone), testNode, false); err != nil {
		t.Fatal(err)
	}
	if len(rec.payloads) != 1 || !positionalEdit.MatchString(rec.payloads[0]) {
		t.Errorf("the partial sync after someone else's change and the proxier's next write did not edit KUBE-SERVICES in place:\n%s", strings.Join(rec.payloads, "----\n"))
	}
	idle("idle sync after someone else's change and two partial syncs", 1, 0)

	p.SetServiceCIDRs([]netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")})
	idle("idle sync with new service CIDRs", 0, 1)
	fresh := iptables.NewFake(iptables.IPv4)
	if err := NewProxier(fresh, Config{ClusterCIDR: clusterCIDR, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}}).Apply(ctx, w.snapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fresh.Dump(), rec.Dump()); diff != "" {
		t.Errorf("after the service CIDRs (-fresh +quiet sync):\n%s", diff)
	}
	if st := p.Stats(); st.Quiet != 6 || st.Verifications != 4 || st.Repairs != 3 {
		t.Errorf("stats %+v, want 6 quiet syncs, 4 verifications, 3 repairs", st)
	}
}

func TestRestoreFailureCounters(t *testing.T) {
	ipt := &failingRestore{Fake: iptables.NewFake(iptables.IPv4)}
	p := NewProxier(ipt, Config{ClusterCIDR: clusterCIDR})
	ctx := context.Background()
	if err := p.Apply(ctx, oneService().changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	ipt.fail = true
	if err := p.Apply(ctx, threeEndpoints().changedSnapshot(), testNode, false); err == nil {
		t.Fatal("no error from a failing restore")
	}
	if st := p.Stats(); st.RestoreFailures != 1 || st.PartialRestoreFailures != 1 || st.Restores != 2 {
		t.Errorf("stats %+v, want 2 restores, 1 failure, 1 partial failure", st)
	}
}

// Past 1,000 endpoints the per-endpoint rules lose their comments (upstream's large-cluster
// mode); the service-level ones keep them.
func TestLargeClusterMode(t *testing.T) {
	for _, n := range []int{1000, 1001} {
		var eps []endpoints.Endpoint
		for i := range n {
			eps = append(eps, readyEP(netip.AddrFrom4([4]byte{100, 64, byte(1 + i/250), byte(1 + i%250)}).String(), 8080))
		}
		rules := Render(Input{Services: endpoints.ServiceMap{svc1Port: servicePort(svc1Port, "100.100.0.10", 80)},
			Endpoints: endpoints.EndpointsMap{svc1Port: eps}, Node: testNode, Config: Config{ClusterCIDR: clusterCIDR}})
		text := string(rules.Transaction().Bytes())
		commented := strings.Contains(text, "-> 100.64.1.1:8080") || strings.Contains(text, "-A KUBE-SEP-22IBD7GYUWNMATTN -m comment")
		if large := n > 1000; rules.LargeCluster != large || commented == large {
			t.Errorf("%d endpoints: LargeCluster=%v, per-endpoint comments=%v", n, rules.LargeCluster, commented)
		}
		if !strings.Contains(text, `"ns1/svc1:p80 cluster IP"`) {
			t.Errorf("%d endpoints: the cluster IP comment is gone", n)
		}
	}
}

// HasState: tables where no proxy ran have no state; after a sync they have, and HasState
// writes nothing.
func TestHasState(t *testing.T) {
	rec := &recording{Fake: iptables.NewFake(iptables.IPv4)}
	ctx := context.Background()
	if NewProxier(rec, Config{ClusterCIDR: clusterCIDR}).HasState(ctx) {
		t.Fatal("fresh tables: HasState true")
	}
	if err := NewProxier(rec, Config{ClusterCIDR: clusterCIDR}).Apply(ctx, manyServices(2).changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	gen, _, _ := rec.Generation()
	if !NewProxier(rec, Config{ClusterCIDR: clusterCIDR}).HasState(ctx) {
		t.Error("after a sync: a new proxier's HasState false")
	}
	if g, _, _ := rec.Generation(); g != gen {
		t.Error("HasState wrote to the tables")
	}
}

// applyEdits runs lineEdits' result on have the way iptables-restore does: deletions by
// position from the highest down, then insertions by position from the lowest up.
func applyEdits(have, want []string, del, ins []int) []string {
	out := slices.Clone(have)
	for _, i := range slices.Backward(del) {
		out = slices.Delete(out, i, i+1)
	}
	for _, j := range ins {
		out = slices.Insert(out, j, want[j])
	}
	return out
}

func TestLineEdits(t *testing.T) {
	defer func(n int) { minEditLines = n }(minEditLines)
	minEditLines = 4
	lines := func(s string) []string { return strings.Split(s, " ") }
	for _, tc := range []struct {
		name, have, want string
		ok               bool
	}{
		{"insert in the middle", "a b c d e f", "a b c x d e f", true},
		{"insert first and last", "a b c d e f", "x a b c d e f y", true},
		{"delete and insert apart", "a b c d e f g h", "a c d e x f g h", true},
		{"replace one line", "a b c d e f", "a b X d e f", true},
		{"from empty", "", "a b c d", false},
		{"too many edits", "a b c d e f", "a x y z w f", false},
		{"reordered", "a b c d e f g h", "a b d c e f g h", false},
		{"duplicated line", "a b c d e f", "a b b c d e f", true},
		{"duplicate dropped", "a b b c d e f", "a b c d e f", true},
		{"want too short", "a b c d", "a b c", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			have, want := lines(tc.have), lines(tc.want)
			if tc.have == "" {
				have = nil
			}
			del, ins, ok := lineEdits(have, want)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (del %v, ins %v)", ok, tc.ok, del, ins)
			}
			if ok {
				if got := applyEdits(have, want, del, ins); !slices.Equal(got, want) {
					t.Fatalf("edits del %v ins %v give %q, want %q", del, ins, got, want)
				}
			}
		})
	}
}

// Random changes to a sorted list of unique lines, as a shared chain sees them: whenever
// lineEdits accepts, its edits give exactly want, and it accepts every small change.
func TestLineEditsRandom(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 2000 {
		var have []string
		for i := range 64 + rnd.IntN(200) {
			if rnd.IntN(4) > 0 {
				have = append(have, fmt.Sprintf("rule %04d", i*2))
			}
		}
		want := slices.Clone(have)
		changes := 1 + rnd.IntN(12)
		if round%10 == 0 {
			changes = rnd.IntN(len(want))
		}
		for range changes {
			if len(want) > 0 && rnd.IntN(2) == 0 {
				i := rnd.IntN(len(want))
				want = slices.Delete(want, i, i+1)
				continue
			}
			line := fmt.Sprintf("rule %04d", rnd.IntN(600)|1) // odd: never in have
			i, found := slices.BinarySearch(want, line)
			if !found {
				want = slices.Insert(want, i, line)
			}
		}
		del, ins, ok := lineEdits(have, want)
		if !ok {
			if len(want) >= minEditLines && changes <= 12 && 2*changes <= len(want) {
				t.Fatalf("round %d: %d changes to %d lines refused", round, changes, len(want))
			}
			continue
		}
		if got := applyEdits(have, want, del, ins); !slices.Equal(got, want) {
			t.Fatalf("round %d: edits give\n%q\nwant\n%q", round, got, want)
		}
	}
}

// A partial sync edits a long shared chain in place only while the nf_tables generation shows
// that nothing else changed the tables since the proxier last wrote or read them; after a
// hand edit it writes the chain whole (and the verification repairs the edit).
func TestSharedChainEditsNeedAnUnmovedGeneration(t *testing.T) {
	rec := &recording{Fake: iptables.NewFake(iptables.IPv4)}
	p := NewProxier(rec, Config{ClusterCIDR: clusterCIDR, Generation: rec.Generation})
	ctx := context.Background()
	w := manyServices(80) // nat KUBE-SERVICES: 80 ClusterIP rules, 80 external ones, the NodePort jump
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	name := portName("ns1", "svc-new", "p80", v1.ProtocolTCP)
	change := func(step string, add bool, wantEdit bool) {
		t.Helper()
		if add {
			w.add(svc(name, "100.100.2.1"), readyEP("100.64.3.1", 8080))
		} else {
			delete(w.services, name)
			delete(w.endpoints, name)
		}
		rec.payloads = nil
		if err := p.Apply(ctx, changedOne(w, name), testNode, false); err != nil {
			t.Fatal(err)
		}
		all := strings.Join(rec.payloads, "")
		if got := positionalEdit.MatchString(all); got != wantEdit {
			t.Errorf("%s: positional edits %v, want %v:\n%s", step, got, wantEdit, all)
		}
		if got := strings.Contains(all, ":KUBE-SERVICES "); got == wantEdit {
			t.Errorf("%s: KUBE-SERVICES written whole %v, want %v", step, got, !wantEdit)
		}
		fresh := iptables.NewFake(iptables.IPv4)
		if err := NewProxier(fresh, Config{ClusterCIDR: clusterCIDR}).Apply(ctx, w.snapshot(), testNode, true); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(fresh.Dump(), rec.Dump()); diff != "" {
			t.Errorf("%s: tables differ from a fresh full sync's (-fresh +edited):\n%s", step, diff)
		}
	}
	change("service added after the full sync", true, true)
	change("service removed", false, true)
	if err := rec.Fake.Restore(ctx, []byte("*nat\n-D KUBE-SERVICES 1\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	change("service added after a hand edit", true, false)
	if err := p.Apply(ctx, w.snapshot(), testNode, false); err != nil { // the verification
		t.Fatal(err)
	}
	change("service removed after the verification", false, true)
}

func TestArrangeServices(t *testing.T) {
	np := `-m comment --comment "` + commentNodePorts + `" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`
	for _, tc := range []struct {
		name            string
		have, want, out []string
		reordered       bool
	}{
		{name: "same order", have: []string{"a", "b", np}, want: []string{"a", "b", np}, out: []string{"a", "b", np}},
		{name: "new rules go to the head, in name order", have: []string{"b", "d", np}, want: []string{"a", "b", "c", "d", np},
			out: []string{"a", "c", "b", "d", np}, reordered: true},
		{name: "the kernel's order is kept", have: []string{"c", "a", "b", np}, want: []string{"a", "b", "c", np},
			out: []string{"c", "a", "b", np}, reordered: true},
		{name: "gone and foreign rules are left out", have: []string{"x", "c", "a", "b", np}, want: []string{"a", "c", "d", np},
			out: []string{"d", "c", "a", np}, reordered: true},
		{name: "a rule held twice is kept once", have: []string{"c", "a", "c", np}, want: []string{"a", "c", np},
			out: []string{"c", "a", np}, reordered: true},
		{name: "no jump at the end: name order", have: []string{"b", np, "a"}, want: []string{"a", "b", np}, out: []string{"a", "b", np}},
		{name: "an empty chain: name order", want: []string{"b", "a", np}, out: []string{"b", "a", np}},
		{name: "a line wanted twice: name order", have: []string{"b", "a", np}, want: []string{"a", "a", "b", np}, out: []string{"a", "a", "b", np}},
		{name: "no node ports jump", have: []string{"b", "a"}, want: []string{"a", "b", "c"}, out: []string{"c", "b", "a"}, reordered: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// have's lines are copies, as iptables-save's are: the result must hold want's
			// strings, never have's (they would keep the whole output alive).
			have := make([]string, len(tc.have))
			for i, l := range tc.have {
				have[i] = strings.Clone(l)
			}
			out, reordered := arrangeServices(have, tc.want)
			if diff := cmp.Diff(tc.out, out); diff != "" || reordered != tc.reordered {
				t.Errorf("reordered %v, want %v; lines (-want +got):\n%s", reordered, tc.reordered, diff)
			}
			for _, l := range out {
				if !slices.ContainsFunc(tc.want, func(w string) bool { return unsafe.StringData(w) == unsafe.StringData(l) }) {
					t.Errorf("line %q is not one of want's strings", l)
				}
			}
		})
	}
}
