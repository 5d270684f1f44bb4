package datapath

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Plan is the desired datapath state of one node: everything the reconciler makes the
// kernel hold, and nothing else. Computed by ComputePlan, a pure function.
type Plan struct {
	// Device is the tunnel device; nil for host-gw and none (any kproxy.* device is removed).
	Device *Device
	// Routes, Neighs and FDBs are sorted; one route per peer pod subnet, and for VXLAN peers
	// one neighbour per peer pod subnet and one FDB entry per peer.
	Routes []Route
	Neighs []Neigh
	FDBs   []FDB
	// PodMTU is the MTU of cni0 and the pods' interfaces: the underlay MTU less the
	// encapsulation overhead.
	PodMTU int
	// Masquerade holds the egress masquerade rules of table nat, per family.
	Masquerade Masquerade
	// Skipped lists the peers (or parts of peers) left out, with the reason, sorted by node.
	Skipped []Skip
}

// ErrNoPodCIDR: this node has no pod subnet yet (the controller manager assigns it).
var ErrNoPodCIDR = errors.New("node has no podCIDR")

// VXLANDeviceName is the name of the VXLAN device for a VNI: kproxy.1 for VNI 1.
func VXLANDeviceName(vni int) string { return fmt.Sprintf("%s%d", DevicePrefix, vni) }

// VTEPMACFor is the MAC kproxy gives the VXLAN device of the node with underlay address ip:
// locally administered, unicast, 0e:6b followed by the IPv4 address (collision-free), or 0e
// followed by 40 bits of the SHA-256 of an IPv6 address.
func VTEPMACFor(ip netip.Addr) MAC {
	var m MAC
	m[0] = 0x0e
	if ip.Is4() {
		a := ip.As4()
		m[1] = 0x6b
		copy(m[2:], a[:])
		return m
	}
	a := ip.As16()
	sum := sha256.Sum256(a[:])
	copy(m[1:], sum[:5])
	return m
}

// PodMTU is the MTU pods get with cfg on an underlay of the given family.
func PodMTU(cfg Config, underlay netip.Addr) int {
	mtu := cmp.Or(cfg.UnderlayMTU, DefaultMTU)
	switch cfg.Backend {
	case BackendVXLAN:
		if underlay.Is6() && !underlay.Is4In6() {
			return mtu - vxlanOverhead6
		}
		return mtu - vxlanOverhead4
	case BackendIPIP:
		return mtu - ipipOverhead
	default:
		return mtu
	}
}

// ComputePlan computes the desired datapath of self from the whole node list (self may be in
// it; it is recognised by name). Peers that cannot be reached with cfg are left out and
// listed in Plan.Skipped; an error means this node itself cannot have a datapath yet.
// Peers are taken in name order, so when two claim one pod subnet, node IP or VTEP MAC,
// the first by name keeps it on every node alike.
func ComputePlan(cfg Config, self Self, nodes []Node) (Plan, error) {
	if err := validate(cfg, self); err != nil {
		return Plan{}, err
	}
	cfg.VNI = cmp.Or(cfg.VNI, DefaultVNI)
	cfg.Port = cmp.Or(cfg.Port, DefaultPort)
	p := Plan{PodMTU: PodMTU(cfg, self.IP)}
	p.Device = computeDevice(cfg, self, p.PodMTU)
	pl := planner{cfg: cfg, self: self, plan: &p, seenMAC: map[MAC]string{}, seenIP: map[netip.Addr]string{}}
	pl.claimed = append(pl.claimed, claim{node: self.Name, cidrs: self.PodCIDRs})
	pl.seenIP[self.IP] = self.Name
	for _, n := range sortedPeers(self.Name, nodes) {
		pl.addPeer(n)
	}
	p.Masquerade = computeMasquerade(cfg.ClusterCIDRs, nodeIPs(self, nodes))
	slices.SortFunc(p.Routes, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	slices.SortFunc(p.Neighs, func(a, b Neigh) int { return a.IP.Compare(b.IP) })
	slices.SortFunc(p.FDBs, func(a, b FDB) int { return a.Dst.Compare(b.Dst) })
	return p, nil
}

func validate(cfg Config, self Self) error {
	switch cfg.Backend {
	case BackendNone, BackendVXLAN, BackendHostGW, BackendIPIP:
	default:
		return fmt.Errorf("unknown datapath backend %q (want vxlan, host-gw, ipip or none)", cfg.Backend)
	}
	if cfg.DirectRouting && cfg.Backend != BackendVXLAN {
		return fmt.Errorf("direct routing needs the vxlan backend, not %q", cfg.Backend)
	}
	if cfg.Backend == BackendNone {
		return nil
	}
	if len(self.PodCIDRs) == 0 {
		return fmt.Errorf("node %s: %w", self.Name, ErrNoPodCIDR)
	}
	if !self.IP.IsValid() {
		return fmt.Errorf("node %s has no node IP", self.Name)
	}
	needL2 := cfg.Backend == BackendHostGW || cfg.DirectRouting
	if needL2 && !self.Underlay.Contains(self.IP) {
		return fmt.Errorf("node %s: underlay subnet %s does not hold the node IP %s", self.Name, self.Underlay, self.IP)
	}
	if cfg.Backend == BackendIPIP && !self.IP.Is4() {
		return fmt.Errorf("node %s: ipip needs an IPv4 node IP, not %s", self.Name, self.IP)
	}
	if cfg.VNI < 0 || cfg.VNI > 1<<24-1 || cfg.Port < 0 || cfg.Port > 65535 {
		return fmt.Errorf("vxlan VNI %d or port %d out of range", cfg.VNI, cfg.Port)
	}
	return nil
}

func computeDevice(cfg Config, self Self, mtu int) *Device {
	switch cfg.Backend {
	case BackendVXLAN:
		d := &Device{Name: VXLANDeviceName(cfg.VNI), Kind: KindVXLAN, VNI: cfg.VNI, Port: cfg.Port,
			Local: self.IP, MTU: mtu, MAC: VTEPMACFor(self.IP)}
		for _, c := range self.PodCIDRs {
			d.Addrs = append(d.Addrs, netip.PrefixFrom(c.Masked().Addr(), c.Addr().BitLen()))
		}
		return d
	case BackendIPIP:
		return &Device{Name: IPIPDeviceName, Kind: KindIPIP, Local: self.IP, MTU: mtu}
	default:
		return nil
	}
}

type claim struct {
	node  string
	cidrs []netip.Prefix
}

// planner accumulates one plan; its maps catch peers that claim what another node has.
type planner struct {
	cfg     Config
	self    Self
	plan    *Plan
	claimed []claim
	seenMAC map[MAC]string
	seenIP  map[netip.Addr]string
}

func (pl *planner) skip(node, format string, args ...any) {
	pl.plan.Skipped = append(pl.plan.Skipped, Skip{Node: node, Reason: fmt.Sprintf(format, args...)})
}

func (pl *planner) addPeer(n Node) {
	if pl.cfg.Backend == BackendNone {
		return
	}
	if len(n.PodCIDRs) == 0 {
		pl.skip(n.Name, "no podCIDR")
		return
	}
	if !n.IP.IsValid() {
		pl.skip(n.Name, "no node IP")
		return
	}
	if other, ok := pl.seenIP[n.IP]; ok {
		pl.skip(n.Name, "node IP %s is also node %s's", n.IP, other)
		return
	}
	pl.seenIP[n.IP] = n.Name
	cidrs := pl.unclaimed(n)
	switch pl.cfg.Backend {
	case BackendVXLAN:
		pl.addVXLANPeer(n, cidrs)
	case BackendHostGW:
		pl.addHostGWPeer(n, cidrs)
	case BackendIPIP:
		pl.addIPIPPeer(n, cidrs)
	}
}

// unclaimed returns n's pod subnets that overlap no subnet of this node or of a peer seen
// before it (a route for another node's subnet would steal its traffic).
func (pl *planner) unclaimed(n Node) []netip.Prefix {
	var out []netip.Prefix
next:
	for _, c := range n.PodCIDRs {
		for _, cl := range pl.claimed {
			for _, o := range cl.cidrs {
				if c.Overlaps(o) {
					pl.skip(n.Name, "podCIDR %s overlaps node %s's %s", c, cl.node, o)
					continue next
				}
			}
		}
		out = append(out, c.Masked())
	}
	pl.claimed = append(pl.claimed, claim{node: n.Name, cidrs: out})
	return out
}

func (pl *planner) sameL2(n Node) bool { return pl.self.Underlay.Contains(n.IP) }

func (pl *planner) addVXLANPeer(n Node, cidrs []netip.Prefix) {
	dev := VXLANDeviceName(pl.cfg.VNI)
	var tunnelled []netip.Prefix
	for _, c := range cidrs {
		if pl.cfg.DirectRouting && pl.sameL2(n) && sameFamily(c.Addr(), n.IP) {
			pl.plan.Routes = append(pl.plan.Routes, Route{Dst: c, Gw: n.IP})
			continue
		}
		tunnelled = append(tunnelled, c)
	}
	if len(tunnelled) == 0 {
		return
	}
	switch {
	case n.VTEPMAC.IsZero():
		pl.skip(n.Name, "no %s annotation", AnnotationVTEPMAC)
		return
	case !sameFamily(n.IP, pl.self.IP):
		pl.skip(n.Name, "node IP %s: not the family of this node's VXLAN underlay %s", n.IP, pl.self.IP)
		return
	}
	if other, ok := pl.seenMAC[n.VTEPMAC]; ok {
		pl.skip(n.Name, "VTEP MAC %s is also node %s's", n.VTEPMAC, other)
		return
	}
	pl.seenMAC[n.VTEPMAC] = n.Name
	for _, c := range tunnelled {
		vtep := c.Addr()
		pl.plan.Routes = append(pl.plan.Routes, Route{Dst: c, Gw: vtep, Dev: dev, OnLink: true})
		pl.plan.Neighs = append(pl.plan.Neighs, Neigh{Dev: dev, IP: vtep, MAC: n.VTEPMAC})
	}
	pl.plan.FDBs = append(pl.plan.FDBs, FDB{Dev: dev, MAC: n.VTEPMAC, Dst: n.IP})
}

func (pl *planner) addHostGWPeer(n Node, cidrs []netip.Prefix) {
	if !pl.sameL2(n) {
		pl.skip(n.Name, "node IP %s is not on this node's subnet %s: host-gw needs one L2 subnet (use vxlan or vxlan with direct routing)", n.IP, pl.self.Underlay.Masked())
		return
	}
	for _, c := range cidrs {
		if !sameFamily(c.Addr(), n.IP) {
			pl.skip(n.Name, "podCIDR %s cannot be routed via node IP %s of another family", c, n.IP)
			continue
		}
		pl.plan.Routes = append(pl.plan.Routes, Route{Dst: c, Gw: n.IP})
	}
}

func (pl *planner) addIPIPPeer(n Node, cidrs []netip.Prefix) {
	if !n.IP.Is4() {
		pl.skip(n.Name, "node IP %s: ipip needs IPv4", n.IP)
		return
	}
	for _, c := range cidrs {
		if !c.Addr().Is4() {
			pl.skip(n.Name, "podCIDR %s: ipip carries IPv4 only", c)
			continue
		}
		pl.plan.Routes = append(pl.plan.Routes, Route{Dst: c, Gw: n.IP, Dev: IPIPDeviceName, OnLink: true})
	}
}

// sortedPeers returns the nodes other than self, by name, without duplicate names.
func sortedPeers(self string, nodes []Node) []Node {
	out := make([]Node, 0, len(nodes))
	for _, n := range nodes {
		if n.Name != self {
			out = append(out, n)
		}
	}
	slices.SortStableFunc(out, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
	return slices.CompactFunc(out, func(a, b Node) bool { return a.Name == b.Name })
}

func nodeIPs(self Self, nodes []Node) []netip.Addr {
	ips := []netip.Addr{}
	if self.IP.IsValid() {
		ips = append(ips, self.IP)
	}
	for _, n := range nodes {
		if n.IP.IsValid() {
			ips = append(ips, n.IP)
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return slices.Compact(ips)
}

func sameFamily(a, b netip.Addr) bool { return a.Unmap().Is4() == b.Unmap().Is4() }

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
