// Package proxy is kproxy's iptables proxy mode: kube-proxy's chain-per-service,
// chain-per-endpoint layout, rendered by a pure function (Render) and written with
// iptables-restore --noflush, only the chains that differ from the kernel.
//
// The layout is upstream kube-proxy's (pkg/proxy/iptables), chain for chain and comment for
// comment, so that iptables-save -t nat on a kproxy node reads like on a kube-proxy node:
//
//	base jumps (ensured with iptables -I, upstream's order; listed top to bottom):
//	  filter INPUT    KUBE-PROXY-FIREWALL (NEW), KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES (NEW)
//	  filter FORWARD  KUBE-PROXY-FIREWALL (NEW), KUBE-FORWARD, KUBE-SERVICES (NEW),
//	                  KUBE-EXTERNAL-SERVICES (NEW)
//	  filter OUTPUT   KUBE-PROXY-FIREWALL (NEW), KUBE-SERVICES (NEW)
//	  nat PREROUTING, OUTPUT -> KUBE-SERVICES; nat POSTROUTING -> KUBE-POSTROUTING
//
//	nat KUBE-SERVICES     per service port with endpoints: its ClusterIP -> KUBE-SVC (or
//	                      KUBE-SVL with internalTrafficPolicy Local), each externalIP ->
//	                      KUBE-EXT, each load-balancer IP -> KUBE-EXT (KUBE-FW with
//	                      loadBalancerSourceRanges); last, LOCAL destinations (or the
//	                      --nodeport-addresses ones, one rule each) -> KUBE-NODEPORTS
//	nat KUBE-NODEPORTS    --dport nodePort -> KUBE-EXT
//	nat KUBE-EXT-<hash>   externalTrafficPolicy Cluster: mark for masquerade, -> KUBE-SVC.
//	                      Local: pod traffic -> KUBE-SVC (short-circuit), node traffic
//	                      (--src-type LOCAL) masqueraded -> KUBE-SVC, the rest -> KUBE-SVL
//	                      (source kept; no rule when there is no local endpoint)
//	nat KUBE-FW-<hash>    each source range -> KUBE-EXT; the rest falls through, un-DNATed
//	nat KUBE-SVC-<hash>   masquerade non-pod traffic to the ClusterIP (or all of it with
//	                      --masquerade-all), then with ClientIP affinity one -m recent
//	                      --rcheck jump per endpoint, then one jump per endpoint, the i-th of n
//	                      with probability 1/(n-i)
//	nat KUBE-SVL-<hash>   the same over this node's endpoints
//	nat KUBE-SEP-<hash>   hairpin masquerade, (-m recent --set), DNAT
//	nat KUBE-MARK-MASQ, KUBE-POSTROUTING   the 0x4000 mark and the MASQUERADE
//	filter KUBE-SERVICES            ClusterIP ports without endpoints: REJECT ("has no
//	                                endpoints"), or DROP for internalTrafficPolicy Local with
//	                                endpoints only elsewhere; then (kproxy, beyond upstream's
//	                                iptables mode, like its nftables mode) REJECT whatever else
//	                                goes to a ClusterIP (one rule per IP) or to the service
//	                                CIDRs (one rule per CIDR, Config.ServiceCIDRs: the
//	                                ServiceCIDR objects, Proxier.SetServiceCIDRs, or the flag)
//	filter KUBE-EXTERNAL-SERVICES   the same REJECT/DROP for node ports, externalIPs and
//	                                load-balancer IPs
//	filter KUBE-PROXY-FIREWALL      DROP what KUBE-FW let fall through
//	filter KUBE-NODEPORTS           ACCEPT health-check node ports
//	filter KUBE-FORWARD             DROP ctstate INVALID, ACCEPT marked and established
//
// Pod traffic is told from other traffic by Config.LocalDetector (--detect-local-mode:
// -s CIDR, -i bridge, -i prefix+). Chain names follow kube-proxy's hash (names.go), so they
// match upstream's byte for byte; the endpoints a chain uses are endpoints.CategorizeEndpoints'
// (ready, else serving-terminating; topology hints; Local = this node's). Past 1,000
// endpoints the per-endpoint rules lose their comments, as upstream's large-cluster mode.
//
// A sync (Proxier.Apply): render the desired state, canonicalise it to iptables-save's form,
// compare it chain by chain with what is in the kernel, and write only the chains that differ
// plus the deletion of stale per-service chains (writer.go). Rendering is per service port
// (render_service.go: its rules in the shared chains and its own chains, a portRules) and
// the proxier keeps each port's rendered, canonicalised rules between syncs (cache.go): a
// sync renders again only the ports of the services in the snapshot's Changed set (or whose
// values are not the ones they were rendered from), reassembles the shared chains only when
// one of those ports' rules in them changed, and a partial sync compares only the shared
// chains and the re-rendered ports' chains. So a partial sync costs one pass of two map
// lookups per service port plus work proportional to the changed services (at 10,000
// services × 5 endpoints, 2 ms for one changed service against 470 ms when everything was
// rendered on every sync; BenchmarkPartialSync). A full sync (start, hourly, after a
// failure) renders everything from scratch; what it writes is byte for byte what Render
// gives (TestPartialSyncMatchesScratch). A change
// of up to Config.BatchServices (100) services is one restore; a larger one is split into
// restores of whole services (their chains before the shared chains that jump to them), then
// the shared chains, then the deletions, because iptables-nft's restore time grows much faster
// than linearly with the chains one restore declares (DESIGN.md: 500 s for 10k services in one
// restore, under 3 s in batches). The batch grows with the table the kernel holds (one
// service per 60 nat chains, Config.batchFor): every commit into a hooked-up table pays the
// kernel's check of all of it (~140 ms at 10,000 services), so at 10,000 the ~130 services a
// bulk create brings per sync are one restore, not three (BenchmarkBulkGrowthKernel: the
// restores' CPU over a growth to 10,000, 128 services per sync, 24.0-24.7 → 13.0-13.3 s).
//
// A shared chain is written whole when it differs, except when it is long (64 rules or more),
// a few positional edits (-D CHAIN n, -I CHAIN n rule) turn what the kernel holds into what is
// desired, and the kernel is known to hold exactly what the proxier knows: it just read the
// tables, or the nf_tables generation is where the proxier's last write or read left it. So a
// service that comes or goes costs one deleted or inserted line of nat KUBE-SERVICES, not a
// rewrite of its 10,000 (bench/results/2026-12-07-iptables-shared-chain-edits.md: 0.29 s
// against 0.92 s per sync at 10,000; the rest is iptables-nft reading the chain's rules and
// the kernel checking the table on commit).
//
// The service rules of nat KUBE-SERVICES and KUBE-NODEPORTS are rendered in service port name
// order, but the proxier keeps them in the order the kernel holds them, with new ones
// inserted at the head (arrangeServices): at position 1 iptables-nft inserts without reading
// the chain's rules, which any other position costs. The rules exclude each other (one
// destination address, protocol and port, or node port, each), so the order does not change
// what the chain does; the jumps to KUBE-NODEPORTS stay last in KUBE-SERVICES, and a restart
// or idle sync that reads the chains back finds nothing to rewrite. A KUBE-SERVICES that does
// not end with those jumps (edited by hand) is written back in name order.
//
// What "the kernel" is: a full sync (start, hourly, after any failure) and an idle sync
// (nothing changed: the periodic tick every --iptables-sync-period) read the nat and filter
// tables with iptables-save, so a rule, chain or base jump deleted by hand comes back within
// one sync period, and a restarted proxier with nothing changed writes nothing. A partial
// sync (some services changed) trusts what the last sync left, and checks the
// KUBE-PROXY-CANARY chains after its restore: a flush of the tables makes it go on with a
// full sync at once, and the check's two execs are not on the path from a change to the
// kernel. The check is skipped when the nf_tables generation showed, before the restore, that
// nothing changed the tables since the proxier last wrote or read them. The idle check costs
// one iptables-save of each table plus a render and compare (measured in
// bench/results/*-iptables-writer.md; at 10,000 services about 3 s of CPU and 40 MiB held at
// once); with iptables-nft it is skipped while the namespace's nf_tables generation
// (Config.Generation, one netlink request) has not moved since a check found the tables as
// desired, or since the proxier's own restores, when those moved it by exactly their own
// commits (one per table each) from a generation at which the kernel was as known: every
// committed change there, by hand or by any tool, moves it, so a rule deleted by hand is
// still back within one sync period, and a proxier whose only writer is itself does not read
// the tables after each burst of changes.
//
// This package owns, in the nat table, KUBE-SERVICES, KUBE-NODEPORTS, KUBE-MARK-MASQ,
// KUBE-POSTROUTING and the per-service chains (KUBE-SVC-, KUBE-SVL-, KUBE-EXT-, KUBE-FW-,
// KUBE-SEP-, and upstream's old KUBE-XLB-, so that the stale chains of an upstream kube-proxy
// this one replaces are cleaned up too), and in the filter table KUBE-SERVICES,
// KUBE-EXTERNAL-SERVICES, KUBE-FORWARD, KUBE-NODEPORTS, KUBE-PROXY-FIREWALL (and KUBE-FIREWALL
// when NodePorts are open on localhost). It never rewrites or deletes another chain. It imports
// endpoints (the model) and iptables (the kernel library), and must not import proxier or any
// other mode.
package proxy
