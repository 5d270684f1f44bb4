package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// keyPair is a certificate and its key, PEM encoded.
type keyPair struct {
	CertPEM, KeyPEM []byte
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
}

// pki holds every credential of a sandbox. All keys are ECDSA P-256 (fast to make).
type pki struct {
	CA, Server, Admin, KubeProxy keyPair
	SAKeyPEM, SAPubPEM           []byte
}

// newPKI makes a CA, the apiserver serving certificate (IP SANs 192.0.2.1, 127.0.0.1, the
// kubernetes Service IP and VMAPIServerIP), the admin client (O=system:masters), the kube-proxy client
// (CN=system:kube-proxy, bound to system:node-proxier by bootstrap RBAC) and the service
// account signing key pair.
func newPKI() (*pki, error) {
	ca, err := newCert(certSpec{cn: "kproxy-e2e-ca", isCA: true})
	if err != nil {
		return nil, err
	}
	p := &pki{CA: ca}
	specs := []struct {
		into *keyPair
		spec certSpec
	}{
		{&p.Server, certSpec{cn: "kube-apiserver", server: true,
			ips: []net.IP{net.IP(FabricIP.AsSlice()), net.IPv4(127, 0, 0, 1), net.IP(KubernetesServiceIP.AsSlice()),
				net.IP(VMAPIServerIP.AsSlice())},
			names: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}}},
		{&p.Admin, certSpec{cn: "kproxy-e2e-admin", org: "system:masters"}},
		{&p.KubeProxy, certSpec{cn: "system:kube-proxy"}},
	}
	for _, s := range specs {
		s.spec.parent = &ca
		if *s.into, err = newCert(s.spec); err != nil {
			return nil, err
		}
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(sa)
	if err != nil {
		return nil, err
	}
	p.SAKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	p.SAPubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	return p, nil
}

type certSpec struct {
	cn, org string
	isCA    bool
	server  bool
	ips     []net.IP
	names   []string
	parent  *keyPair // nil: self-signed
}

func newCert(s certSpec) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return keyPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: s.cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		IPAddresses:  s.ips,
		DNSNames:     s.names,
	}
	if s.org != "" {
		tmpl.Subject.Organization = []string{s.org}
	}
	switch {
	case s.isCA:
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	case s.server:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	parent, signer := tmpl, key
	if s.parent != nil {
		parent, signer = s.parent.cert, s.parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return keyPair{}, fmt.Errorf("certificate %s: %w", s.cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		cert:    cert, key: key,
	}, nil
}

// write puts the files the apiserver reads into dir.
func (p *pki) write(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt": p.CA.CertPEM, "apiserver.crt": p.Server.CertPEM, "apiserver.key": p.Server.KeyPEM,
		"sa.key": p.SAKeyPEM, "sa.pub": p.SAPubPEM,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
