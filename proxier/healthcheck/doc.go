// Package healthcheck serves kube-proxy's per-service health-check node ports: for each
// LoadBalancer service with externalTrafficPolicy=Local, an HTTP server on its
// healthCheckNodePort tells the cloud load balancer whether this node has local ready
// endpoints for it.
//
// How it works. The reconciler calls, after each successful sync:
//
//   - SyncServices with the services that need a health-check port (service → port): a
//     listener is opened on each node-port address (all addresses when Options.Addresses is
//     empty) for each new service or changed port; the listeners of removed services and of
//     changed ports are closed first, so a port can move from one service to another in one
//     call. A port that cannot be bound is reported in the returned *SyncError (one
//     ListenError per service; First tells the first failure, to emit one event) and retried
//     on the next call; it never blocks the other services.
//   - SyncEndpoints with the number of local ready endpoints per service
//     (endpoints.LocalReadyEndpoints).
//
// GET on any path of a health-check port answers JSON
// {"service":{"namespace":"ns","name":"n"},"localEndpoints":N,"serviceProxyHealthy":B} with
// header X-Load-Balancing-Endpoint-Weight: N, and status 200 when N > 0 and the proxy is
// healthy (Options.ProxyHealthy, /healthz's verdict), 503 otherwise, as upstream.
//
// Listeners are opened in the calling process's network namespace. NewServer has no side
// effects; Close closes every listener.
//
// This package must not import a mode backend or a kernel library; it knows services only by
// name.
package healthcheck
