// Package datapath is kproxy's embedded pod network, the flannel model: every node owns
// its Node.spec.podCIDR(s); pods hang off a `cni0` bridge by veth pairs (made by the
// upstream CNI bridge + host-local plugins from the conflist package cni renders); nodes reach
// each other's pod subnets over one of the backends below. Pod traffic leaving the cluster
// CIDR is masqueraded to the node IP.
//
// # What it owns, what it must not import
//
// The pure desired state (ComputePlan: Config, Self and the Node list in, Plan out), the
// Writer interface with Handle (netlink, bound to one network namespace by path) and Fake
// (in memory, the kernel's errnos), and Reconciler, which diffs a Plan against a Writer.
// NodeFromAPI converts a core/v1 Node. The pure parts and the writers import no other
// kproxy package and no client-go; Plan.Masquerade holds the egress rules as iptables
// arguments.
//
// Agent (agent.go) is the one part that talks to the world, the daemon's entry point for
// --datapath: a Node informer (client-go) → NodeFromAPI → ComputePlan → Reconciler.Sync,
// driven by a proxier.Runner (at most once a second, at least once per sync period, backoff
// on failure); each sync also patches this node's kproxy.io/ annotations (only when they
// differ), writes the conflist through package cni, and restores the egress masquerade chain
// through an iptables.Interface. Node updates that change nothing the datapath reads (status
// heartbeats) request no sync. It logs each skipped peer and each bad Node once, and reports
// readiness (ErrNoPodCIDR until the node has a pod subnet) through Ready for /healthz.
//
// # The datapath
//
// VXLAN (the default overlay). Each node has one VXLAN device `kproxy.<VNI>` (kproxy.1: VNI 1,
// UDP port 8472, learning off, local = the node IP, MTU = underlay MTU - 50) whose address is
// the first address of the node's pod subnet as a host prefix (100.64.1.0/32 for 100.64.1.0/24:
// the node's VTEP address, also the source of node-originated traffic to remote pods). Its MAC
// is derived from the node IP (0e:6b:<IPv4>), so it survives the device being recreated, and
// is published with the node IP as the annotations kproxy.io/vtep-mac and kproxy.io/public-ip.
// For each peer, exactly three kernel objects:
//
//	ip route add 100.64.2.0/24 via 100.64.2.0 dev kproxy.1 onlink proto 107    (route)
//	ip neigh replace 100.64.2.0 lladdr 0e:6b:c0:00:02:0c dev kproxy.1 nud permanent   (L3 miss → MAC)
//	bridge fdb replace 0e:6b:c0:00:02:0c dev kproxy.1 dst 192.0.2.12 self permanent   (L2 miss → node)
//
// A packet to a remote pod takes the route to the peer's VTEP address "onlink" (no connected
// subnet needed), the permanent neighbour gives the inner destination MAC, the FDB entry for
// that MAC the outer destination IP; the kernel encapsulates. The receiving node's device
// decapsulates (its own MAC) and routes to cni0. No ARP or FDB miss ever reaches user space
// (flannel's early L3MISS/L2MISS design) and nothing is learnt: the state is exactly one
// route, one neighbour and one FDB entry per peer (one route and one neighbour per peer pod
// subnet with dual-stack pods), so it scales linearly with the number of nodes, is written
// once per peer change, and never depends on multicast or flooding.
//
// Direct routing (vxlan with DirectRouting). A peer whose node IP is inside this node's
// underlay subnet gets only a plain route via its node IP (no encapsulation, full MTU on the
// wire, but pods keep the VXLAN MTU so that one MTU fits every peer); others go over VXLAN.
//
// host-gw. A route per peer pod subnet via the peer's node IP; no device. A peer not on this
// node's underlay subnet cannot be reached that way: it is listed in Plan.Skipped with the
// reason (the caller logs it once per peer) instead of a route the kernel would refuse or a
// silent blackhole.
//
// ipip (Calico's IPIP mode). One IPIP device `kproxy.ipip` (local = node IP, no remote,
// MTU - 20) and per peer `ip route add 100.64.2.0/24 via 192.0.2.12 dev kproxy.ipip onlink
// proto 107`: with no fixed remote the tunnel takes the outer destination from the route's
// gateway. IPv4 only.
//
// # Reconcile, not react
//
// Flannel programs the kernel on each Node event. kproxy recomputes the whole Plan and
// Reconciler.Sync diffs it against the kernel (devices named kproxy.*, routes with protocol
// 107 in the main table, permanent neighbour and FDB entries on the VXLAN device): it adds what
// is missing, replaces what differs and deletes what is stale, so an entry deleted by hand
// returns on the next sync and a departed node's entries go. It never touches what it did not
// create: other routes, even to a peer's pod subnet, make AddRoute fail with EEXIST and the
// sync report it. A peer claiming a pod subnet that overlaps this node's or an earlier peer's,
// a node IP or VTEP MAC of another node, or missing what its backend needs, is skipped.
//
// Order in one sync: the device; delete stale routes; set neighbours and FDB entries and
// delete stale ones; replace and add routes. No route ever points at a VTEP the kernel cannot
// resolve. Cost: one dump each of links, routes, neighbours and FDB, then one netlink message
// per changed object; a sync with nothing changed writes nothing.
//
// # MTU
//
// Pods and cni0 get the underlay MTU less the encapsulation: VXLAN 50 bytes over IPv4 (inner
// Ethernet 14 + VXLAN 8 + UDP 8 + IPv4 20), 70 over IPv6, IPIP 20, host-gw none. So a
// full-size TCP segment from a pod, encapsulated, still fits the underlay without
// fragmentation (VXLAN sets DF on the outer header only when asked; kproxy relies on the MTU).
package datapath
