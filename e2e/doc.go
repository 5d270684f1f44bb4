// Package e2e holds kproxy's end-to-end scenarios (build tag e2e, run as root by `make e2e`):
// one sandbox of 2 nodes × 2 pods for the whole package (see e2e/harness), real TCP and UDP
// traffic from pods and nodes through the proxy under test, and the proxy's health and metrics
// endpoints. KPROXY_E2E_PROXY=kube-proxy runs the same scenarios against upstream kube-proxy,
// the reference; KPROXY_E2E_PROXY=none shows that they fail without a proxy. See README.md.
package e2e
