package proxier

import (
	"context"
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/proxier/conntrack"
)

// After a successful sync the reconciler removes UDP flows to an endpoint that is gone and
// keeps those to a live one; after a failed sync it touches nothing.
func TestReconcilerConntrackCleanup(t *testing.T) {
	svc := endpoints.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "dns"}, Port: "dns", Protocol: v1.ProtocolUDP}
	snap := endpoints.Snapshot{
		Services:  endpoints.ServiceMap{svc: {Name: svc, ClusterIP: netip.MustParseAddr("100.100.0.10"), Port: 53, Protocol: v1.ProtocolUDP}},
		Endpoints: endpoints.EndpointsMap{svc: {{IP: netip.MustParseAddr("100.64.1.10"), Port: 5353, Ready: true, Serving: true}}},
	}
	flow := func(backend string) conntrack.Flow {
		return conntrack.Flow{
			Protocol: v1.ProtocolUDP,
			Original: conntrack.Tuple{Src: netip.MustParseAddrPort("100.64.2.5:40000"), Dst: netip.MustParseAddrPort("100.100.0.10:53")},
			Reply:    conntrack.Tuple{Src: netip.MustParseAddrPort(backend), Dst: netip.MustParseAddrPort("100.64.2.5:40000")},
		}
	}
	live, stale := flow("100.64.1.10:5353"), flow("100.64.1.99:5353")
	stale.Original.Src = netip.MustParseAddrPort("100.64.2.6:40000")
	stale.Reply.Dst = stale.Original.Src
	ct, err := conntrack.NewFake(live, stale)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	m := NewMetrics().For("IPv4")
	be := &fakeBackend{errs: []error{context.DeadlineExceeded}}
	r := NewReconciler(&fakeSource{snaps: []endpoints.Snapshot{snap, snap}}, be, m, NewHealth(time.Minute, []string{"IPv4"}, clk),
		ReconcilerOptions{Clock: clk, Family: v1.IPv4Protocol, After: AfterSync{Conntrack: ct, ConntrackDeleted: m.ConntrackDeleted}})

	if err := r.Sync(context.Background()); err == nil {
		t.Fatal("first sync should fail")
	}
	if got := len(ct.Flows()); got != 2 {
		t.Fatalf("after a failed sync: %d flows, want 2 (untouched)", got)
	}
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := ct.Flows(); len(got) != 1 || got[0].Reply.Src != live.Reply.Src {
		t.Errorf("after a sync: flows %v, want only the one to the live endpoint", got)
	}
	if got := counterValue(t, m.ConntrackDeleted); got != 1 {
		t.Errorf("deleted entries metric = %v, want 1", got)
	}
}
