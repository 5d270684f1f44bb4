package conntrack

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
)

var addrPortCmp = cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })

func TestFakeListAndDelete(t *testing.T) {
	ctx := context.Background()
	a := udp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.9:5353")
	b := sctp("100.64.1.7:4000", "100.100.0.20:9000", "100.64.2.2:9000")
	c := tcp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.9:5353")
	d := udp("[2001:db8:1::7]:4000", "[2001:db8:2::40]:53", "[2001:db8:1::40]:53")
	f, err := NewFake(a, b, c, d)
	if err != nil {
		t.Fatal(err)
	}

	got, err := f.List(ctx, v1.IPv4Protocol, v1.ProtocolUDP, v1.ProtocolSCTP)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Flow{b, a}, got, addrPortCmp); diff != "" {
		t.Errorf("list IPv4 UDP+SCTP (-want +got):\n%s", diff)
	}
	got, err = f.List(ctx, v1.IPv6Protocol, v1.ProtocolUDP)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Flow{d}, got, addrPortCmp); diff != "" {
		t.Errorf("list IPv6 UDP (-want +got):\n%s", diff)
	}

	// A flow with the same original tuple but another reply (re-created towards another
	// endpoint) is not deleted; a flow already gone is not an error.
	aElsewhere := a
	aElsewhere.Reply.Src = netip.MustParseAddrPort("100.64.1.2:5353")
	gone := udp("100.64.1.8:4000", "100.100.0.10:53", "100.64.1.9:5353")
	n, err := f.Delete(ctx, []Flow{aElsewhere, gone, d})
	if err != nil || n != 1 {
		t.Fatalf("delete: got %d, %v; want 1, nil", n, err)
	}
	n, err = f.Delete(ctx, []Flow{a})
	if err != nil || n != 1 {
		t.Fatalf("delete: got %d, %v; want 1, nil", n, err)
	}
	if diff := cmp.Diff([]Flow{b, c}, f.Flows(), addrPortCmp); diff != "" {
		t.Errorf("flows left (-want +got):\n%s", diff)
	}
}

func TestFakeRejects(t *testing.T) {
	ctx := context.Background()
	a := udp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.9:5353")
	f, err := NewFake(a)
	if err != nil {
		t.Fatal(err)
	}
	dup := a
	dup.Reply.Src = netip.MustParseAddrPort("100.64.1.2:5353")
	mixed := udp("100.64.1.7:4000", "100.100.0.11:53", "[2001:db8:1::40]:53")
	mapped := udp("100.64.1.7:4000", "[::ffff:100.100.0.12]:53", "100.64.1.9:53")
	bad := a
	bad.Protocol = "ICMP"

	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"insert same original tuple", f.Insert(dup), ErrExists},
		{"insert mixed families", f.Insert(mixed), ErrInvalidFlow},
		{"insert mapped address", f.Insert(mapped), ErrInvalidFlow},
		{"insert unknown protocol", f.Insert(bad), ErrUnsupportedProtocol},
		{"list unknown protocol", second(f.List(ctx, v1.IPv4Protocol, "ICMP")), ErrUnsupportedProtocol},
		{"list no protocol", second(f.List(ctx, v1.IPv4Protocol)), ErrUnsupportedProtocol},
		{"list unknown family", second(f.List(ctx, "IPv5", v1.ProtocolUDP)), ErrUnsupportedProtocol},
		{"delete invalid flow", second(f.Delete(ctx, []Flow{mixed})), ErrInvalidFlow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) {
				t.Errorf("got error %v, want %v", tc.err, tc.want)
			}
		})
	}
	if diff := cmp.Diff([]Flow{a}, f.Flows(), addrPortCmp); diff != "" {
		t.Errorf("rejected calls changed the table (-want +got):\n%s", diff)
	}
}

func second[T any](_ T, err error) error { return err }
