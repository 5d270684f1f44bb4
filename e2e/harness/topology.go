package harness

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Node is one node network namespace.
type Node struct {
	Index int    // 1-based
	Name  string // the netns name and the Node object's name
	IP    netip.Addr
	// Subnet is the underlay subnet of the node's eth0: the fabric bridge's (FabricCIDR, or
	// FabricSplitCIDR in the routed topology) or, for a routed node, RoutedCIDR.
	Subnet netip.Prefix
	// Routed: the node hangs off the router's bridge, behind the router namespace.
	Routed  bool
	PodCIDR netip.Prefix
	Zone    string
	Pods    []*Pod
	proxy   *process
}

// Pod is one pod network namespace on a node, running the echo server.
type Pod struct {
	Name string // the netns name and the echo server's --name
	Node *Node
	IP   netip.Addr // with Options.CNIBin, the address host-local gave it
	echo *process
	cni  *cniAttachment // set while the CNI plugins have it attached (Options.CNIBin)
}

// The routed topology (Options.RoutedNodes > 0) splits the node underlay 192.0.2.0/24 in two
// subnets joined by a router namespace p-rtr, so that some nodes share no L2 subnet with the
// others:
//
//	192.0.2.0/25    fabric bridge kpbr0: fabric .1, nodes .(10+i), external .100, router .126
//	192.0.2.128/25  bridge kpbr1 in p-rtr: router .129, routed nodes .(138+i)
//
// The router forwards between them (ip_forward=1; it has no default route either). The
// fabric, the external namespace and the nodes on kpbr0 route 192.0.2.128/25 via .126; a
// routed node routes 192.0.2.0/25, the service CIDR and the external blocks via .129, and the
// router routes the external client block to .100 and each routed node's LB and externalIP
// blocks to that node. Nothing routes pod subnets: kproxy's datapath does.
var (
	FabricSplitCIDR = netip.MustParsePrefix("192.0.2.0/25")
	RoutedCIDR      = netip.MustParsePrefix("192.0.2.128/25")
	RouterFabricIP  = netip.MustParseAddr("192.0.2.126") // the router's eth0, on kpbr0
	RouterIP        = netip.MustParseAddr("192.0.2.129") // the router's kpbr1: the routed nodes' gateway
)

// routedBridge is the router's bridge that the routed nodes hang off.
const routedBridge = "kpbr1"

// RouterNetns is the name of the router namespace of the routed topology.
func RouterNetns(prefix string) string { return prefix + "-rtr" }

func routedNodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(138 + i)}) }

// fabricSubnet is the subnet of the fabric bridge: all of FabricCIDR, or its lower half when
// routed nodes take the upper one.
func fabricSubnet(o Options) netip.Prefix {
	if o.RoutedNodes > 0 {
		return FabricSplitCIDR
	}
	return FabricCIDR
}

// plan computes the nodes and pods of a sandbox (pure): the last o.RoutedNodes nodes are
// routed.
func plan(o Options) []*Node {
	var out []*Node
	for i := 1; i <= o.Nodes; i++ {
		out = append(out, planNode(o, i, i > o.Nodes-o.RoutedNodes))
	}
	return out
}

// planNode computes node i with o.PodsPerNode pods. Pods the CNI plugins attach
// (o.CNIBin) get their address from host-local, not from the plan.
func planNode(o Options, i int, routed bool) *Node {
	n := &Node{Index: i, Name: nodeName(o.Prefix, i), IP: nodeIP(i), Subnet: fabricSubnet(o),
		PodCIDR: podCIDR(i), Zone: zoneName(i)}
	if routed {
		n.IP, n.Subnet, n.Routed = routedNodeIP(i), RoutedCIDR, true
	}
	for j := 1; j <= o.PodsPerNode; j++ {
		p := &Pod{Name: podName(o.Prefix, i, j), Node: n}
		if o.CNIBin == "" {
			p.IP = podIP(i, j)
		}
		n.Pods = append(n.Pods, p)
	}
	return n
}

// ensureFabric creates the fabric namespace: bridge kpbr0 with 192.0.2.1 on subnet and an
// unreachable route for the service CIDR (so a stray ClusterIP packet dies here); in the
// routed topology, a route to the routed subnet via the router.
func ensureFabric(fab string, subnet netip.Prefix) error {
	cmds := [][]string{
		{"netns", "add", fab},
		{"-n", fab, "link", "set", "lo", "up"},
		{"-n", fab, "link", "add", fabBridge, "type", "bridge"},
		{"-n", fab, "addr", "add", withLen(FabricIP, subnet), "dev", fabBridge},
		{"-n", fab, "link", "set", fabBridge, "up"},
		{"-n", fab, "route", "add", "unreachable", ServiceCIDR.String()},
	}
	if subnet != FabricCIDR {
		cmds = append(cmds, []string{"-n", fab, "route", "add", RoutedCIDR.String(), "via", RouterFabricIP.String()})
	}
	return ipBatch(cmds...)
}

// ensureRouter creates the router namespace of the routed topology: eth0 on the fabric
// bridge, bridge kpbr1 for the routed nodes, forwarding on, and its route to the external
// namespace's client block.
func ensureRouter(fab, rtr string) error {
	if err := ipBatch(
		[]string{"netns", "add", rtr},
		[]string{"-n", rtr, "link", "set", "lo", "up"},
		[]string{"-n", fab, "link", "add", "veth-rtr", "type", "veth", "peer", "name", "eth0", "netns", rtr},
		[]string{"-n", fab, "link", "set", "veth-rtr", "master", fabBridge, "up"},
		[]string{"-n", rtr, "addr", "add", withLen(RouterFabricIP, FabricSplitCIDR), "dev", "eth0"},
		[]string{"-n", rtr, "link", "set", "eth0", "up"},
		[]string{"-n", rtr, "link", "add", routedBridge, "type", "bridge"},
		[]string{"-n", rtr, "addr", "add", withLen(RouterIP, RoutedCIDR), "dev", routedBridge},
		[]string{"-n", rtr, "link", "set", routedBridge, "up"},
		[]string{"-n", rtr, "route", "add", ExternalClientCIDR.String(), "via", ExternalLinkIP.String()},
	); err != nil {
		return err
	}
	return writeSysctl(rtr, "net/ipv4/ip_forward", "1")
}

// routerNodeRoutes are the router's routes to routed node n's LB and externalIP blocks.
func routerNodeRoutes(rtr, verb string, n *Node) [][]string {
	var cmds [][]string
	if n.Index <= maxLBNodes {
		cmds = append(cmds, []string{"-n", rtr, "route", verb, lbBlock(n.Index).String(), "via", n.IP.String()})
	}
	if n.Index <= maxExternalIPNodes {
		cmds = append(cmds, []string{"-n", rtr, "route", verb, extBlock(n.Index).String(), "via", n.IP.String()})
	}
	return cmds
}

// podRoutes says how nodes reach each other's pod subnets.
type podRoutes int

const (
	// staticPodRoutes: the harness adds a route per peer pod subnet on every node (and on the
	// fabric): no datapath in the proxy.
	staticPodRoutes podRoutes = iota
	// datapathPodRoutes: no route between pod subnets; the proxy's --datapath programs them.
	datapathPodRoutes
)

// ensureNode creates node n's namespace hanging off the fabric bridge (or, routed, off the
// router's), with its pod bridge (unless the CNI plugins make it), forwarding on, and the
// routes of the plan (see doc.go and the routed topology above).
func (c *Cluster) ensureNode(n *Node) error {
	host := "veth-n" + strconv.Itoa(n.Index)
	attach, bridge := c.fab, fabBridge
	if n.Routed {
		attach, bridge = c.rtr, routedBridge
	}
	cmds := [][]string{
		{"netns", "add", n.Name},
		{"-n", n.Name, "link", "set", "lo", "up"},
		{"-n", attach, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", n.Name},
		{"-n", attach, "link", "set", host, "master", bridge, "up"},
		{"-n", n.Name, "addr", "add", withLen(n.IP, n.Subnet), "dev", "eth0"},
		{"-n", n.Name, "link", "set", "eth0", "up"},
	}
	if c.Opts.CNIBin == "" {
		cmds = append(cmds,
			[]string{"-n", n.Name, "link", "add", nodeBridge, "type", "bridge"},
			[]string{"-n", n.Name, "addr", "add", withLen(podGateway(n.Index), n.PodCIDR), "dev", nodeBridge},
			[]string{"-n", n.Name, "link", "set", nodeBridge, "up"})
	}
	cmds = append(cmds, c.nodeRoutes(n)...)
	if n.Routed {
		cmds = append(cmds, routerNodeRoutes(c.rtr, "add", n)...)
	}
	if c.podRoutes() == staticPodRoutes {
		cmds = append(cmds, []string{"-n", c.fab, "route", "add", n.PodCIDR.String(), "via", n.IP.String()})
		for _, p := range c.Nodes {
			if p != n {
				cmds = append(cmds, []string{"-n", n.Name, "route", "add", p.PodCIDR.String(), "via", p.IP.String()})
			}
		}
	}
	if err := ipBatch(cmds...); err != nil {
		return err
	}
	for key, val := range map[string]string{
		"net/ipv4/ip_forward":                 "1",
		"net/bridge/bridge-nf-call-iptables":  "1", // pod → ClusterIP → pod on the same bridge
		"net/bridge/bridge-nf-call-ip6tables": "1",
	} {
		if err := writeSysctl(n.Name, key, val); err != nil {
			return fmt.Errorf("node %s: sysctl %s: %w", n.Name, key, err)
		}
	}
	return nil
}

// nodeRoutes are node n's routes beyond its own subnet: the service CIDR (node-originated
// ClusterIP traffic needs a route for its first lookup), the external namespace's blocks
// and, in the routed topology, the other half of the underlay.
func (c *Cluster) nodeRoutes(n *Node) [][]string {
	via := func(dst netip.Prefix, gw netip.Addr) []string {
		return []string{"-n", n.Name, "route", "add", dst.String(), "via", gw.String()}
	}
	if n.Routed {
		return [][]string{via(FabricSplitCIDR, RouterIP), via(ServiceCIDR, RouterIP),
			via(ExternalClientCIDR, RouterIP), via(ExternalIPCIDR, RouterIP)}
	}
	out := [][]string{via(ServiceCIDR, FabricIP),
		via(ExternalClientCIDR, ExternalLinkIP), via(ExternalIPCIDR, ExternalLinkIP)}
	if c.Opts.RoutedNodes > 0 {
		out = append(out, via(RoutedCIDR, RouterFabricIP))
	}
	return out
}

// ensurePod creates a pod namespace with a veth into its node's cni0 and a default route via
// the node.
func ensurePod(p *Pod, j int) error {
	host := "vp" + strconv.Itoa(j)
	n := p.Node
	return ipBatch(
		[]string{"netns", "add", p.Name},
		[]string{"-n", p.Name, "link", "set", "lo", "up"},
		[]string{"-n", n.Name, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.Name},
		[]string{"-n", n.Name, "link", "set", host, "master", nodeBridge, "up"},
		// Hairpin, as the CNI bridge plugin's hairpinMode: a pod reaching itself through a
		// service leaves and re-enters cni0 on the same port.
		[]string{"-n", n.Name, "link", "set", host, "type", "bridge_slave", "hairpin", "on"},
		[]string{"-n", p.Name, "addr", "add", withLen(p.IP, n.PodCIDR), "dev", "eth0"},
		[]string{"-n", p.Name, "link", "set", "eth0", "up"},
		[]string{"-n", p.Name, "route", "add", "default", "via", podGateway(n.Index).String()},
	)
}

// stopEcho stops pod p's echo server, if it runs.
func (p *Pod) stopEcho() {
	if p.echo != nil {
		killAll([]int{p.echo.cmd.Process.Pid}, 2*time.Second)
		<-p.echo.done
		p.echo = nil
	}
}
