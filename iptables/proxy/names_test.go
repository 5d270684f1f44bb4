package proxy

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// The expected names are upstream kube-proxy's, from pkg/proxy/iptables/proxier_test.go and
// pkg/util/iptables/testing/parse_test.go.
func TestChainNamesMatchUpstream(t *testing.T) {
	ep := func(s string) endpoints.Endpoint {
		ap := netip.MustParseAddrPort(s)
		return endpoints.Endpoint{IP: ap.Addr(), Port: int32(ap.Port())}
	}
	svc := func(n string) endpoints.ServicePortName {
		return portName("ns"+n, "svc"+n, "p80", v1.ProtocolTCP)
	}
	cases := []struct {
		got, want iptables.Chain
	}{
		{serviceChainName(svc("1"), "tcp"), "KUBE-SVC-XPGD46QRK7WJZT7O"},
		{serviceChainName(svc("4"), "tcp"), "KUBE-SVC-4SW47YFZTEDKD3PK"},
		{endpointChainName(svc("1"), "tcp", ep("10.180.0.1:80")), "KUBE-SEP-SXIVWICOYRO3J4NJ"},
		{endpointChainName(svc("1"), "tcp", ep("10.180.0.2:80")), "KUBE-SEP-LXVODXWDISEETFEF"},
		{endpointChainName(svc("1"), "tcp", ep("10.180.2.1:80")), "KUBE-SEP-ZX7GRIZKSNUQ3LAJ"},
		{endpointChainName(svc("2"), "tcp", ep("10.180.0.2:80")), "KUBE-SEP-RS4RBKLTHTF2IUXJ"},
		{endpointChainName(svc("3"), "tcp", ep("10.180.0.3:80")), "KUBE-SEP-OYPFS5VJICHGATKP"},
		{endpointChainName(svc("4"), "tcp", ep("10.180.0.4:80")), "KUBE-SEP-UKSFD7AGPMPPLUHC"},
		{endpointChainName(svc("5"), "tcp", ep("10.180.0.3:80")), "KUBE-SEP-I77PXRDZVX7PMWMN"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}

// The protocol is part of the hash: the same port name over TCP and UDP gets two chains.
func TestChainNamesDifferByProtocol(t *testing.T) {
	name := portName("kube-system", "dns", "dns", v1.ProtocolUDP)
	if serviceChainName(name, "udp") == serviceChainName(name, "tcp") {
		t.Error("udp and tcp service chains have the same name")
	}
}
