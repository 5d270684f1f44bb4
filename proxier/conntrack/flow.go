package conntrack

import (
	"cmp"
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
)

// Tuple is one direction of a flow.
type Tuple struct {
	Src netip.AddrPort
	Dst netip.AddrPort
}

// Flow is one conntrack entry: its original direction (as the client sent it) and its reply
// direction (as the server answers: after DNAT, Reply.Src is the endpoint).
type Flow struct {
	Protocol v1.Protocol
	Original Tuple
	Reply    Tuple
	Zone     uint16
}

// String is close to `conntrack -L`: "udp src=... dst=... sport=... dport=... src=... ...".
func (f Flow) String() string {
	return fmt.Sprintf("%s src=%s dst=%s sport=%d dport=%d src=%s dst=%s sport=%d dport=%d zone=%d",
		f.Protocol, f.Original.Src.Addr(), f.Original.Dst.Addr(), f.Original.Src.Port(), f.Original.Dst.Port(),
		f.Reply.Src.Addr(), f.Reply.Dst.Addr(), f.Reply.Src.Port(), f.Reply.Dst.Port(), f.Zone)
}

// Family returns the flow's address family (from its original destination).
func (f Flow) Family() v1.IPFamily {
	return familyOf(f.Original.Dst.Addr())
}

func familyOf(a netip.Addr) v1.IPFamily {
	if a.Unmap().Is4() {
		return v1.IPv4Protocol
	}
	return v1.IPv6Protocol
}

// compareFlows orders flows by protocol, original tuple, reply tuple and zone.
func compareFlows(a, b Flow) int {
	return cmp.Or(
		cmp.Compare(a.Protocol, b.Protocol),
		a.Original.Src.Compare(b.Original.Src),
		a.Original.Dst.Compare(b.Original.Dst),
		a.Reply.Src.Compare(b.Reply.Src),
		a.Reply.Dst.Compare(b.Reply.Dst),
		cmp.Compare(a.Zone, b.Zone),
	)
}
