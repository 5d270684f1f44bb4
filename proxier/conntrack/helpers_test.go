package conntrack

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
)

// flow builds an entry from client to dst, answered by replySrc (the DNAT target; dst
// itself when not DNATed), without SNAT.
func flow(proto v1.Protocol, client, dst, replySrc string) Flow {
	c := netip.MustParseAddrPort(client)
	return Flow{
		Protocol: proto,
		Original: Tuple{Src: c, Dst: netip.MustParseAddrPort(dst)},
		Reply:    Tuple{Src: netip.MustParseAddrPort(replySrc), Dst: c},
	}
}

func udp(client, dst, replySrc string) Flow  { return flow(v1.ProtocolUDP, client, dst, replySrc) }
func sctp(client, dst, replySrc string) Flow { return flow(v1.ProtocolSCTP, client, dst, replySrc) }
func tcp(client, dst, replySrc string) Flow  { return flow(v1.ProtocolTCP, client, dst, replySrc) }

func backends(eps ...string) Backends {
	b := Backends{}
	for _, e := range eps {
		b[netip.MustParseAddrPort(e)] = struct{}{}
	}
	return b
}

func fe(proto v1.Protocol, addr string) Frontend {
	return Frontend{Protocol: proto, Addr: netip.MustParseAddrPort(addr)}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}
