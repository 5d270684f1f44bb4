// Package proxier is kproxy's reconciler: it turns the endpoints tracker's state into kernel
// state through a mode Backend, and serves kube-proxy's health and metrics endpoints.
//
// The pieces, in the order data flows:
//
//   - Feed: Service, EndpointSlice (both without the service-proxy-name and headless labels,
//     as kube-proxy selects them) and own-Node informers. Every event goes to the tracker and
//     calls Runner.Request; the Node gives the zone (topology) and node eligibility (health).
//   - Runner: a bounded-frequency runner. Requests are coalesced and run no sooner than the
//     min sync period after the previous run; a run happens at least every sync period; a
//     failed run is retried with a doubling backoff capped at the sync period. Only the
//     runner's goroutine calls Reconciler.Sync.
//   - Reconciler.Sync: checks out a Snapshot and calls Backend.Apply. The first sync, a sync
//     after a failure, a node change and one sync per FullSyncInterval (an hour, as
//     upstream) are full; the others may be partial (the backend limits itself to the changed
//     services). Records kube-proxy's sync metrics and network programming latency (from the
//     slices' last-change-trigger-time annotation).
//   - Health: /healthz and /livez on the healthz address (200 when the last successful sync is
//     at most 2 × sync period old); Metrics: /metrics and /proxyMode on the metrics address.
//   - APIContact: the apiserver's /readyz probed every half sync period; /healthz (not /livez,
//     not the health-check node ports) turns 503 once it has not answered for 2 × sync
//     period. The informers cannot report this themselves: a watch that cannot reconnect
//     backs off silently, and the periodic syncs keep succeeding on the rules in place.
//
// This package must not import a mode backend (iptables/, ipvs/) or any kernel library: the
// daemon in cmd/kproxy wires a backend in.
package proxier
