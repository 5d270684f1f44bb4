package harness

import (
	"net/netip"
	"strconv"
)

// External is the external client namespace, <prefix>-ext: a host outside the cluster on the
// fabric bridge, with no forwarding and no default route.
//
//	netns p-ext  eth0 192.0.2.100/24 noprefixroute (only so that nodes can route to it),
//	             198.51.100.10/32 and 198.51.100.11/32;
//	             192.0.2.0/24 dev eth0 src 198.51.100.10  (node IPs, NodePorts, healthCheckNodePorts
//	                                                       are reached from 198.51.100.10)
//	             198.51.100.(128+16i)/28 via node i src 198.51.100.10  (LB ingress IPs, i ≤ 7)
//	             203.0.113.(16i)/28 via node i src 198.51.100.10       (externalIPs, i ≤ 15)
//	every node   198.51.100.0/24 via 192.0.2.100           (replies to external clients)
//	             203.0.113.0/24 via 192.0.2.100            (the node's own first route lookup
//	                                                       for an externalIP; ext does not forward)
//	             (routed nodes: both via the router, see topology.go)
//
// So a packet from ext to an LB IP or externalIP arrives at node i's eth0 with the client's
// source 198.51.100.10 kept, as from a router; backends anywhere reply through their node,
// which routes 198.51.100.0/24 back to ext. An LB IP the proxy does not capture (ipMode Proxy)
// is forwarded by node i back to ext, which drops it: the client times out.
type External struct {
	Name     string
	LinkIP   netip.Addr // 192.0.2.100, on the fabric
	ClientIP netip.Addr // 198.51.100.10, the source of its requests
	OtherIP  netip.Addr // 198.51.100.11, a second source (--src)
	echo     *process   // StartExternalEcho
}

func planExternal(prefix string) *External {
	return &External{Name: ExternalNetns(prefix), LinkIP: ExternalLinkIP,
		ClientIP: ExternalClientIP, OtherIP: ExternalClientIP2}
}

// ensureExternal creates the external namespace on the fabric bridge (whose subnet is
// subnet) and its routes to the nodes' LB and externalIP blocks; in the routed topology, the
// routed subnet and the routed nodes' blocks go via the router.
func ensureExternal(fab string, e *External, nodes []*Node, subnet netip.Prefix) error {
	src := e.ClientIP.String()
	cmds := [][]string{
		{"netns", "add", e.Name},
		{"-n", e.Name, "link", "set", "lo", "up"},
		{"-n", fab, "link", "add", "veth-ext", "type", "veth", "peer", "name", "eth0", "netns", e.Name},
		{"-n", fab, "link", "set", "veth-ext", "master", fabBridge, "up"},
		{"-n", e.Name, "addr", "add", withLen(e.LinkIP, subnet), "dev", "eth0", "noprefixroute"},
		{"-n", e.Name, "addr", "add", e.ClientIP.String() + "/32", "dev", "eth0"},
		{"-n", e.Name, "addr", "add", e.OtherIP.String() + "/32", "dev", "eth0"},
		{"-n", e.Name, "link", "set", "eth0", "up"},
		{"-n", e.Name, "route", "add", subnet.String(), "dev", "eth0", "src", src},
	}
	if subnet != FabricCIDR {
		cmds = append(cmds, []string{"-n", e.Name, "route", "add", RoutedCIDR.String(), "via", RouterFabricIP.String(), "src", src})
	}
	for _, n := range nodes {
		gw := n.IP
		if n.Routed {
			gw = RouterFabricIP
		}
		if n.Index <= maxLBNodes {
			cmds = append(cmds, []string{"-n", e.Name, "route", "add", lbBlock(n.Index).String(), "via", gw.String(), "src", src})
		}
		if n.Index <= maxExternalIPNodes {
			cmds = append(cmds, []string{"-n", e.Name, "route", "add", extBlock(n.Index).String(), "via", gw.String(), "src", src})
		}
	}
	return ipBatch(cmds...)
}

// NodePortAddr is "nodeIP:port" of node n.
func (n *Node) NodePortAddr(port int32) string { return n.IP.String() + ":" + strconv.Itoa(int(port)) }
