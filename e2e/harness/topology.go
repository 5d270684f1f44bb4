package harness

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Node is one node network namespace.
type Node struct {
	Index   int    // 1-based
	Name    string // the netns name and the Node object's name
	IP      netip.Addr
	PodCIDR netip.Prefix
	Zone    string
	Pods    []*Pod
	proxy   *process
}

// Pod is one pod network namespace on a node, running the echo server.
type Pod struct {
	Name string // the netns name and the echo server's --name
	Node *Node
	IP   netip.Addr
	echo *process
}

// plan computes the nodes and pods of a sandbox (pure).
func plan(prefix string, nodes, podsPerNode int) []*Node {
	var out []*Node
	for i := 1; i <= nodes; i++ {
		n := &Node{Index: i, Name: nodeName(prefix, i), IP: nodeIP(i), PodCIDR: podCIDR(i), Zone: zoneName(i)}
		for j := 1; j <= podsPerNode; j++ {
			n.Pods = append(n.Pods, &Pod{Name: podName(prefix, i, j), Node: n, IP: podIP(i, j)})
		}
		out = append(out, n)
	}
	return out
}

// ensureFabric creates the fabric namespace: bridge kpbr0 with 192.0.2.1/24 and an
// unreachable route for the service CIDR (so a stray ClusterIP packet dies here).
func ensureFabric(fab string) error {
	return ipBatch(
		[]string{"netns", "add", fab},
		[]string{"-n", fab, "link", "set", "lo", "up"},
		[]string{"-n", fab, "link", "add", fabBridge, "type", "bridge"},
		[]string{"-n", fab, "addr", "add", withLen(FabricIP, FabricCIDR), "dev", fabBridge},
		[]string{"-n", fab, "link", "set", fabBridge, "up"},
		[]string{"-n", fab, "route", "add", "unreachable", ServiceCIDR.String()},
	)
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

// ensureNode creates a node namespace hanging off the fabric bridge, with its pod bridge,
// forwarding on, and the routes of the plan (see doc.go). peers are the other nodes.
func ensureNode(fab string, n *Node, peers []*Node, routes podRoutes) error {
	host := "veth-n" + strconv.Itoa(n.Index)
	cmds := [][]string{
		{"netns", "add", n.Name},
		{"-n", n.Name, "link", "set", "lo", "up"},
		{"-n", fab, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", n.Name},
		{"-n", fab, "link", "set", host, "master", fabBridge, "up"},
		{"-n", n.Name, "addr", "add", withLen(n.IP, FabricCIDR), "dev", "eth0"},
		{"-n", n.Name, "link", "set", "eth0", "up"},
		{"-n", n.Name, "link", "add", nodeBridge, "type", "bridge"},
		{"-n", n.Name, "addr", "add", withLen(podGateway(n.Index), n.PodCIDR), "dev", nodeBridge},
		{"-n", n.Name, "link", "set", nodeBridge, "up"},
		{"-n", n.Name, "route", "add", ServiceCIDR.String(), "via", FabricIP.String()},
	}
	cmds = append(cmds, externalRoutes(n)...)
	if routes == staticPodRoutes {
		cmds = append(cmds, []string{"-n", fab, "route", "add", n.PodCIDR.String(), "via", n.IP.String()})
		for _, p := range peers {
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
