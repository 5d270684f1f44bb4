// Package load writes the benchmarks' Services to the apiserver: selector-less ClusterIP
// Services, TCP port 80 to a target port, each with one hand-written EndpointSlice of ready
// endpoints, created by a pool of parallel writers (Parallel) through a client without
// client-side rate limiting (FastClient).
//
// Endpoint addresses follow one plan (EndpointAddr): 100.64.10.0 + k, unique over a load, in
// the cluster CIDR but on no node of the sandbox, so that nothing sends traffic to them.
//
// It holds no state of a run: the commands keep what they wrote (VIPs, slices) themselves.
// It must not import the proxies' packages.
package load
