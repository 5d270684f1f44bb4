package ipvs

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
)

// DummyDevice is the dummy link the service addresses are bound to, as upstream.
const DummyDevice = "kube-ipvs0"

// defaultMasqueradeBit is kube-proxy's --iptables-masquerade-bit default: mark 0x4000.
const defaultMasqueradeBit = 14

// Config is the IPVS mode's configuration. The zero value (plus a Family) is upstream's
// defaults: rr, no pod CIDR, mark 0x4000.
type Config struct {
	// Family is the address family this proxier programs; service ports, endpoints and
	// addresses of the other family are skipped, and virtual servers of the other family are
	// never touched.
	Family iptables.Family
	// Scheduler is the IPVS scheduler (--ipvs-scheduler); "" means rr. Check it with
	// ValidateScheduler at start-up.
	Scheduler string
	// NodeIPs are the node's addresses NodePorts are served on (one virtual server per node
	// IP and node port), as upstream's --nodeport-addresses selection. An externalIP or
	// load-balancer IP that is one of them is not bound to kube-ipvs0 (it is already local).
	NodeIPs []netip.Addr
	// NodeIP is the node's primary address: with loadBalancerSourceRanges that contain it,
	// the node may reach the load-balancer IP (upstream).
	NodeIP netip.Addr
	// ClusterCIDR is the pod CIDR (--cluster-cidr): traffic to a ClusterIP from outside it
	// is masqueraded. Zero means unset; with no LocalDetector either, upstream's fallback
	// applies (masquerade node traffic whose source is a service IP).
	ClusterCIDR netip.Prefix
	// LocalDetector tells pod traffic from other traffic (--detect-local-mode); when zero,
	// ClusterCIDR is used.
	LocalDetector LocalDetector
	// MasqueradeAll masquerades all traffic to ClusterIPs (--masquerade-all).
	MasqueradeAll bool
	// MasqueradeBit is the packet-mark bit for "needs SNAT" (--iptables-masquerade-bit); a
	// value outside 1..31, including 0, means 14 (0x4000).
	MasqueradeBit int
	// StrictARP is --ipvs-strict-arp. The sysctls it needs (arp_ignore=1, arp_announce=2)
	// are listed by RequiredSysctls; the plan does not depend on it.
	StrictARP bool
	// ExcludeCIDRs (--ipvs-exclude-cidrs): virtual servers and kube-ipvs0 addresses in
	// these ranges are never deleted or changed, as upstream.
	ExcludeCIDRs []netip.Prefix
	// ServiceCIDRs are the service IP ranges. A virtual server in them is kproxy's (and is
	// deleted when no service wants it) even when its address is not on kube-ipvs0.
	ServiceCIDRs []netip.Prefix
	// NetnsPath is the network namespace the writers made by NewKernel bind to
	// ("/run/netns/NAME", "/proc/PID/ns/net"); "" is the process's own.
	NetnsPath string
	// IPSetRebuildThreshold is ipset.ReconcileOptions.RebuildThreshold.
	IPSetRebuildThreshold int
	// KernelCheckInterval is how often a partial sync also checks the kernel: lists the
	// addresses, sets, virtual servers, the real servers of every virtual server and the
	// iptables tables, and repairs what differs, so that what was changed by hand comes back
	// (upstream lists everything every sync). Other partial syncs compare with the last
	// plan written. kproxy sets it to half the sync period; 0 means only in full syncs. A
	// partial sync that carries changes checks only after busyCheckFactor intervals.
	KernelCheckInterval time.Duration
}

// LocalDetector is how the rules recognise traffic from pods on this node
// (--detect-local-mode). Set at most one field.
type LocalDetector struct {
	CIDR                netip.Prefix // ClusterCIDR / NodeCIDR modes
	BridgeInterface     string       // BridgeInterface mode
	InterfaceNamePrefix string       // InterfaceNamePrefix mode
}

// ifNotLocal is the match of traffic that does not come from a pod (upstream's
// IfNotLocal), nil when the detector is not implemented.
func (d LocalDetector) ifNotLocal() []string {
	switch {
	case d.CIDR.IsValid():
		return []string{"!", "-s", d.CIDR.Masked().String()}
	case d.BridgeInterface != "":
		return []string{"!", "-i", d.BridgeInterface}
	case d.InterfaceNamePrefix != "":
		return []string{"!", "-i", d.InterfaceNamePrefix + "+"}
	}
	return nil
}

// ifLocal is the match of traffic from pods (upstream's IfLocal), nil when the detector is
// not implemented.
func (d LocalDetector) ifLocal() []string {
	switch {
	case d.CIDR.IsValid():
		return []string{"-s", d.CIDR.Masked().String()}
	case d.BridgeInterface != "":
		return []string{"-i", d.BridgeInterface}
	case d.InterfaceNamePrefix != "":
		return []string{"-i", d.InterfaceNamePrefix + "+"}
	}
	return nil
}

func (c Config) localDetector() LocalDetector {
	d := c.LocalDetector
	if d == (LocalDetector{}) {
		d.CIDR = c.ClusterCIDR
	}
	if d.CIDR.IsValid() && !c.ofFamily(d.CIDR.Addr()) {
		d.CIDR = netip.Prefix{}
	}
	return d
}

func (c Config) scheduler() string {
	if c.Scheduler == "" {
		return DefaultScheduler
	}
	return c.Scheduler
}

// masqueradeMark is the mark as upstream's IPVS mode writes it ("%#08x": "0x00004000").
func (c Config) masqueradeMark() string {
	bit := c.MasqueradeBit
	if bit <= 0 || bit > 31 {
		bit = defaultMasqueradeBit
	}
	return fmt.Sprintf("%#08x", uint32(1)<<bit)
}

// ofFamily reports whether a is an address of the proxier's family.
func (c Config) ofFamily(a netip.Addr) bool {
	return a.IsValid() && a.Is4() == (c.Family == iptables.IPv4) && !a.Is4In6()
}

func (c Config) setFamily() ipset.Family {
	if c.Family == iptables.IPv6 {
		return ipset.FamilyIPv6
	}
	return ipset.FamilyIPv4
}

// setName is a kube-proxy set's name for the proxier's family.
func (c Config) setName(name string) string { return ipset.FamilyName(name, c.setFamily()) }

// excluded reports whether a is in ExcludeCIDRs.
func (c Config) excluded(a netip.Addr) bool {
	for _, p := range c.ExcludeCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (c Config) inServiceCIDRs(a netip.Addr) bool {
	for _, p := range c.ServiceCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
