// Package sandbox is what the benchmarks need around the e2e sandbox (e2e/harness) and the
// proxies it runs: a lock per sandbox prefix so that two runs never share one, the Kubernetes
// binaries, the pid and CPU time of a proxy the harness started, and the check that a binary
// can go into the VM. It reads /proc and the harness's state directory; it starts no proxy,
// and removes a sandbox only on an interrupt (Guard) or for leftovers (RemoveLeftovers). It
// must not import the proxies' packages.
package sandbox
