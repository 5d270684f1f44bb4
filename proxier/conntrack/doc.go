// Package conntrack removes stale UDP and SCTP conntrack entries: flows to a service address
// whose DNAT target is no longer a serving endpoint of that service. TCP needs no help (a
// reset ends the connection); a UDP client on a fixed source port would otherwise keep
// sending into a dead endpoint for as long as it keeps the entry alive.
//
// It follows upstream kube-proxy 1.28+ (pkg/proxy/conntrack/cleanup.go): a reconcile over
// the kernel's table rather than a diff of two syncs, so that entries missed by one sync
// (an error, a restart) are still removed later. After each successful sync the backend calls
// Reconcile, which
//
//  1. lists the UDP and SCTP entries of one address family (Interface.List);
//  2. decides, with the pure StaleFlows over ComputeTargets(services, endpoints), which go:
//     a flow whose original destination is a service IP:port (ClusterIP, externalIP,
//     load-balancer IP) and whose reply source (the DNAT target) is not a serving endpoint of
//     that service port; and a flow whose original destination port is a NodePort (on a node
//     address, see Targets.NodeIPs) and whose reply source is not a serving endpoint. A
//     service port with no serving endpoint at all loses every flow to its addresses, so its
//     UDP clients get the REJECT at once instead of blackholing (upstream 1.28+ skips those);
//  3. deletes exactly those flows (Interface.Delete), matching original and reply tuples, so
//     an entry re-created meanwhile towards a good endpoint is kept.
//
// Serving means EndpointSlice serving (ready, or terminating and still serving): traffic
// policies, topology and the terminating fallback are deliberately ignored, as upstream, so a
// change to the service never breaks a flow to a pod that still serves.
//
// Cost: each Reconcile dumps the family's whole conntrack table once (all protocols: the
// kernel does not filter dumps by protocol) and, only when something is stale, a second time
// to delete. With no UDP or SCTP service port it dumps nothing: no flow could be stale. That scales with the number of tracked connections on the node, not with the
// number of services.
//
// Every kernel handle is bound to an explicit network namespace (Options.NetNSPath). The Fake
// holds flows and deletes like the kernel: by tuple, silently ignoring flows already gone.
//
// This package must not import a mode backend; it reads only the endpoints model.
package conntrack
