package proxy

import (
	"fmt"
	"net/netip"

	"github.com/kproxy/kproxy/iptables"
)

// defaultMasqueradeBit is kube-proxy's --iptables-masquerade-bit default: mark 0x4000.
const defaultMasqueradeBit = 14

// defaultBatchServices is how many services' chains one restore writes (see Proxier.Apply).
const defaultBatchServices = 100

// Config is the iptables mode's configuration. The zero value (plus a Family) is a working
// proxier with upstream's defaults, except that NodePorts are never opened on localhost.
type Config struct {
	// Family is the address family this proxier programs; service ports and endpoints of the
	// other family are skipped.
	Family iptables.Family
	// ClusterCIDR is the pod CIDR (--cluster-cidr). It is the local-traffic detector when
	// LocalDetector is unset (--detect-local-mode=ClusterCIDR, upstream's default). Zero means
	// unset: no traffic is recognised as pod traffic.
	ClusterCIDR netip.Prefix
	// LocalDetector tells pod traffic from other traffic (--detect-local-mode). When it is
	// the zero value, ClusterCIDR is used.
	LocalDetector LocalDetector
	// MasqueradeAll masquerades all traffic to ClusterIPs (--masquerade-all).
	MasqueradeAll bool
	// MasqueradeBit is the packet-mark bit for "needs SNAT" (--iptables-masquerade-bit). A
	// value outside 1..31, including 0, means kube-proxy's default, 14 (mark 0x4000).
	MasqueradeBit int
	// MasqueradeRandomFully adds --random-fully to the MASQUERADE rule (see
	// iptables.Runner.HasRandomFully).
	MasqueradeRandomFully bool

	// NodeIP is the node's primary address of the family. With loadBalancerSourceRanges
	// that contain it, traffic from the node to the load-balancer IP is allowed (upstream).
	NodeIP netip.Addr
	// NodePortAddresses restricts NodePorts to the node addresses inside these prefixes
	// (--nodeport-addresses; "primary" is NodeIP/32 or /128). Empty means every local
	// address (-m addrtype --dst-type LOCAL). Prefixes of the other family are ignored.
	NodePortAddresses []netip.Prefix
	// InterfaceAddrs lists the node's addresses, for NodePortAddresses. It is called once
	// per sync, and only when NodePortAddresses is set. nil lists the addresses of the
	// network namespace the process runs in.
	InterfaceAddrs func() ([]netip.Addr, error)
	// LocalhostNodePorts opens NodePorts on 127.0.0.0/8 too (--iptables-localhost-nodeports;
	// upstream's default is true, kproxy's false: it needs route_localnet=1, which the
	// daemon must set). Never for IPv6.
	LocalhostNodePorts bool
	// ServiceCIDRs are the service IP ranges (ServiceCIDR objects or
	// --service-cluster-ip-range). When set, traffic to an address in them that no service
	// port captured (a ClusterIP's other ports, an unallocated IP) is rejected by one rule per
	// range; when unset, by one rule per ClusterIP.
	ServiceCIDRs []netip.Prefix
	// ConntrackTCPBeLiberal is whether net.netfilter.nf_conntrack_tcp_be_liberal is set; then,
	// as upstream, KUBE-FORWARD does not drop packets in conntrack state INVALID.
	ConntrackTCPBeLiberal bool
	// Generation, when set, reads the nf_tables generation of the namespace (see
	// iptables.Runner.Generation; ok false when it means nothing, e.g. iptables-legacy). An
	// idle sync then reads the tables only when the generation moved since the last
	// verification: at 10,000 services that read costs about 2.5 CPU seconds.
	Generation func() (gen uint32, ok bool, err error)
	// BatchServices is how many services' chains one iptables-restore writes at least; 0
	// means 100. Into a large table, a restore writes more (Config.batchFor).
	BatchServices int
}

// LocalDetector is how the rules recognise traffic from pods on this node
// (--detect-local-mode). Set at most one field.
type LocalDetector struct {
	// CIDR: source address in the prefix (ClusterCIDR mode with --cluster-cidr, NodeCIDR
	// mode with the node's spec.podCIDR).
	CIDR netip.Prefix
	// BridgeInterface: arriving on this bridge (--pod-bridge-interface).
	BridgeInterface string
	// InterfaceNamePrefix: arriving on an interface whose name starts with it
	// (--pod-interface-name-prefix).
	InterfaceNamePrefix string
}

// localDetector returns the detector in force: LocalDetector, else ClusterCIDR, with a CIDR
// of the other family treated as unset.
func (c Config) localDetector() LocalDetector {
	d := c.LocalDetector
	if d == (LocalDetector{}) {
		d.CIDR = c.ClusterCIDR
	}
	if d.CIDR.IsValid() && d.CIDR.Addr().Is4() != (c.Family == iptables.IPv4) {
		d.CIDR = netip.Prefix{}
	}
	return d
}

// implemented reports whether the detector can tell pod traffic at all.
func (d LocalDetector) implemented() bool {
	return d.CIDR.IsValid() || d.BridgeInterface != "" || d.InterfaceNamePrefix != ""
}

// ifLocal is the match of pod traffic (upstream's IfLocal).
func (d LocalDetector) ifLocal() iptables.Rule {
	switch {
	case d.CIDR.IsValid():
		return iptables.Rule{"-s", d.CIDR.Masked().String()}
	case d.BridgeInterface != "":
		return iptables.Rule{"-i", d.BridgeInterface}
	case d.InterfaceNamePrefix != "":
		return iptables.Rule{"-i", d.InterfaceNamePrefix + "+"}
	}
	return nil
}

// ifNotLocal is the match of traffic that does not come from a pod (upstream's IfNotLocal).
func (d LocalDetector) ifNotLocal() iptables.Rule {
	if r := d.ifLocal(); r != nil {
		return append(iptables.Rule{"!"}, r...)
	}
	return nil
}

// masqueradeMark returns the mark as kube-proxy writes it ("0x4000").
func (c Config) masqueradeMark() string {
	bit := c.MasqueradeBit
	if bit <= 0 || bit > 31 {
		bit = defaultMasqueradeBit
	}
	return fmt.Sprintf("%#x", uint32(1)<<bit)
}

func (c Config) batchServices() int {
	if c.BatchServices <= 0 {
		return defaultBatchServices
	}
	return c.BatchServices
}

// natChainsPerBatchService sets how a restore's batch grows with the table (batchFor): one
// more service per this many nat chains the kernel holds. A variable for the benchmarks.
var natChainsPerBatchService = 60

// batchFor is how many services' chains one restore writes when the kernel holds knownNATChains
// nat chains: batchServices, or more in a large table. Each nf_tables commit that adds a rule
// with a jump or an xt target makes the kernel check every chain reachable from the base
// chains, so a restore into a large, hooked-up table has a fixed cost that grows with the
// table (about 140 ms at 10,000 services × 5 endpoints, 60,000 nat chains), while the cost of
// what one restore declares grows faster than linearly with it. A cold start writes the jumps
// to the service chains last, so its batches are checked against a near-empty table and stay
// small; a partial sync of ~130 new services at 10,000 (a bulk create) was three restores of
// 100, 28 services and the shared chains, and is now one (BenchmarkBulkGrowthKernel).
func (c Config) batchFor(knownNATChains int) int {
	return max(c.batchServices(), knownNATChains/natChainsPerBatchService)
}

// ofFamily reports whether a is an address of the proxier's family.
func (c Config) ofFamily(a netip.Addr) bool {
	return a.IsValid() && a.Is4() == (c.Family == iptables.IPv4) && !a.Is4In6()
}
