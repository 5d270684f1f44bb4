package proxy

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

// zoneEP is a ready endpoint on another node with a zone hint.
func zoneEP(ip string, port int32, zone string) endpoints.Endpoint {
	ep := remoteEP(ip, port)
	ep.Hints = &endpoints.Hints{Zones: []string{zone}}
	return ep
}

// localOnly sets internalTrafficPolicy Local on a service port.
func localOnly(sp *endpoints.ServicePort) *endpoints.ServicePort {
	sp.InternalPolicyLocal = true
	return sp
}

func terminatingEP(ip string, port int32, serving bool) endpoints.Endpoint {
	return endpoints.Endpoint{IP: netip.MustParseAddr(ip), Port: port, Serving: serving, Terminating: true}
}

// world is a snapshot under construction.
type world struct {
	services  endpoints.ServiceMap
	endpoints endpoints.EndpointsMap
}

func newWorld() *world {
	return &world{services: endpoints.ServiceMap{}, endpoints: endpoints.EndpointsMap{}}
}

func (w *world) add(sp *endpoints.ServicePort, eps ...endpoints.Endpoint) *world {
	w.services[sp.Name] = sp
	if len(eps) > 0 {
		w.endpoints[sp.Name] = eps
	}
	return w
}

// snapshot is w with nothing reported as changed (what the periodic sync sees).
func (w *world) snapshot() endpoints.Snapshot {
	return endpoints.Snapshot{Services: w.services, Endpoints: w.endpoints}
}

// changedSnapshot is w with every service reported as changed.
func (w *world) changedSnapshot() endpoints.Snapshot {
	snap := w.snapshot()
	snap.Changed = map[types.NamespacedName]struct{}{}
	for name := range w.services {
		snap.Changed[name.NamespacedName] = struct{}{}
	}
	return snap
}

var (
	svc1Port = portName("ns1", "svc1", "p80", v1.ProtocolTCP)
	dnsUDP   = portName("kube-system", "dns", "dns", v1.ProtocolUDP)
	dnsTCP   = portName("kube-system", "dns", "dns-tcp", v1.ProtocolTCP)
	metrics  = portName("kube-system", "dns", "metrics", v1.ProtocolTCP)
)

// oneService is ns1/svc1:p80 at 100.100.0.10:80 with one endpoint.
func oneService() *world {
	return newWorld().add(servicePort(svc1Port, "100.100.0.10", 80), readyEP("100.64.1.10", 8080))
}

// Addresses of external traffic, from the test IP plan.
var (
	lbIP      = netip.MustParseAddr("198.51.100.50")
	extIP     = netip.MustParseAddr("203.0.113.10")
	allowedIP = netip.MustParseAddr("198.51.100.7") // inside 198.51.100.0/28
	deniedIP  = netip.MustParseAddr("198.51.100.200")
)

// spOpt changes a service port under construction.
type spOpt func(*endpoints.ServicePort)

func nodePort(np int32) spOpt { return func(sp *endpoints.ServicePort) { sp.NodePort = np } }

func lbIPs(ips ...string) spOpt {
	return func(sp *endpoints.ServicePort) {
		for _, ip := range ips {
			sp.LoadBalancerIPs = append(sp.LoadBalancerIPs, netip.MustParseAddr(ip))
		}
	}
}

func externalIPs(ips ...string) spOpt {
	return func(sp *endpoints.ServicePort) {
		for _, ip := range ips {
			sp.ExternalIPs = append(sp.ExternalIPs, netip.MustParseAddr(ip))
		}
	}
}

func sourceRanges(cidrs ...string) spOpt {
	return func(sp *endpoints.ServicePort) {
		for _, c := range cidrs {
			sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix(c))
		}
	}
}

// etpLocal sets externalTrafficPolicy Local (with a health check node port).
func etpLocal(hc int32) spOpt {
	return func(sp *endpoints.ServicePort) { sp.ExternalPolicyLocal, sp.HealthCheckNodePort = true, hc }
}

func itpLocal() spOpt { return func(sp *endpoints.ServicePort) { sp.InternalPolicyLocal = true } }

func affinity(d time.Duration) spOpt {
	return func(sp *endpoints.ServicePort) { sp.SessionAffinityTimeout = d }
}

// svc is ns1/svc1:p80 (or name) at clusterIP:80 with opts.
func svc(name endpoints.ServicePortName, clusterIP string, opts ...spOpt) *endpoints.ServicePort {
	sp := servicePort(name, clusterIP, 80)
	for _, o := range opts {
		o(sp)
	}
	return sp
}
