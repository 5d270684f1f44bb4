package conntrack

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
)

// Frontend is a service IP, port and protocol: a ClusterIP, externalIP or load-balancer IP.
type Frontend struct {
	Protocol v1.Protocol
	Addr     netip.AddrPort
}

// NodePort is a node port and its protocol, open on every node address.
type NodePort struct {
	Protocol v1.Protocol
	Port     uint16
}

// Backends is the set of serving endpoint addresses (IP:targetPort) of a frontend. An empty,
// non-nil set means the service has no serving endpoint: every flow to it is stale.
type Backends map[netip.AddrPort]struct{}

// Targets is what conntrack cleanup needs to know of the services: the serving endpoints
// behind each service address and node port of the protocols it cleans (UDP, SCTP).
type Targets struct {
	Frontends map[Frontend]Backends
	NodePorts map[NodePort]Backends
	// NodeIPs are the node's addresses where node ports are open. When set, a flow matches a
	// node port only if its original destination is one of them. When empty, any destination
	// matches (upstream's rule) but only flows that were DNATed (reply source different from
	// original destination), so a flow this node forwards or sends to another node's node
	// port is left alone.
	NodeIPs []netip.Addr
}

// cleanedProtocols are the protocols whose stale entries are deleted.
var cleanedProtocols = []v1.Protocol{v1.ProtocolUDP, v1.ProtocolSCTP}

// ComputeTargets builds the Targets of the UDP and SCTP service ports of one address family
// ("" for both) from the services and endpoints a sync programmed. Service addresses and
// endpoints of the other family are skipped; nodeIPs are set as Targets.NodeIPs.
func ComputeTargets(svcs endpoints.ServiceMap, eps endpoints.EndpointsMap, family v1.IPFamily, nodeIPs []netip.Addr) Targets {
	t := Targets{Frontends: map[Frontend]Backends{}, NodePorts: map[NodePort]Backends{}}
	inFamily := func(a netip.Addr) bool { return a.IsValid() && (family == "" || familyOf(a) == family) }
	for _, ip := range nodeIPs {
		if inFamily(ip) {
			t.NodeIPs = append(t.NodeIPs, ip.Unmap())
		}
	}
	for name, svc := range svcs {
		if svc == nil || !slices.Contains(cleanedProtocols, svc.Protocol) || svc.Port <= 0 || svc.Port > 65535 {
			continue
		}
		backends := Backends{}
		for _, ep := range eps[name] {
			if ep.Serving && inFamily(ep.IP) && ep.Port > 0 && ep.Port <= 65535 {
				backends[netip.AddrPortFrom(ep.IP.Unmap(), uint16(ep.Port))] = struct{}{}
			}
		}
		addrs := append([]netip.Addr{svc.ClusterIP}, svc.ExternalIPs...)
		addrs = append(addrs, svc.LoadBalancerIPs...)
		for _, a := range addrs {
			if inFamily(a) {
				fe := Frontend{Protocol: svc.Protocol, Addr: netip.AddrPortFrom(a.Unmap(), uint16(svc.Port))}
				t.Frontends[fe] = mergeBackends(t.Frontends[fe], backends)
			}
		}
		if svc.NodePort > 0 && svc.NodePort <= 65535 {
			np := NodePort{Protocol: svc.Protocol, Port: uint16(svc.NodePort)}
			t.NodePorts[np] = mergeBackends(t.NodePorts[np], backends)
		}
	}
	return t
}

// mergeBackends returns the union of two sets (two service ports claiming one frontend is bad
// input; keeping both sets' endpoints deletes the least).
func mergeBackends(old, add Backends) Backends {
	if old == nil {
		return add
	}
	out := make(Backends, len(old)+len(add))
	for k := range old {
		out[k] = struct{}{}
	}
	for k := range add {
		out[k] = struct{}{}
	}
	return out
}

// StaleFlows returns, sorted, the flows that must be deleted: those to a frontend whose
// reply source is not one of its backends, and those to a node port (see Targets.NodeIPs)
// whose reply source is not one of its backends. A flow to a frontend is judged by the
// frontend only, even if its port is also a node port. Flows of other protocols than UDP and
// SCTP are never stale.
func StaleFlows(t Targets, flows []Flow) []Flow {
	var out []Flow
	for _, f := range flows {
		if isStale(t, f) {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, compareFlows)
	return out
}

func isStale(t Targets, f Flow) bool {
	if !slices.Contains(cleanedProtocols, f.Protocol) {
		return false
	}
	dst := netip.AddrPortFrom(f.Original.Dst.Addr().Unmap(), f.Original.Dst.Port())
	replySrc := netip.AddrPortFrom(f.Reply.Src.Addr().Unmap(), f.Reply.Src.Port())
	if backends, ok := t.Frontends[Frontend{Protocol: f.Protocol, Addr: dst}]; ok {
		_, serving := backends[replySrc]
		return !serving
	}
	backends, ok := t.NodePorts[NodePort{Protocol: f.Protocol, Port: dst.Port()}]
	if !ok {
		return false
	}
	if len(t.NodeIPs) > 0 {
		if !slices.Contains(t.NodeIPs, dst.Addr()) {
			return false
		}
	} else if replySrc == dst {
		return false // not DNATed here: not a flow to this node's node port
	}
	_, serving := backends[replySrc]
	return !serving
}
