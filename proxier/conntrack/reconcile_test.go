package conntrack

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
)

func TestReconcile(t *testing.T) {
	targets := Targets{
		Frontends: map[Frontend]Backends{
			fe(v1.ProtocolUDP, "100.100.0.10:53"):     backends("100.64.1.2:5353"),
			fe(v1.ProtocolSCTP, "100.100.0.20:9000"):  backends("100.64.2.2:9000"),
			fe(v1.ProtocolUDP, "[2001:db8:2::40]:53"): {},
			fe(v1.ProtocolUDP, "100.100.0.30:80"):     {},
		},
	}
	keep := []Flow{
		udp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.2:5353"),
		sctp("100.64.1.7:4000", "100.100.0.20:9000", "100.64.2.2:9000"),
		tcp("100.64.1.7:4000", "100.100.0.30:80", "100.64.1.9:80"),
		// The IPv6 flow is stale, but this reconcile is for IPv4 only.
		udp("[2001:db8:1::7]:4000", "[2001:db8:2::40]:53", "[2001:db8:1::40]:53"),
	}
	stale := []Flow{
		udp("100.64.1.7:4001", "100.100.0.10:53", "100.64.1.3:5353"),
		sctp("100.64.1.7:4001", "100.100.0.20:9000", "100.64.2.3:9000"),
		udp("100.64.1.7:4000", "100.100.0.30:80", "100.64.1.9:80"),
	}
	f, err := NewFake(append(keep, stale...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n, err := Reconcile(ctx, f, v1.IPv4Protocol, targets)
	if err != nil || n != len(stale) {
		t.Fatalf("got %d, %v; want %d, nil", n, err, len(stale))
	}
	want, _ := NewFake(keep...)
	if diff := cmp.Diff(want.Flows(), f.Flows(), addrPortCmp); diff != "" {
		t.Errorf("flows left (-want +got):\n%s", diff)
	}

	// Nothing left to do: no delete at all.
	n, err = Reconcile(ctx, f, v1.IPv4Protocol, targets)
	if err != nil || n != 0 {
		t.Fatalf("second run: got %d, %v; want 0, nil", n, err)
	}

	// Errors are returned, not hidden.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Reconcile(cancelled, f, v1.IPv4Protocol, targets); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want context.Canceled", err)
	}
}

// countingLister counts the dumps Reconcile asks for.
type countingLister struct {
	*Fake
	lists int
}

func (c *countingLister) List(ctx context.Context, family v1.IPFamily, protocols ...v1.Protocol) ([]Flow, error) {
	c.lists++
	return c.Fake.List(ctx, family, protocols...)
}

// With no UDP or SCTP service port there is nothing to judge: the table is not dumped, and
// nothing is deleted even when flows to former service addresses remain.
func TestReconcileSkipsTheDumpWithoutTargets(t *testing.T) {
	f, err := NewFake(udp("100.64.1.7:4000", "100.100.0.30:53", "100.64.1.9:53"))
	if err != nil {
		t.Fatal(err)
	}
	c := &countingLister{Fake: f}
	ctx := context.Background()
	for _, targets := range []Targets{{}, {Frontends: map[Frontend]Backends{}, NodePorts: map[NodePort]Backends{}}} {
		if n, err := Reconcile(ctx, c, v1.IPv4Protocol, targets); err != nil || n != 0 {
			t.Fatalf("got %d, %v; want 0, nil", n, err)
		}
	}
	if c.lists != 0 || len(f.Flows()) != 1 {
		t.Errorf("without targets: %d dumps, %d flows left; want 0 dumps, 1 flow", c.lists, len(f.Flows()))
	}
	// One UDP frontend: the table is dumped and the flow to it judged.
	targets := Targets{NodePorts: map[NodePort]Backends{{Protocol: v1.ProtocolUDP, Port: 30053}: {}}}
	if _, err := Reconcile(ctx, c, v1.IPv4Protocol, targets); err != nil {
		t.Fatal(err)
	}
	if c.lists != 1 {
		t.Errorf("with a node port: %d dumps, want 1", c.lists)
	}
}
