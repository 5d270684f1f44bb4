package conntrack

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
)

func spn(name, port string, proto v1.Protocol) endpoints.ServicePortName {
	return endpoints.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: name}, Port: port, Protocol: proto}
}

func ep(addr string, serving bool) endpoints.Endpoint {
	ap := netip.MustParseAddrPort(addr)
	return endpoints.Endpoint{IP: ap.Addr(), Port: int32(ap.Port()), Ready: serving, Serving: serving}
}

func TestComputeTargets(t *testing.T) {
	dns := spn("dns", "dns", v1.ProtocolUDP)
	dnsTCP := spn("dns", "dns-tcp", v1.ProtocolTCP)
	sig := spn("sig", "", v1.ProtocolSCTP)
	empty := spn("empty", "", v1.ProtocolUDP)
	dual := spn("dual", "", v1.ProtocolUDP)
	svcs := endpoints.ServiceMap{
		dns: {
			Name: dns, ClusterIP: netip.MustParseAddr("100.100.0.10"), Port: 53, Protocol: v1.ProtocolUDP, NodePort: 30053,
			ExternalIPs:     addrs("203.0.113.7"),
			LoadBalancerIPs: addrs("198.51.100.9"),
		},
		dnsTCP: {Name: dnsTCP, ClusterIP: netip.MustParseAddr("100.100.0.10"), Port: 53, Protocol: v1.ProtocolTCP, NodePort: 30053},
		sig:    {Name: sig, ClusterIP: netip.MustParseAddr("100.100.0.20"), Port: 9000, Protocol: v1.ProtocolSCTP},
		empty:  {Name: empty, ClusterIP: netip.MustParseAddr("100.100.0.30"), Port: 80, Protocol: v1.ProtocolUDP, NodePort: 30080},
		dual: {Name: dual, ClusterIP: netip.MustParseAddr("2001:db8:2::40"), Port: 53, Protocol: v1.ProtocolUDP,
			ExternalIPs: addrs("203.0.113.40", "2001:db8::40")},
	}
	eps := endpoints.EndpointsMap{
		dns: {
			ep("100.64.1.2:5353", true),
			{IP: netip.MustParseAddr("100.64.1.3"), Port: 5353, Serving: true, Terminating: true}, // serving-terminating counts
			ep("100.64.1.4:5353", false), // not serving
		},
		dnsTCP: {ep("100.64.1.2:5353", true)},
		sig:    {ep("100.64.2.2:9000", true)},
		empty:  {ep("100.64.1.9:80", false)},
		dual:   {ep("100.64.1.40:53", true), ep("[2001:db8:1::40]:53", true)},
	}

	dnsBackends := backends("100.64.1.2:5353", "100.64.1.3:5353")
	for _, tc := range []struct {
		name    string
		family  v1.IPFamily
		nodeIPs []netip.Addr
		want    Targets
	}{
		{
			name:    "IPv4",
			family:  v1.IPv4Protocol,
			nodeIPs: addrs("192.0.2.10", "2001:db8:3::10"),
			want: Targets{
				Frontends: map[Frontend]Backends{
					fe(v1.ProtocolUDP, "100.100.0.10:53"):    dnsBackends,
					fe(v1.ProtocolUDP, "203.0.113.7:53"):     dnsBackends,
					fe(v1.ProtocolUDP, "198.51.100.9:53"):    dnsBackends,
					fe(v1.ProtocolSCTP, "100.100.0.20:9000"): backends("100.64.2.2:9000"),
					fe(v1.ProtocolUDP, "100.100.0.30:80"):    {},
					fe(v1.ProtocolUDP, "203.0.113.40:53"):    backends("100.64.1.40:53"),
				},
				NodePorts: map[NodePort]Backends{
					{Protocol: v1.ProtocolUDP, Port: 30053}: dnsBackends,
					{Protocol: v1.ProtocolUDP, Port: 30080}: {},
				},
				NodeIPs: addrs("192.0.2.10"),
			},
		},
		{
			name:   "IPv6",
			family: v1.IPv6Protocol,
			want: Targets{
				Frontends: map[Frontend]Backends{
					fe(v1.ProtocolUDP, "[2001:db8:2::40]:53"): backends("[2001:db8:1::40]:53"),
					fe(v1.ProtocolUDP, "[2001:db8::40]:53"):   backends("[2001:db8:1::40]:53"),
				},
				NodePorts: map[NodePort]Backends{
					{Protocol: v1.ProtocolUDP, Port: 30053}: {},
					{Protocol: v1.ProtocolUDP, Port: 30080}: {},
				},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ComputeTargets(svcs, eps, tc.family, tc.nodeIPs)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStaleFlows(t *testing.T) {
	targets := Targets{
		Frontends: map[Frontend]Backends{
			fe(v1.ProtocolUDP, "100.100.0.10:53"):     backends("100.64.1.2:5353", "100.64.1.3:5353"),
			fe(v1.ProtocolUDP, "203.0.113.7:53"):      backends("100.64.1.2:5353", "100.64.1.3:5353"),
			fe(v1.ProtocolUDP, "100.100.0.30:80"):     {}, // no serving endpoint
			fe(v1.ProtocolUDP, "100.100.0.50:30053"):  backends("100.64.1.50:53"),
			fe(v1.ProtocolSCTP, "100.100.0.20:9000"):  backends("100.64.2.2:9000"),
			fe(v1.ProtocolUDP, "[2001:db8:2::40]:53"): backends("[2001:db8:1::40]:53"),
		},
		NodePorts: map[NodePort]Backends{
			{Protocol: v1.ProtocolUDP, Port: 30053}: backends("100.64.1.2:5353"),
		},
	}
	withNodeIPs := targets
	withNodeIPs.NodeIPs = addrs("192.0.2.10")

	for _, tc := range []struct {
		name    string
		targets Targets
		flows   []Flow
		want    []Flow
	}{
		{
			name:    "cluster IP to a serving endpoint is kept",
			targets: targets,
			flows:   []Flow{udp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.2:5353"), udp("100.64.1.7:4001", "100.100.0.10:53", "100.64.1.3:5353")},
		},
		{
			name:    "cluster IP to a removed endpoint goes",
			targets: targets,
			flows:   []Flow{udp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.9:5353"), udp("100.64.1.7:4001", "100.100.0.10:53", "100.64.1.2:5353")},
			want:    []Flow{udp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.9:5353")},
		},
		{
			name:    "endpoint IP kept but target port changed goes",
			targets: targets,
			flows:   []Flow{udp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.2:53")},
			want:    []Flow{udp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.2:53")},
		},
		{
			name:    "external IP to a removed endpoint goes",
			targets: targets,
			flows:   []Flow{udp("198.51.100.77:4000", "203.0.113.7:53", "100.64.1.9:5353")},
			want:    []Flow{udp("198.51.100.77:4000", "203.0.113.7:53", "100.64.1.9:5353")},
		},
		{
			name:    "service without endpoints loses every flow, DNATed or not",
			targets: targets,
			flows:   []Flow{udp("100.64.1.7:4000", "100.100.0.30:80", "100.64.1.9:80"), udp("100.64.1.7:4001", "100.100.0.30:80", "100.100.0.30:80")},
			want:    []Flow{udp("100.64.1.7:4000", "100.100.0.30:80", "100.64.1.9:80"), udp("100.64.1.7:4001", "100.100.0.30:80", "100.100.0.30:80")},
		},
		{
			name:    "flow created before the rules (not DNATed) to a service with endpoints goes",
			targets: targets,
			flows:   []Flow{udp("100.64.1.7:4000", "100.100.0.10:53", "100.100.0.10:53")},
			want:    []Flow{udp("100.64.1.7:4000", "100.100.0.10:53", "100.100.0.10:53")},
		},
		{
			name:    "other port of a service IP is not a frontend",
			targets: targets,
			flows:   []Flow{udp("100.64.1.7:4000", "100.100.0.10:54", "100.64.1.9:54")},
		},
		{
			name:    "TCP is never cleaned",
			targets: targets,
			flows:   []Flow{tcp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.9:5353")},
		},
		{
			name:    "protocol is part of the frontend",
			targets: targets,
			flows:   []Flow{sctp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.9:5353")},
		},
		{
			name:    "SCTP to a removed endpoint goes, to a serving one stays",
			targets: targets,
			flows:   []Flow{sctp("100.64.1.7:4000", "100.100.0.20:9000", "100.64.2.3:9000"), sctp("100.64.1.7:4001", "100.100.0.20:9000", "100.64.2.2:9000")},
			want:    []Flow{sctp("100.64.1.7:4000", "100.100.0.20:9000", "100.64.2.3:9000")},
		},
		{
			name:    "IPv6",
			targets: targets,
			flows:   []Flow{udp("[2001:db8:1::7]:4000", "[2001:db8:2::40]:53", "[2001:db8:1::41]:53"), udp("[2001:db8:1::7]:4001", "[2001:db8:2::40]:53", "[2001:db8:1::40]:53")},
			want:    []Flow{udp("[2001:db8:1::7]:4000", "[2001:db8:2::40]:53", "[2001:db8:1::41]:53")},
		},
		{
			name:    "node port on any address: DNATed to a removed endpoint goes, to a serving one stays",
			targets: targets,
			flows:   []Flow{udp("198.51.100.77:4000", "192.0.2.10:30053", "100.64.1.9:5353"), udp("198.51.100.77:4001", "192.0.2.11:30053", "100.64.1.2:5353")},
			want:    []Flow{udp("198.51.100.77:4000", "192.0.2.10:30053", "100.64.1.9:5353")},
		},
		{
			name:    "node port on any address: a flow not DNATed here (to another node's node port) stays",
			targets: targets,
			flows:   []Flow{udp("100.64.1.7:4000", "192.0.2.20:30053", "192.0.2.20:30053")},
		},
		{
			name:    "node port with node IPs: only flows to them, DNATed or not",
			targets: withNodeIPs,
			flows: []Flow{
				udp("198.51.100.77:4000", "192.0.2.10:30053", "100.64.1.9:5353"),
				udp("198.51.100.77:4001", "192.0.2.10:30053", "192.0.2.10:30053"),
				udp("198.51.100.77:4002", "192.0.2.20:30053", "100.64.1.9:5353"),
				udp("198.51.100.77:4003", "192.0.2.10:30053", "100.64.1.2:5353"),
			},
			want: []Flow{
				udp("198.51.100.77:4000", "192.0.2.10:30053", "100.64.1.9:5353"),
				udp("198.51.100.77:4001", "192.0.2.10:30053", "192.0.2.10:30053"),
			},
		},
		{
			name:    "a service port equal to a node port is judged by its service only",
			targets: targets,
			flows:   []Flow{udp("100.64.1.7:4000", "100.100.0.50:30053", "100.64.1.50:53")},
		},
		{
			name:    "unrelated flows stay",
			targets: targets,
			flows:   []Flow{udp("100.64.1.7:4000", "8.8.8.8:53", "8.8.8.8:53"), udp("100.64.1.7:4001", "100.64.1.2:5353", "100.64.1.2:5353")},
		},
		{
			name:    "empty targets delete nothing",
			targets: Targets{},
			flows:   []Flow{udp("100.64.1.7:4000", "100.100.0.10:53", "100.64.1.9:5353")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := StaleFlows(tc.targets, tc.flows)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("stale flows (-want +got):\n%s", diff)
			}
		})
	}
}
