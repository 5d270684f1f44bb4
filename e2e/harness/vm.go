package harness

import "net/netip"

// VMAPIServerIP is where a proxy inside the IPVS test VM (e2e/vm, run-test.sh -n) reaches the
// apiserver: qemu's user network forwards 192.0.2.100:6443 in the guest to the API forwarder
// on the host's 127.0.0.1. The apiserver's serving certificate carries it as an IP SAN.
var VMAPIServerIP = netip.MustParseAddr("192.0.2.100")

// WriteProxyKubeconfig writes a kubeconfig with the kube-proxy client certificate
// (CN=system:kube-proxy) and the sandbox CA for a proxy that reaches the apiserver at server,
// for example "https://192.0.2.100:6443" from inside the VM.
func (c *Cluster) WriteProxyKubeconfig(path, server string) error {
	return writeKubeconfig(path, server, c.pki.CA.CertPEM, c.pki.KubeProxy)
}

// APIForwarderAddr is the in-process API forwarder's address on the root namespace's
// 127.0.0.1 (host:port); "" before the control plane starts.
func (c *Cluster) APIForwarderAddr() string {
	if c.fwd == nil {
		return ""
	}
	return c.fwd.Addr()
}
