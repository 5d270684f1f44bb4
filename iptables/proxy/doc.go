// Package proxy is kproxy's iptables proxy mode: kube-proxy's chain-per-service,
// chain-per-endpoint nat layout, rendered by a pure function and written with one
// iptables-restore --noflush per sync.
//
// The layout (ClusterIP for now; NodePort, LoadBalancer, externalIPs and session affinity
// add chains to the same shape):
//
//	nat PREROUTING, OUTPUT  -> KUBE-SERVICES            "kubernetes service portals"
//	nat POSTROUTING         -> KUBE-POSTROUTING         "kubernetes postrouting rules"
//	filter INPUT, FORWARD, OUTPUT (ctstate NEW) -> KUBE-SERVICES
//
//	nat KUBE-SERVICES      one jump per service port with endpoints: -d clusterIP -p proto
//	                       --dport port -j KUBE-SVC-<hash>; last, LOCAL destinations to
//	                       KUBE-NODEPORTS (empty for now)
//	nat KUBE-SVC-<hash>    mark for masquerade what does not come from the cluster CIDR (or
//	                       everything with --masquerade-all), then one KUBE-SEP jump per
//	                       endpoint, the i-th of n with probability 1/(n-i), the last always
//	nat KUBE-SEP-<hash>    mark hairpin traffic (source = the endpoint) for masquerade, DNAT
//	nat KUBE-MARK-MASQ     set the masquerade bit (0x4000)
//	nat KUBE-POSTROUTING   masquerade what carries the bit, clearing it
//	filter KUBE-SERVICES   REJECT for service ports without endpoints ("has no endpoints"),
//	                       DROP for internalTrafficPolicy Local ones whose endpoints are all
//	                       on other nodes ("has no local endpoints")
//
// The endpoints a service port uses are endpoints.CategorizeEndpoints' cluster set: ready ones,
// else serving-terminating ones, narrowed by topology hints (the node's own ones for
// internalTrafficPolicy Local; upstream names that chain KUBE-SVL-, kproxy still KUBE-SVC-).
//
// Chain names follow kube-proxy's hash (see names.go), so they match upstream's byte for byte.
//
// A sync (Proxier.Apply): render the whole desired state (pure, cheap), canonicalise it to
// iptables-save's form, compare it chain by chain with what is in the kernel, and write only
// the chains that differ, plus the deletion of stale per-service chains, in one restore. On a
// full sync "what is in the kernel" is read with iptables-save, so a restart with nothing
// changed writes nothing; otherwise it is what the last successful sync left. A failure
// forgets it, which makes the next sync full. The base-chain jumps are ensured on full syncs;
// partial syncs check the KUBE-PROXY-CANARY chains and turn full when someone flushed the
// tables.
//
// Cost: rendering and comparing scale with the number of rules; the restore scales with the
// number of chains that changed (per service: one KUBE-SVC chain plus one KUBE-SEP chain per
// endpoint), plus the shared chains when a service was added or removed.
//
// This package owns, in the nat table, KUBE-SERVICES, KUBE-NODEPORTS, KUBE-MARK-MASQ,
// KUBE-POSTROUTING and the per-service chains (kube-proxy's KUBE-SVC-, KUBE-SEP-, KUBE-EXT-,
// KUBE-FW-, KUBE-SVL- and KUBE-XLB- prefixes, so that the stale chains of an upstream
// kube-proxy this one replaces are cleaned up too), and in the filter table KUBE-SERVICES. It
// never rewrites or deletes another chain. It imports endpoints (the model) and iptables (the
// kernel library), and must not import proxier or any other mode.
package proxy
