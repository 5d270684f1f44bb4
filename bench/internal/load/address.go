package load

import "net/netip"

// epBase is the first endpoint address: endpoints are 100.64.10.0 + k, unique over the load,
// in the cluster CIDR but on no node of the sandbox (nothing sends traffic to them).
var epBase = netip.MustParseAddr("100.64.10.0")

// EndpointAddr is the k-th endpoint address of the plan: 100.64.10.0 + k.
func EndpointAddr(k int) netip.Addr {
	b := epBase.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
