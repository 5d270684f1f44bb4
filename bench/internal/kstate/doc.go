// Package kstate reads what a node's kernel holds for the benchmarks' Services: the
// ClusterIPs that have a capture rule and the endpoint DNAT targets, from iptables-save -t nat
// or nft list table ip kube-proxy. A Service is programmed when its ClusterIP has its rule and
// each of its endpoints its DNAT; the benchmarks poll Read until it is, and never take a
// proxy's word for it.
//
// The parsers (parse.go) are pure: text in, State out. Read and ReadVIPs (read.go) run the
// listing in the node's network namespace through e2e/harness. A whole-table read scales with
// the rules in the table (at 10,000 Services, seconds with nft); ReadVIPs lists only the
// service capture rules.
//
// It must not import the proxies' packages (iptables, ipvs, proxier): it reads the kernel as
// any proxy may have written it, kproxy or upstream kube-proxy.
package kstate
