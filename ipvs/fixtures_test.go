package ipvs

import (
	"net/netip"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
)

// Addresses from the test IP plan (TESTING.md).
var (
	clusterCIDR = netip.MustParsePrefix("100.64.0.0/16")
	testNode    = endpoints.NodeInfo{Name: "node-1", Zone: "zone-a"}
	nodeIP      = netip.MustParseAddr("192.0.2.11")
)

func testConfig() Config {
	return Config{ClusterCIDR: clusterCIDR, NodeIPs: []netip.Addr{nodeIP}, NodeIP: nodeIP}
}

func portName(ns, name, port string, proto v1.Protocol) endpoints.ServicePortName {
	return endpoints.ServicePortName{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}, Port: port, Protocol: proto}
}

func servicePort(name endpoints.ServicePortName, clusterIP string, port int32) *endpoints.ServicePort {
	return &endpoints.ServicePort{Name: name, ClusterIP: netip.MustParseAddr(clusterIP), Port: port, Protocol: name.Protocol}
}

func readyEP(ip string, port int32) endpoints.Endpoint {
	return endpoints.Endpoint{IP: netip.MustParseAddr(ip), Port: port, Ready: true, Serving: true, NodeName: "node-1"}
}

func remoteEP(ip string, port int32) endpoints.Endpoint {
	ep := readyEP(ip, port)
	ep.NodeName = "node-2"
	return ep
}

func terminatingEP(ip string, port int32) endpoints.Endpoint {
	return endpoints.Endpoint{IP: netip.MustParseAddr(ip), Port: port, Serving: true, Terminating: true, NodeName: "node-2"}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// world is a snapshot under construction.
type world struct {
	services  endpoints.ServiceMap
	endpoints endpoints.EndpointsMap
}

func newWorld() *world {
	return &world{services: endpoints.ServiceMap{}, endpoints: endpoints.EndpointsMap{}}
}

func (w *world) svc(sp *endpoints.ServicePort, eps ...endpoints.Endpoint) *world {
	w.services[sp.Name] = sp
	if len(eps) > 0 {
		w.endpoints[sp.Name] = eps
	}
	return w
}

func (w *world) snapshot() endpoints.Snapshot {
	changed := map[types.NamespacedName]struct{}{}
	for name := range w.services {
		changed[name.NamespacedName] = struct{}{}
	}
	return endpoints.Snapshot{Services: w.services, Endpoints: w.endpoints, Changed: changed}
}

func (w *world) input(cfg Config) PlanInput {
	return PlanInput{Services: w.services, Endpoints: w.endpoints, Node: testNode, Config: cfg}
}

// webTCP is a ClusterIP service with two endpoints, one local.
func webTCP() *endpoints.ServicePort {
	return servicePort(portName("default", "web", "http", v1.ProtocolTCP), "100.100.0.10", 80)
}

func affinity(sp *endpoints.ServicePort) *endpoints.ServicePort {
	sp.SessionAffinityTimeout = 10800 * time.Second
	return sp
}
