package proxy

import (
	"fmt"
	"net/netip"

	"github.com/kproxy/kproxy/iptables"
)

// defaultMasqueradeBit is kube-proxy's --iptables-masquerade-bit default: mark 0x4000.
const defaultMasqueradeBit = 14

// Config is the iptables mode's configuration.
type Config struct {
	// Family is the address family this proxier programs; service ports and endpoints of the
	// other family are skipped.
	Family iptables.Family
	// ClusterCIDR is the pod CIDR (--cluster-cidr); traffic to a ClusterIP from outside it is
	// masqueraded. Zero means unset: only hairpin traffic is masqueraded.
	ClusterCIDR netip.Prefix
	// MasqueradeAll masquerades all traffic to ClusterIPs (--masquerade-all).
	MasqueradeAll bool
	// MasqueradeBit is the packet-mark bit for "needs SNAT" (--iptables-masquerade-bit). A
	// value outside 1..31, including 0, means kube-proxy's default, 14 (mark 0x4000).
	MasqueradeBit int
	// MasqueradeRandomFully adds --random-fully to the MASQUERADE rule (see
	// iptables.Runner.HasRandomFully).
	MasqueradeRandomFully bool
}

// masqueradeMark returns the mark as kube-proxy writes it ("0x4000").
func (c Config) masqueradeMark() string {
	bit := c.MasqueradeBit
	if bit <= 0 || bit > 31 {
		bit = defaultMasqueradeBit
	}
	return fmt.Sprintf("%#x", uint32(1)<<bit)
}

// clusterCIDR returns the cluster CIDR when it is set and of the proxier's family.
func (c Config) clusterCIDR() (netip.Prefix, bool) {
	p := c.ClusterCIDR
	return p, p.IsValid() && p.Addr().Is4() == (c.Family == iptables.IPv4)
}
