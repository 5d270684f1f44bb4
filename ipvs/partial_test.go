package ipvs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"

	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
)

// listings counts the calls that list kernel state (one netlink dump, file read or exec
// each): all counts ListAllRealServers.
type listings struct{ vs, rs, all, addrs, sets, saves int }

type countingIPVS struct {
	IPVS
	n *listings
}

func (c countingIPVS) ListVirtualServers(ctx context.Context) ([]VirtualServer, error) {
	c.n.vs++
	return c.IPVS.ListVirtualServers(ctx)
}

func (c countingIPVS) ListRealServers(ctx context.Context, key VSKey) ([]RealServer, error) {
	c.n.rs++
	return c.IPVS.ListRealServers(ctx, key)
}

func (c countingIPVS) ListAllRealServers(ctx context.Context) (map[VSKey][]RealServer, error) {
	c.n.all++
	return c.IPVS.ListAllRealServers(ctx)
}

type countingLinks struct {
	Links
	n *listings
}

func (c countingLinks) ListAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	c.n.addrs++
	return c.Links.ListAddrs(ctx, name)
}

type countingSets struct {
	ipset.Interface
	n *listings
}

func (c countingSets) ListEntries(ctx context.Context, set string) ([]ipset.Entry, error) {
	c.n.sets++
	return c.Interface.ListEntries(ctx, set)
}

type countingIPT struct {
	iptables.Interface
	n *listings
}

func (c countingIPT) Save(ctx context.Context, t iptables.Table) ([]byte, error) {
	c.n.saves++
	return c.Interface.Save(ctx, t)
}

// TestPartialSyncWorkIsOfTheChange: with 50 services programmed, a partial sync for one
// changed service (no check due) lists no kernel table but the changed virtual server's real
// servers, writes only its change, and leaves the kernel as a full sync of the same state
// from scratch would.
func TestPartialSyncWorkIsOfTheChange(t *testing.T) {
	e := newEnv(t, testConfig())
	n := &listings{}
	e.p.w = Writers{IPVS: countingIPVS{e.ipvs, n}, Links: countingLinks{e.links, n},
		IPSet: countingSets{e.sets, n}, IPTables: countingIPT{e.ipt, n}}
	w := newWorld()
	for i := range 50 {
		sp := servicePort(portName("default", "svc-"+string(rune('a'+i%26))+string(rune('a'+i/26)), "http", v1.ProtocolTCP),
			netip.AddrFrom4([4]byte{100, 100, 1, byte(i + 1)}).String(), 80)
		w.svc(sp, remoteEP(netip.AddrFrom4([4]byte{100, 64, 2, byte(i + 1)}).String(), 8080))
	}
	e.apply(t, w, true)
	if n.rs != 0 || n.vs != 1 || n.sets == 0 || n.saves != 2 {
		t.Fatalf("cold full sync listings %+v: want one virtual server dump, no real server dump (all new), the sets, two saves", *n)
	}

	// one service gets a second endpoint
	name := portName("default", "svc-ca", "http", v1.ProtocolTCP)
	w.endpoints[name] = append(w.endpoints[name], remoteEP("100.64.3.3", 8080))
	*n = listings{}
	snap := w.snapshot()
	snap.Changed = map[types.NamespacedName]struct{}{name.NamespacedName: {}}
	if err := e.p.Apply(context.Background(), snap, testNode, false); err != nil {
		t.Fatal(err)
	}
	if st := e.p.LastSync(); *n != (listings{rs: 1}) || st.Writes() != 1 || st.RSAdded != 1 {
		t.Errorf("partial sync of one change: listings %+v, stats %+v; want one real server dump and one real server added", *n, st)
	}

	// a new service and a deleted one: their objects only, still no table listed
	gone := portName("default", "svc-ab", "http", v1.ProtocolTCP)
	delete(w.services, gone)
	delete(w.endpoints, gone)
	added := servicePort(portName("default", "new", "http", v1.ProtocolTCP), "100.100.2.1", 80)
	w.svc(added, remoteEP("100.64.4.4", 8080))
	*n = listings{}
	snap = w.snapshot()
	snap.Changed = map[types.NamespacedName]struct{}{gone.NamespacedName: {}, added.Name.NamespacedName: {}}
	if err := e.p.Apply(context.Background(), snap, testNode, false); err != nil {
		t.Fatal(err)
	}
	// added: virtual server, real server, address, KUBE-CLUSTER-IP and KUBE-IPVS-IPS entries;
	// deleted: the same five (the real server with its virtual server)
	if st := e.p.LastSync(); *n != (listings{}) || st.VSAdded != 1 || st.RSAdded != 1 || st.AddrsBound != 1 ||
		st.VSDeleted != 1 || st.AddrsUnbound != 1 || st.SetEntriesAdded != 2 || st.SetDeleted != 2 || st.ChainsWritten != 0 {
		t.Errorf("partial sync of an added and a deleted service: listings %+v, stats %+v", *n, st)
	}

	fresh := newEnv(t, testConfig())
	fresh.apply(t, w, true)
	assertSameKernel(t, e, fresh)
}

// assertSameKernel compares the fakes of two environments: IPVS, kube-ipvs0, sets, rules.
func assertSameKernel(t *testing.T, got, want *testEnv) {
	t.Helper()
	ctx := context.Background()
	if g, w := got.ipvs.Dump(), want.ipvs.Dump(); g != w {
		t.Errorf("IPVS differs from a full sync's:\n%s\nwant:\n%s", g, w)
	}
	ga, _ := got.links.ListAddrs(ctx, DummyDevice)
	wa, _ := want.links.ListAddrs(ctx, DummyDevice)
	if !slicesEqualAddrs(ga, wa) {
		t.Errorf("kube-ipvs0 %v, a full sync's %v", ga, wa)
	}
	if g, w := got.sets.Dump(), want.sets.Dump(); g != w {
		t.Errorf("sets differ from a full sync's:\n%s\nwant:\n%s", g, w)
	}
	for _, tb := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		g, _ := got.ipt.Save(ctx, tb)
		w, _ := want.ipt.Save(ctx, tb)
		if string(g) != string(w) {
			t.Errorf("%s table differs from a full sync's:\n%s\nwant:\n%s", tb, g, w)
		}
	}
}

func slicesEqualAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPatchedPlansEqualComputedPlans: endpoint changes to a world with node ports,
// externalTrafficPolicy=Local, affinity and two service ports wanting the same externalIP
// (a conflict) are planned by patching the previous plan (delta set), and each patched plan
// equals ComputePlan of the same input; the partial syncs that write them leave the fakes as
// a full sync from scratch does.
func TestPatchedPlansEqualComputedPlans(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	w := newWorld()
	var names []endpoints.ServicePortName
	for i := range 24 {
		proto := []v1.Protocol{v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP}[i%3]
		sp := servicePort(portName("ns", fmt.Sprintf("s%02d", i), "p", proto), netip.AddrFrom4([4]byte{100, 100, 3, byte(i + 1)}).String(), 80)
		if i%4 == 0 {
			sp.NodePort = int32(30000 + i)
			sp.ExternalPolicyLocal = i%8 == 0
		}
		if i%6 == 1 {
			sp.ExternalIPs = addrs("203.0.113.7") // the same ip:port for several: conflicts
		}
		if i%5 == 2 {
			sp = affinity(sp)
		}
		w.svc(sp)
		names = append(names, sp.Name)
	}
	endpointsOf := func() []endpoints.Endpoint {
		var eps []endpoints.Endpoint
		for range rnd.IntN(4) {
			ip := netip.AddrFrom4([4]byte{100, 64, byte(1 + rnd.IntN(2)), byte(1 + rnd.IntN(8))}).String()
			switch rnd.IntN(3) {
			case 0:
				eps = append(eps, readyEP(ip, 8080)) // local
			case 1:
				eps = append(eps, remoteEP(ip, 8080))
			default:
				eps = append(eps, terminatingEP(ip, 8080))
			}
		}
		slices.SortFunc(eps, func(a, b endpoints.Endpoint) int { return a.IP.Compare(b.IP) })
		return slices.CompactFunc(eps, func(a, b endpoints.Endpoint) bool { return a.IP == b.IP })
	}
	for _, n := range names {
		w.endpoints[n] = endpointsOf()
	}
	cfg := testConfig()
	e := newEnv(t, cfg)
	e.apply(t, w, true)
	var c PlanCache
	c.Plan(w.input(cfg), nil)
	patched := 0
	for round := range 60 {
		changed := map[types.NamespacedName]struct{}{}
		for range 1 + rnd.IntN(3) {
			n := names[rnd.IntN(len(names))]
			w.endpoints[n] = endpointsOf()
			changed[n.NamespacedName] = struct{}{}
		}
		got := c.Plan(w.input(cfg), changed)
		if got.delta != nil {
			patched++
		}
		got.delta = nil
		if want := ComputePlan(w.input(cfg)); !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: the cached plan differs from ComputePlan", round)
		}
		snap := w.snapshot()
		snap.Changed = changed
		if err := e.p.Apply(context.Background(), snap, testNode, false); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		fresh := newEnv(t, cfg)
		fresh.apply(t, w, true)
		assertSameKernel(t, e, fresh)
		if t.Failed() {
			t.Fatalf("round %d", round)
		}
	}
	// a change of local endpoints also changes KUBE-LOOP-BACK and the no-local-endpoint
	// counts, which takes a merge; the others patch
	if patched < 10 {
		t.Errorf("only %d of 60 plans were patched", patched)
	}
	t.Logf("%d of 60 plans patched", patched)
}
