// Package ipvs is kproxy's IPVS proxy mode: upstream kube-proxy's IPVS layout (one virtual
// server per service IP:port:protocol, the service addresses bound to the dummy device
// kube-ipvs0, kube-proxy's ipsets, and a small fixed set of iptables chains matching them),
// computed by a pure function and reconciled against the kernel by difference.
//
// # Layout
//
//   - plan.go: ComputePlan (pure) turns services, endpoints and the node into a Plan:
//     virtual servers (scheduler, ClientIP affinity as persistence with the service's
//     timeout, FlagSourceHash for mh) with their real servers (weight 1): the ClusterIP uses
//     Categorized.Internal, node ports (one virtual server per Config.NodeIPs address),
//     externalIPs and load-balancer IPs use Categorized.External; the addresses to bind on
//     kube-ipvs0 (ClusterIPs, externalIPs, load-balancer IPs that are not node IPs); the
//     entries of every kube-proxy set (ipset.KubeSets); and the rules (rules.go).
//   - rules.go: renderRules is upstream's writeIptablesRules, rule for rule and comment for
//     comment (KUBE-SERVICES, KUBE-POSTROUTING with the KUBE-LOOP-BACK hairpin masquerade,
//     KUBE-MARK-MASQ, KUBE-NODE-PORT, KUBE-LOAD-BALANCER, KUBE-FORWARD, KUBE-PROXY-FIREWALL,
//     KUBE-SOURCE-RANGES-FIREWALL, KUBE-IPVS-FILTER, KUBE-IPVS-OUT-FILTER) and the jumps
//     from the built-in chains, plus shortcut.go's two KPROXY-EXT-* chains (below). Golden
//     files in testdata/ (go test -update); trace_test.go runs packets through a plan.
//   - cleanup.go: kproxy --cleanup's IPVS part (owned virtual servers, sets, kube-ipvs0).
//   - interface.go: the writers, IPVS and Links; kernel_linux.go implements both (Kernel,
//     moby/ipvs and netlink sockets bound to one namespace path); fake.go has stateful fakes.
//   - proxier.go, reconcile.go, iptables.go: the Backend.
//
// # externalTrafficPolicy=Local
//
// IPVS picks the real server by destination only, and upstream's IPVS mode gives a Local
// service's node-port, externalIP and load-balancer virtual servers the local endpoints
// only. So a pod or the node itself that talks to the load-balancer IP or externalIP on a
// node without a local endpoint is refused, unlike in iptables mode (kubernetes #71596,
// #93456, #75262). kproxy keeps upstream's virtual servers for traffic from outside (local
// endpoints, client address kept) and short-circuits traffic from inside the way upstream's
// iptables mode does (KUBE-EXT-* → KUBE-SVC-*): in the nat table, before anything else in
// KUBE-SERVICES, pod traffic (the local detector) and node traffic (--src-type LOCAL,
// marked for masquerade as upstream does) to one of those addresses is DNATed to the
// service's ClusterIP and port, whose virtual server has every endpoint. IPVS runs after
// nat (LOCAL_IN at NF_IP_PRI_NAT_SRC-1 for packets from pods, LOCAL_OUT at
// NF_IP_PRI_NAT_DST+2 for the node's own), so it sees the ClusterIP; with
// net.ipv4.vs.conntrack=1 the reply is un-NATed back to the address the client dialled.
// shortcut.go writes it: gates on the -LOCAL sets in KUBE-SERVICES, the source check in
// KPROXY-EXT-SHORTCUT, one DNAT per address in KPROXY-EXT-TO-CLUSTERIP. Sources that
// loadBalancerSourceRanges refuse (and the node, when the ranges leave its IP out) are not
// short-circuited, so the filter rules still drop them on the address's own path (after
// DNAT the filter table would only see the ClusterIP). Chosen over a firewall-mark virtual
// server per address (IPVS matches the whole skb mark, which KUBE-MARK-MASQ and other
// programs also set): one DNAT rule per address, no extra IPVS object. With
// internalTrafficPolicy=Local too, the short-circuit follows it (the ClusterIP's virtual
// server holds local endpoints only), where upstream's iptables mode uses every endpoint.
// With no local detector (no --cluster-cidr), pod traffic is external traffic, as upstream.
//
// A service with no endpoints keeps its virtual server with no real server: the kernel
// answers its traffic with ICMP port unreachable (ip_vs_leave), so clients see "connection
// refused" at once, as with upstream. KUBE-IPVS-FILTER rejects new connections to a
// kube-ipvs0 address on a port that is not a service port.
//
// # A sync (Proxier.Apply)
//
// The plan is computed by a PlanCache: the plan of each service port (a fragment) is kept
// between syncs and recomputed only for the services the snapshot names as changed (all of
// them in a full sync), then the fragments are merged in name order; when the recomputed
// fragments differ only in real servers (an endpoint change), the last plan is patched
// instead and names the virtual servers that changed (Plan.delta).
//
// A sync that checks the kernel (every full sync, and a partial one once
// Config.KernelCheckInterval, half kproxy's sync period, has passed since the last check,
// so that what was changed by hand comes back within a sync period, as with upstream, which
// lists everything every sync):
//
//  1. ensure kube-ipvs0 (created down, with the dummy driver's NOARP, as upstream) and list
//     its addresses.
//  2. ipset.Reconcile of every set (entries added before others are deleted).
//  3. List the virtual servers (one dump) and, when there are any, the real servers of all
//     of them in one read of /proc/net/ip_vs (IPVS.ListAllRealServers; where that fails, or
//     misses a virtual server, one dump per virtual server); add the missing virtual
//     servers, update those whose scheduler, flags or timeout differ, and add, re-weight or
//     drain the difference in real servers.
//  4. Bind the missing addresses to kube-ipvs0.
//  5. iptables: one iptables-save per table, compare the owned chains (in iptables-save's
//     canonical form) with the plan, one iptables-restore --noflush of the chains that
//     differ and of the missing jumps from the built-in chains.
//  6. Unbind stale kube-ipvs0 addresses; delete stale virtual servers kproxy owns.
//
// Any other (partial) sync lists nothing: it compares the plan with the plan the last
// successful sync wrote and writes the difference in the same order (ipset.ReconcileFrom for
// the sets; virtual servers and addresses added and removed; the chains only when their
// rules changed), listing the real servers only of the virtual servers of changed services,
// of those whose planned real servers changed and of those with draining real servers; for a
// patched plan it looks only at the delta's and the draining virtual servers. A write the
// kernel refuses fails the sync, and the next one is full.
//
// Graceful termination (upstream's graceful_termination.go, but stateless): a real server
// no longer wanted (endpoint removed, or terminating while ready ones exist) is deleted at
// once when it has no active and no inactive connection, or is UDP/SCTP; otherwise it gets
// weight 0 and is looked at again every sync until its connections reach 0. A real server
// wanted again is set back to weight 1. The weight-0 real servers in the kernel are the
// state, so a restart loses nothing.
//
// Ownership: kproxy deletes a virtual server no service wants only when it is of the
// proxier's family, outside Config.ExcludeCIDRs, and on an address bound to kube-ipvs0 (at
// the start of the sync), in Config.ServiceCIDRs, planned in an earlier sync, or named by
// kube-proxy's sets as they were before the sync changed them (evidence.go: a service's
// ip,proto:port in KUBE-CLUSTER-IP, KUBE-EXTERNAL-IP(-LOCAL), KUBE-LOAD-BALANCER,
// KUBE-NODE-PORT-SCTP-HASH; a node port of KUBE-NODE-PORT-TCP/-UDP on a node IP). Another
// program's virtual server on a node IP and a port that is no node port is left alone. It
// removes kube-ipvs0 addresses no service wants, except excluded ones. Sets it never
// destroys; chains it only rewrites (its own names).
//
// A restart with nothing changed writes nothing: every step compares first. What scales: a
// sync that checks the kernel costs one IPVS dump plus one real-server dump per virtual
// server, one ipset listing per set, two iptables-save and one kube-ipvs0 address dump; a
// partial sync costs the real-server dumps of the changed services and no listing; writes are
// one netlink message per changed object and at most one iptables-restore. The Go work of a
// partial sync is O(N) map look-ups and a copy of the virtual-server list when the plan is
// patched (2.5 ms native for one endpoint change among 10,000 services,
// BenchmarkPartialSyncOneChange10k), and O(N) cheap comparisons and sorts after a merge.
//
// Imports: endpoints (the model), ipset and iptables (kernel libraries), moby/ipvs and
// vishvananda/netlink in kernel_linux.go only. It must not import proxier or another mode.
package ipvs
