package ipvs

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
)

type testEnv struct {
	ipvs  *FakeIPVS
	links *FakeLinks
	sets  *ipset.Fake
	ipt   *fakeIPT
	p     *Proxier
}

func newEnv(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	e := &testEnv{ipvs: NewFakeIPVS(), links: NewFakeLinks(), sets: ipset.NewFake(), ipt: newFakeIPT()}
	e.p = e.newProxier(t, cfg)
	return e
}

func (e *testEnv) newProxier(t *testing.T, cfg Config) *Proxier {
	t.Helper()
	p, err := NewProxier(Writers{IPVS: e.ipvs, Links: e.links, IPSet: e.sets, IPTables: e.ipt}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *testEnv) apply(t *testing.T, w *world, full bool) SyncStats {
	t.Helper()
	if err := e.p.Apply(context.Background(), w.snapshot(), testNode, full); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return e.p.LastSync()
}

var webKey = VSKey{IP: netip.MustParseAddr("100.100.0.10"), Port: 80, Protocol: v1.ProtocolTCP}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestApplyProgramsEverything(t *testing.T) {
	e := newEnv(t, testConfig())
	w := newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080), remoteEP("100.64.2.2", 8080))
	e.apply(t, w, true)
	want := "TCP 100.100.0.10:80 rr\n" +
		"  -> 100.64.1.2:8080 w1 active 0 inactive 0\n" +
		"  -> 100.64.2.2:8080 w1 active 0 inactive 0\n"
	if diff := cmp.Diff(want, e.ipvs.Dump()); diff != "" {
		t.Errorf("IPVS (-want +got):\n%s", diff)
	}
	got, err := e.links.ListAddrs(context.Background(), DummyDevice)
	if err != nil || !cmp.Equal(got, addrs("100.100.0.10"), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
		t.Errorf("kube-ipvs0 = %v, %v; want [100.100.0.10]", got, err)
	}
	entries, err := e.sets.ListEntries(context.Background(), ipset.KubeClusterIP)
	if err != nil || len(entries) != 1 || entries[0].String() != "100.100.0.10,tcp:80" {
		t.Errorf("KUBE-CLUSTER-IP = %v, %v", entries, err)
	}
	nat, _ := e.ipt.Save(context.Background(), iptables.TableNAT)
	for _, want := range []string{
		"-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
		"-A KUBE-SERVICES ! -s 100.64.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ",
		"-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
	} {
		if !strings.Contains(string(nat), want) {
			t.Errorf("nat table lacks %q:\n%s", want, nat)
		}
	}
}

// TestRestartWritesNothing: a second proxier over the same kernel state, with nothing
// changed, writes nothing (IPVS, links, sets, iptables).
func TestRestartWritesNothing(t *testing.T) {
	e := newEnv(t, testConfig())
	sp := webTCP()
	sp.NodePort = 30080
	sp.ExternalIPs = addrs("203.0.113.7")
	sp.LoadBalancerIPs = addrs("198.51.100.10")
	sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	w := newWorld().svc(sp, readyEP("100.64.1.2", 8080))
	e.apply(t, w, true)
	ipvsW, linkW, restores := e.ipvs.Writes(), e.links.Writes(), e.ipt.restores
	setsBefore := e.sets.Dump()

	e.p = e.newProxier(t, testConfig())
	st := e.apply(t, w, true)
	if st.Writes() != 0 || e.ipvs.Writes() != ipvsW || e.links.Writes() != linkW || e.ipt.restores != restores {
		t.Errorf("restart wrote: stats %+v, ipvs %d->%d, links %d->%d, restores %d->%d",
			st, ipvsW, e.ipvs.Writes(), linkW, e.links.Writes(), restores, e.ipt.restores)
	}
	if diff := cmp.Diff(setsBefore, e.sets.Dump()); diff != "" {
		t.Errorf("sets changed (-before +after):\n%s", diff)
	}
	// and an idle partial sync too
	if st := e.apply(t, w, false); st.Writes() != 0 {
		t.Errorf("idle partial sync wrote %+v", st)
	}
}

func TestGracefulTermination(t *testing.T) {
	tests := []struct {
		name      string
		proto     v1.Protocol
		conns     int
		wantAfter string // the removed real server after the removing sync
	}{
		{name: "tcp with connections drains at weight 0", proto: v1.ProtocolTCP, conns: 2, wantAfter: "w0"},
		{name: "tcp without connections is deleted at once", proto: v1.ProtocolTCP, conns: 0, wantAfter: "gone"},
		{name: "udp is deleted at once", proto: v1.ProtocolUDP, conns: 2, wantAfter: "gone"},
		{name: "sctp is deleted at once", proto: v1.ProtocolSCTP, conns: 2, wantAfter: "gone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, testConfig())
			sp := servicePort(portName("default", "web", "p", tc.proto), "100.100.0.10", 80)
			key := VSKey{IP: sp.ClusterIP, Port: 80, Protocol: tc.proto}
			e.apply(t, newWorld().svc(sp, readyEP("100.64.1.2", 8080), remoteEP("100.64.2.2", 8080)), true)
			if err := e.ipvs.SetConns(key, ap("100.64.2.2:8080"), tc.conns, 0); err != nil {
				t.Fatal(err)
			}
			// the endpoint goes away: a partial sync of the changed service
			e.apply(t, newWorld().svc(sp, readyEP("100.64.1.2", 8080)), false)
			if got := rsState(t, e.ipvs, key, ap("100.64.2.2:8080")); got != tc.wantAfter {
				t.Fatalf("removed real server = %s, want %s\n%s", got, tc.wantAfter, e.ipvs.Dump())
			}
			if tc.wantAfter == "gone" {
				return
			}
			// nothing changes in the cluster: the idle sync still checks the draining server
			unchanged := newWorld().svc(sp, readyEP("100.64.1.2", 8080))
			unchanged.services = endpoints.ServiceMap{sp.Name: sp}
			snap := unchanged.snapshot()
			snap.Changed = nil
			if err := e.p.Apply(context.Background(), snap, testNode, false); err != nil {
				t.Fatal(err)
			}
			if got := rsState(t, e.ipvs, key, ap("100.64.2.2:8080")); got != "w0" {
				t.Fatalf("still connected: %s, want w0", got)
			}
			if err := e.ipvs.SetConns(key, ap("100.64.2.2:8080"), 0, 0); err != nil {
				t.Fatal(err)
			}
			if err := e.p.Apply(context.Background(), snap, testNode, false); err != nil {
				t.Fatal(err)
			}
			if got := rsState(t, e.ipvs, key, ap("100.64.2.2:8080")); got != "gone" {
				t.Fatalf("drained: %s, want gone", got)
			}
		})
	}
}

func TestDrainingEndpointComesBack(t *testing.T) {
	e := newEnv(t, testConfig())
	both := newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080), remoteEP("100.64.2.2", 8080))
	e.apply(t, both, true)
	if err := e.ipvs.SetConns(webKey, ap("100.64.2.2:8080"), 1, 1); err != nil {
		t.Fatal(err)
	}
	e.apply(t, newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080)), false)
	e.apply(t, both, false)
	if got := rsState(t, e.ipvs, webKey, ap("100.64.2.2:8080")); got != "w1" {
		t.Errorf("returning endpoint = %s, want w1", got)
	}
}

// TestTerminatingEndpointDrains: an endpoint that starts terminating while ready ones
// exist leaves the plan and drains.
func TestTerminatingEndpointDrains(t *testing.T) {
	e := newEnv(t, testConfig())
	e.apply(t, newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080), remoteEP("100.64.2.2", 8080)), true)
	if err := e.ipvs.SetConns(webKey, ap("100.64.2.2:8080"), 3, 0); err != nil {
		t.Fatal(err)
	}
	e.apply(t, newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080), terminatingEP("100.64.2.2", 8080)), false)
	if got := rsState(t, e.ipvs, webKey, ap("100.64.2.2:8080")); got != "w0" {
		t.Errorf("terminating endpoint = %s, want w0", got)
	}
}

func rsState(t *testing.T, f *FakeIPVS, key VSKey, addr netip.AddrPort) string {
	t.Helper()
	rss, err := f.ListRealServers(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range rss {
		if rs.Addr == addr {
			return "w" + string(rune('0'+rs.Weight))
		}
	}
	return "gone"
}

// TestForeignVirtualServersUntouched: virtual servers of other owners (excluded CIDRs,
// addresses kproxy never bound, the other family) survive; kproxy's stale ones go.
func TestForeignVirtualServersUntouched(t *testing.T) {
	cfg := testConfig()
	cfg.ExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("100.100.200.0/24")}
	e := newEnv(t, cfg)
	ctx := context.Background()
	foreign := []VirtualServer{
		{VSKey: VSKey{IP: netip.MustParseAddr("100.100.200.5"), Port: 80, Protocol: v1.ProtocolTCP}, Scheduler: "wrr"}, // excluded
		{VSKey: VSKey{IP: netip.MustParseAddr("10.9.9.9"), Port: 443, Protocol: v1.ProtocolTCP}, Scheduler: "rr"},      // not bound by kproxy
		{VSKey: VSKey{IP: netip.MustParseAddr("2001:db8::9"), Port: 80, Protocol: v1.ProtocolTCP}, Scheduler: "rr"},    // other family
		{VSKey: VSKey{IP: nodeIP, Port: 8443, Protocol: v1.ProtocolTCP}, Scheduler: "rr"},                              // node IP, not a node port
	}
	for _, vs := range foreign {
		if err := e.ipvs.AddVirtualServer(ctx, vs); err != nil {
			t.Fatal(err)
		}
	}
	// an excluded address on kube-ipvs0 stays bound too
	if _, err := e.links.EnsureDummy(ctx, DummyDevice); err != nil {
		t.Fatal(err)
	}
	if err := e.links.AddAddr(ctx, DummyDevice, netip.MustParseAddr("100.100.200.5")); err != nil {
		t.Fatal(err)
	}
	old := servicePort(portName("default", "old", "", v1.ProtocolTCP), "100.100.0.99", 80)
	old.NodePort = 30099
	e.apply(t, newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080)).svc(old, readyEP("100.64.1.9", 80)), true)
	// old is deleted; a new proxier (restart) must still recognise its leftovers (its node
	// port from KUBE-NODE-PORT-TCP as it was before the sync)
	e.p = e.newProxier(t, cfg)
	e.apply(t, newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080)), true)
	list, _ := e.ipvs.ListVirtualServers(ctx)
	var got []string
	for _, vs := range list {
		got = append(got, vs.VSKey.String())
	}
	want := []string{"TCP 10.9.9.9:443", "TCP 100.100.0.10:80", "TCP 100.100.200.5:80", "TCP 192.0.2.11:8443", "TCP [2001:db8::9]:80"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("virtual servers (-want +got):\n%s", diff)
	}
	bound, _ := e.links.ListAddrs(ctx, DummyDevice)
	if len(bound) != 2 || bound[0].String() != "100.100.0.10" || bound[1].String() != "100.100.200.5" {
		t.Errorf("kube-ipvs0 = %v, want [100.100.0.10 100.100.200.5]", bound)
	}
}

func TestSchedulerAndAffinityUpdateInPlace(t *testing.T) {
	e := newEnv(t, testConfig())
	w := newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080))
	e.apply(t, w, true)
	e.p = e.newProxier(t, Config{ClusterCIDR: clusterCIDR, Scheduler: "wlc"})
	st := e.apply(t, newWorld().svc(affinity(webTCP()), readyEP("100.64.1.2", 8080)), false)
	if st.VSUpdated != 1 || st.VSAdded != 0 || st.VSDeleted != 0 {
		t.Errorf("stats = %+v, want one update", st)
	}
	list, _ := e.ipvs.ListVirtualServers(context.Background())
	if len(list) != 1 || list[0].String() != "TCP 100.100.0.10:80 wlc persistent 10800" {
		t.Errorf("virtual servers = %v", list)
	}
}

func TestValidateScheduler(t *testing.T) {
	for _, s := range append([]string{""}, Schedulers...) {
		if err := ValidateScheduler(s); err != nil {
			t.Errorf("ValidateScheduler(%q) = %v", s, err)
		}
	}
	for _, s := range []string{"fo", "RR", "round-robin", "ovf"} {
		if err := ValidateScheduler(s); !errors.Is(err, ErrUnknownScheduler) {
			t.Errorf("ValidateScheduler(%q) = %v, want ErrUnknownScheduler", s, err)
		}
	}
	if _, err := NewProxier(Writers{}, Config{Scheduler: "bogus"}); !errors.Is(err, ErrUnknownScheduler) {
		t.Errorf("NewProxier with a bad scheduler = %v", err)
	}
}

// TestPartialSyncRepairsByHandChanges: a virtual server or a real server deleted by hand is
// not seen by a partial sync with nothing changed (it compares with the last plan, not the
// kernel), until Config.KernelCheckInterval (kproxy: half the sync period) has passed since
// the last check; by a partial sync that carries changes (of another service), until
// busyCheckFactor intervals have.
func TestPartialSyncRepairsByHandChanges(t *testing.T) {
	removed := ap("100.64.2.2:8080")
	tampers := map[string]func(*FakeIPVS) error{
		"virtual server": func(f *FakeIPVS) error { return f.DeleteVirtualServer(context.Background(), webKey) },
		"real server":    func(f *FakeIPVS) error { return f.DeleteRealServer(context.Background(), webKey, removed) },
	}
	for object, tamper := range tampers {
		for _, tc := range []struct {
			name     string
			interval time.Duration
			after    time.Duration // clock advance before the partial sync
			busy     bool          // the sync carries a change of another service
			want     string        // the real server's state after it
		}{
			{"no interval: only full syncs", 0, time.Hour, false, "gone"},
			{"interval not yet due", 30 * time.Second, 10 * time.Second, false, "gone"},
			{"interval due", 30 * time.Second, 30 * time.Second, false, "w1"},
			{"busy: one interval is not enough", 30 * time.Second, 30 * time.Second, true, "gone"},
			{"busy: four intervals", 30 * time.Second, 4 * 30 * time.Second, true, "w1"},
		} {
			t.Run(object+"/"+tc.name, func(t *testing.T) {
				cfg := testConfig()
				cfg.KernelCheckInterval = tc.interval
				e := newEnv(t, cfg)
				now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
				e.p.now = func() time.Time { return now }
				w := newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080), remoteEP("100.64.2.2", 8080))
				e.apply(t, w, true)
				if err := tamper(e.ipvs); err != nil {
					t.Fatal(err)
				}
				now = now.Add(tc.after)
				snap := w.snapshot()
				snap.Changed = nil
				if tc.busy {
					snap.Changed = map[types.NamespacedName]struct{}{{Namespace: "default", Name: "gone-meanwhile"}: {}}
				}
				if err := e.p.Apply(context.Background(), snap, testNode, false); err != nil {
					t.Fatal(err)
				}
				got := "gone"
				if _, err := e.ipvs.ListRealServers(context.Background(), webKey); err == nil {
					got = rsState(t, e.ipvs, webKey, removed)
				}
				if got != tc.want {
					t.Errorf("%s deleted by hand, after a partial sync %v later: real server %s, want %s", object, tc.after, got, tc.want)
				}
			})
		}
	}
}

// failingRestore is fakeIPT whose iptables-restore fails.
type failingRestore struct{ *fakeIPT }

func (f failingRestore) Restore(context.Context, []byte) error {
	return &iptables.RestoreError{Msg: "injected"}
}

// TestSyncStatsForMetrics: what the metrics read after a sync (rule counts, services without
// local endpoints, the IPVS table's size) and the restore failure counter.
func TestSyncStatsForMetrics(t *testing.T) {
	e := newEnv(t, testConfig())
	itp := servicePort(portName("default", "itp", "", v1.ProtocolTCP), "100.100.0.40", 80)
	itp.InternalPolicyLocal = true
	w := newWorld().svc(etpService(true), remoteEP("100.64.2.3", 8443)).svc(itp, remoteEP("100.64.2.7", 80)).
		svc(webTCP(), readyEP("100.64.1.2", 8080))
	st := e.apply(t, w, true)
	// lb: ClusterIP (1 endpoint), LB IP, externalIP, node port (no local endpoint: none);
	// itp: ClusterIP (none); web: ClusterIP (1)
	if st.VirtualServers != 6 || st.RealServers != 2 || st.NoLocalEndpointsInternal != 1 || st.NoLocalEndpointsExternal != 1 {
		t.Errorf("stats = %+v, want 6 virtual servers, 2 real servers, 1 and 1 without local endpoints", st)
	}
	if st.NATRules == 0 || st.FilterRules == 0 {
		t.Errorf("rule counts = nat %d filter %d", st.NATRules, st.FilterRules)
	}
	if e.p.RestoreFailures() != 0 {
		t.Errorf("restore failures = %d", e.p.RestoreFailures())
	}
	e.ipt.chains[iptables.TableNAT][chainServices] = nil // tampered: the next sync restores
	e.p.w.IPTables = failingRestore{e.ipt}
	if err := e.p.Apply(context.Background(), w.snapshot(), testNode, true); err == nil {
		t.Fatal("Apply with a failing restore succeeded")
	}
	if e.p.RestoreFailures() != 1 {
		t.Errorf("restore failures = %d, want 1", e.p.RestoreFailures())
	}
}

// HasState: a namespace where no proxy ran has no state; after a sync it has (a restart of
// kproxy then serves /healthz 200 while its first sync runs).
func TestHasState(t *testing.T) {
	e := newEnv(t, testConfig())
	ctx := context.Background()
	if e.p.HasState(ctx) {
		t.Fatal("fresh namespace: HasState true")
	}
	e.apply(t, newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080)), true)
	if !e.newProxier(t, testConfig()).HasState(ctx) {
		t.Error("after a sync: a new proxier's HasState false")
	}
}

// The ServiceCIDR objects' ranges (SetServiceCIDRs, when --service-cluster-ip-range is not
// given) make a leftover virtual server in them kproxy's: one that no service wants, on an
// address no longer bound to kube-ipvs0 and named by no set, goes at the next sync that checks
// the kernel; without the ranges it stays (nothing says it is kproxy's).
func TestServiceCIDRsFromObjectsOwnLeftovers(t *testing.T) {
	cfg := testConfig()
	cfg.ServiceCIDRs = nil
	e := newEnv(t, cfg)
	ctx := context.Background()
	leftover := VirtualServer{VSKey: VSKey{IP: netip.MustParseAddr("100.100.7.7"), Port: 80, Protocol: v1.ProtocolTCP}, Scheduler: "rr"}
	if err := e.ipvs.AddVirtualServer(ctx, leftover); err != nil {
		t.Fatal(err)
	}
	w := newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080))
	has := func() bool {
		list, _ := e.ipvs.ListVirtualServers(ctx)
		for _, vs := range list {
			if vs.VSKey == leftover.VSKey {
				return true
			}
		}
		return false
	}
	e.apply(t, w, true)
	if !has() {
		t.Fatal("the leftover went without service ranges")
	}
	e.p.SetServiceCIDRs([]netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")})
	e.apply(t, w, true)
	if has() {
		t.Error("the leftover in the ServiceCIDR range stayed")
	}
	// The ranges do not change any plan: new ones must not make the plan cache start over.
	with := testConfig()
	with.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}
	if !sameConfig(testConfig(), with) {
		t.Error("sameConfig: configs that differ only in ServiceCIDRs plan alike")
	}
}
