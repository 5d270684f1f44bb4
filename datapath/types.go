package datapath

import (
	"fmt"
	"net"
	"net/netip"
)

// Backend selects how pod traffic crosses between nodes.
type Backend string

const (
	// BackendNone programs nothing between nodes (kproxy stays a pure service proxy).
	BackendNone Backend = "none"
	// BackendVXLAN encapsulates pod traffic in VXLAN (flannel's vxlan backend).
	BackendVXLAN Backend = "vxlan"
	// BackendHostGW routes each peer's pod subnet via the peer's node IP (flannel's host-gw).
	BackendHostGW Backend = "host-gw"
	// BackendIPIP encapsulates pod traffic in IPv4-in-IPv4 (Calico's IPIP mode).
	BackendIPIP Backend = "ipip"
)

// Defaults of Config.
const (
	DefaultVNI  = 1
	DefaultPort = 8472
	DefaultMTU  = 1500
	// RouteProtocol marks every route kproxy's datapath adds (`ip route ... proto 107`); the
	// reconciler lists and deletes only routes with this protocol. 107 is unused in
	// iproute2's rt_protos (Calico uses 80, BIRD 12, Zebra 11).
	RouteProtocol = 107
	// DevicePrefix starts the name of every device the datapath owns.
	DevicePrefix = "kproxy."
	// IPIPDeviceName is the IPIP tunnel device (Calico calls its device tunl0; the kernel's
	// fallback tunl0 is left alone).
	IPIPDeviceName = "kproxy.ipip"
	// Encapsulation overheads: VXLAN over IPv4 is 14 (inner Ethernet) + 8 (VXLAN) + 8 (UDP)
	// + 20 (outer IPv4); over IPv6 the outer header is 40. IPIP adds one IPv4 header.
	vxlanOverhead4 = 50
	vxlanOverhead6 = 70
	ipipOverhead   = 20
)

// Node annotations a node publishes for its peers.
const (
	// AnnotationVTEPMAC is the MAC of the node's VXLAN device.
	AnnotationVTEPMAC = "kproxy.io/vtep-mac"
	// AnnotationPublicIP is the underlay IP peers send to, overriding the InternalIP.
	AnnotationPublicIP = "kproxy.io/public-ip"
)

// Config is the datapath's configuration, the same on every node.
type Config struct {
	Backend Backend
	// DirectRouting (vxlan only): peers on this node's L2 subnet get a plain route via their
	// node IP instead of going through VXLAN.
	DirectRouting bool
	// VNI and Port of the VXLAN device (0: DefaultVNI, DefaultPort).
	VNI  int
	Port int
	// ClusterCIDRs: the pod address space of the whole cluster (one per family); traffic from
	// it to anything outside it and outside the node IPs is masqueraded.
	ClusterCIDRs []netip.Prefix
	// UnderlayMTU: MTU of the node's underlay interface (0: DefaultMTU).
	UnderlayMTU int
}

// MAC is an Ethernet address, comparable so that it can be a map key.
type MAC [6]byte

// ParseMAC parses "0e:6b:c0:00:02:0b".
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return MAC{}, err
	}
	if len(hw) != 6 {
		return MAC{}, fmt.Errorf("MAC %q: not 6 bytes", s)
	}
	return MAC(hw), nil
}

// MACFrom converts a net.HardwareAddr; ok is false unless it has 6 bytes.
func MACFrom(hw net.HardwareAddr) (MAC, bool) {
	if len(hw) != 6 {
		return MAC{}, false
	}
	return MAC(hw), true
}

func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// HardwareAddr returns m as a net.HardwareAddr.
func (m MAC) HardwareAddr() net.HardwareAddr { return net.HardwareAddr(m[:]) }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

// Node is what the datapath needs to know about one node, as plain values.
type Node struct {
	Name     string
	PodCIDRs []netip.Prefix
	// IP is the underlay address peers send to (kproxy.io/public-ip, else the InternalIP).
	IP netip.Addr
	// VTEPMAC is the MAC of the node's VXLAN device (kproxy.io/vtep-mac); zero if unknown.
	VTEPMAC MAC
}

// Self is the node the plan is computed for.
type Self struct {
	Node
	// Underlay is the node IP with the prefix length of its interface (192.0.2.11/24): peers
	// whose IP is inside it are on the same L2 subnet (host-gw, direct routing).
	Underlay netip.Prefix
}

// DeviceKind is the type of a tunnel device.
type DeviceKind string

// Device kinds.
const (
	KindVXLAN DeviceKind = "vxlan"
	KindIPIP  DeviceKind = "ipip"
)

// Device is the tunnel device of a node. Equivalent to:
//
//	ip link add kproxy.1 address MAC mtu MTU type vxlan id VNI dstport PORT local IP nolearning
//	ip addr add 100.64.1.0/32 dev kproxy.1; ip link set kproxy.1 up
type Device struct {
	Name string
	Kind DeviceKind
	// VNI and Port: vxlan only.
	VNI  int
	Port int
	// Local is the underlay source address (the node IP).
	Local netip.Addr
	MTU   int
	// MAC: vxlan only; derived from the node IP (VTEPMACFor), so that it survives the
	// device being recreated and peers need not relearn it.
	MAC MAC
	// Addrs: the VTEP addresses (the first address of each pod subnet, as a host prefix).
	Addrs []netip.Prefix
}

// Route is one route in the main table, tagged with RouteProtocol. Equivalent to:
//
//	ip route add DST via GW [dev DEV onlink] proto 107
type Route struct {
	Dst netip.Prefix
	Gw  netip.Addr
	// Dev is the output device; empty lets the kernel pick the interface that reaches Gw.
	Dev    string
	OnLink bool
}

func (r Route) String() string {
	s := fmt.Sprintf("%s via %s", r.Dst, r.Gw)
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.OnLink {
		s += " onlink"
	}
	return s
}

// Neigh is a permanent neighbour entry. Equivalent to:
//
//	ip neigh replace IP lladdr MAC dev DEV nud permanent
type Neigh struct {
	Dev string
	IP  netip.Addr
	MAC MAC
}

func (n Neigh) String() string { return fmt.Sprintf("%s lladdr %s dev %s", n.IP, n.MAC, n.Dev) }

// FDB is a permanent forwarding-database entry of a VXLAN device. Equivalent to:
//
//	bridge fdb replace MAC dev DEV dst DST self permanent
type FDB struct {
	Dev string
	MAC MAC
	Dst netip.Addr
}

func (f FDB) String() string { return fmt.Sprintf("%s dev %s dst %s", f.MAC, f.Dev, f.Dst) }

// Skip says why a peer gets no datapath entries (or only some of them).
type Skip struct {
	Node   string
	Reason string
}

// Rule is one iptables rule: the arguments after `-A CHAIN` in table nat.
type Rule struct {
	Chain string
	Args  []string
}
