package ipvs

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/internal/apifuzz"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
)

// FuzzPlanApply runs arbitrary Service and EndpointSlice objects (internal/apifuzz: the seed
// corpus of real and malformed objects, or byte programs) through the endpoints tracker and
// the IPVS plan, for each IP family, under a scheduler and options chosen by knobs, and
// checks, besides not panicking: the plan is deterministic, its virtual servers are sorted
// and unique with sorted, unique real servers of the family; a sync over the fakes (which
// return the kernel's errors: ipset entries that do not fit their set, virtual servers that
// exist) succeeds; a second sync with nothing changed writes nothing; a sync of an empty
// state leaves no virtual server; and a partial sync from the state after the first half of
// the events to the state after all of them (Changed as the tracker reports it, no kernel
// check) leaves the kernel as a full sync of the final state from scratch does.
//
// Run it with: go test ./ipvs -run '^$' -fuzz FuzzPlanApply -fuzztime 60s -fuzzminimizetime 50x
func FuzzPlanApply(f *testing.F) {
	seeds, err := apifuzz.Seeds()
	if err != nil {
		f.Fatal(err)
	}
	for i, s := range seeds {
		f.Add(uint8(i*41), s.Data)
	}
	f.Fuzz(func(t *testing.T, knobs uint8, data []byte) {
		ops := apifuzz.Decode(data)
		for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
			checkPlanApply(t, fam, knobs, ops)
			checkPartialSync(t, fam, knobs, ops)
		}
	})
}

func fuzzIPVSConfig(fam iptables.Family, knobs uint8) Config {
	cfg := Config{Family: fam, Scheduler: Schedulers[int(knobs)%len(Schedulers)], MasqueradeAll: knobs&16 != 0}
	if fam == iptables.IPv4 {
		cfg.ClusterCIDR = netip.MustParsePrefix("100.64.0.0/16")
		cfg.NodeIP = netip.MustParseAddr("192.0.2.11")
		if knobs&32 != 0 {
			cfg.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}
		}
	} else {
		cfg.ClusterCIDR = netip.MustParsePrefix("2001:db8:1::/48")
		cfg.NodeIP = netip.MustParseAddr("2001:db8:3::11")
	}
	cfg.NodeIPs = []netip.Addr{cfg.NodeIP}
	if knobs&64 != 0 {
		cfg.LocalDetector = LocalDetector{BridgeInterface: "cni0"}
	}
	return cfg
}

func checkPlanApply(t *testing.T, fam iptables.Family, knobs uint8, ops []apifuzz.Op) {
	t.Helper()
	ipFamily := v1.IPv4Protocol
	if fam == iptables.IPv6 {
		ipFamily = v1.IPv6Protocol
	}
	tracker := endpoints.NewTracker(endpoints.TrackerOptions{IPFamily: ipFamily})
	svcs, sls := apifuzz.Live(ops)
	for _, s := range svcs {
		tracker.OnServiceAdd(s)
	}
	for _, s := range sls {
		tracker.OnEndpointSliceAdd(s)
	}
	snap := tracker.Checkout()
	node := endpoints.NodeInfo{Name: "node-a", Zone: "zone-a"}
	cfg := fuzzIPVSConfig(fam, knobs)
	in := PlanInput{Services: snap.Services, Endpoints: snap.Endpoints, Node: node, Config: cfg}
	plan := ComputePlan(in)
	if again := ComputePlan(in); !reflect.DeepEqual(plan, again) {
		t.Fatalf("%s: ComputePlan is not deterministic", fam)
	}
	for i, vs := range plan.VirtualServers {
		if i > 0 && compareVSKey(plan.VirtualServers[i-1].VSKey, vs.VSKey) >= 0 {
			t.Errorf("%s: virtual servers not sorted or duplicated: %s then %s", fam, plan.VirtualServers[i-1].VSKey, vs.VSKey)
		}
		if vs.IP.Is4() != (fam == iptables.IPv4) {
			t.Errorf("%s: virtual server %s of the other family", fam, vs.VSKey)
		}
		for j, rs := range vs.RealServers {
			if rs.Addr().Is4() != (fam == iptables.IPv4) || j > 0 && rs.Compare(vs.RealServers[j-1]) <= 0 {
				t.Errorf("%s: %s: real servers %v not of the family, sorted and unique", fam, vs.VSKey, vs.RealServers)
				break
			}
		}
	}

	ctx := context.Background()
	fipvs, links, sets := NewFakeIPVS(), NewFakeLinks(), ipset.NewFake()
	p, err := NewProxier(Writers{IPVS: fipvs, Links: links, IPSet: sets, IPTables: newFakeIPT()}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx, snap, node, true); err != nil {
		t.Fatalf("%s (knobs %08b): first sync of %d service ports: %v", fam, knobs, len(snap.Services), err)
	}
	idle := endpoints.Snapshot{Services: snap.Services, Endpoints: snap.Endpoints, Changed: map[types.NamespacedName]struct{}{}}
	for name := range snap.Services {
		idle.Changed[name.NamespacedName] = struct{}{}
	}
	if err := p.Apply(ctx, idle, node, false); err != nil {
		t.Fatalf("%s: second sync: %v", fam, err)
	}
	w := p.LastSync().Writes()
	if fam == iptables.IPv6 {
		// fakeIPT canonicalises rules as IPv4 ones, so an IPv6 chain never compares equal
		// there: only the IPVS, address and set writes count.
		w -= p.LastSync().ChainsWritten
	}
	if w != 0 {
		t.Errorf("%s (knobs %08b): a sync with nothing changed wrote %d objects: %+v", fam, knobs, w, p.LastSync())
	}
	if err := p.Apply(ctx, endpoints.Snapshot{Changed: idle.Changed}, node, true); err != nil {
		t.Fatalf("%s: sync of an empty state: %v", fam, err)
	}
	left, err := fipvs.ListVirtualServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if left = slices.DeleteFunc(left, func(vs VirtualServer) bool { return vs.IP.Is4() != (fam == iptables.IPv4) }); len(left) > 0 {
		t.Errorf("%s: %d virtual servers left after a sync of an empty state, e.g. %s", fam, len(left), left[0])
	}
}

// checkPartialSync: a full sync of the state after the first half of ops, then a partial
// sync (no kernel check) to the state after all of them, must leave the fakes as a full
// sync of the final state on empty fakes does.
func checkPartialSync(t *testing.T, fam iptables.Family, knobs uint8, ops []apifuzz.Op) {
	t.Helper()
	ipFamily := v1.IPv4Protocol
	if fam == iptables.IPv6 {
		ipFamily = v1.IPv6Protocol
	}
	node := endpoints.NodeInfo{Name: "node-a", Zone: "zone-a"}
	cfg := fuzzIPVSConfig(fam, knobs)
	ctx := context.Background()
	svcs1, sls1 := apifuzz.Live(ops[:len(ops)/2])
	svcs2, sls2 := apifuzz.Live(ops)

	tracker := endpoints.NewTracker(endpoints.TrackerOptions{IPFamily: ipFamily})
	for _, s := range svcs1 {
		tracker.OnServiceAdd(s)
	}
	for _, s := range sls1 {
		tracker.OnEndpointSliceAdd(s)
	}
	inc := newFuzzEnv(t, cfg)
	if err := inc.p.Apply(ctx, tracker.Checkout(), node, true); err != nil {
		t.Fatalf("%s (knobs %08b): full sync of the first half: %v", fam, knobs, err)
	}
	replay(svcs1, svcs2, tracker.OnServiceUpdate, tracker.OnServiceDelete)
	replay(sls1, sls2, tracker.OnEndpointSliceUpdate, tracker.OnEndpointSliceDelete)
	if err := inc.p.Apply(ctx, tracker.Checkout(), node, false); err != nil {
		t.Fatalf("%s (knobs %08b): partial sync to the final state: %v", fam, knobs, err)
	}

	final := endpoints.NewTracker(endpoints.TrackerOptions{IPFamily: ipFamily})
	for _, s := range svcs2 {
		final.OnServiceAdd(s)
	}
	for _, s := range sls2 {
		final.OnEndpointSliceAdd(s)
	}
	fresh := newFuzzEnv(t, cfg)
	if err := fresh.p.Apply(ctx, final.Checkout(), node, true); err != nil {
		t.Fatalf("%s (knobs %08b): full sync of the final state: %v", fam, knobs, err)
	}
	assertSameKernel(t, inc, fresh)
}

func newFuzzEnv(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	e := &testEnv{ipvs: NewFakeIPVS(), links: NewFakeLinks(), sets: ipset.NewFake(), ipt: newFakeIPT()}
	e.p = e.newProxier(t, cfg)
	return e
}

// replay tells an informer's handlers how the live objects went from prev to cur: an
// update (old nil for an add) per object of cur, a delete per object of prev not in cur.
func replay[T metav1.Object](prev, cur []T, update func(old, cur T), del func(T)) {
	key := func(o T) types.NamespacedName {
		return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
	}
	old := map[types.NamespacedName]T{}
	for _, o := range prev {
		old[key(o)] = o
	}
	for _, o := range cur {
		update(old[key(o)], o)
		delete(old, key(o))
	}
	for _, o := range old {
		del(o)
	}
}
