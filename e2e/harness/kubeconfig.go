package harness

import (
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes a self-contained kubeconfig (certificates embedded).
func writeKubeconfig(path, server string, ca []byte, user keyPair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sandbox"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: user.CertPEM, ClientKeyData: user.KeyPEM}
	cfg.Contexts["sandbox"] = &clientcmdapi.Context{Cluster: "sandbox", AuthInfo: "user"}
	cfg.CurrentContext = "sandbox"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// restConfig is the admin client configuration for a server URL.
func restConfig(server string, p *pki) *rest.Config {
	return &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: p.CA.CertPEM, CertData: p.Admin.CertPEM, KeyData: p.Admin.KeyPEM,
		},
		QPS: 100, Burst: 200,
		UserAgent: "kproxy-e2e",
		// The FQDN slices of the bad-input tests draw a deprecation warning per request.
		WarningHandler: rest.NoWarnings{},
	}
}
