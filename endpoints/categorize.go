package endpoints

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Categorized is the endpoints of one service port as one node may use them.
//
// Traffic to the cluster IP uses Local when the service's InternalPolicyLocal is set, Cluster
// otherwise; traffic from outside (node ports, external and load-balancer IPs) uses Local when
// ExternalPolicyLocal is set, Cluster otherwise. Internal and External make that choice.
type Categorized struct {
	// Cluster holds the endpoints for traffic with cluster traffic policy: ready ones
	// (narrowed by topology hints), else serving-terminating ones. For a service whose only
	// policy is a Local internal one (InternalPolicyLocal and not externally accessible) it is
	// the Local set, since no traffic uses cluster policy. nil when none is usable.
	Cluster []Endpoint
	// Local holds this node's endpoints for traffic with local traffic policy: ready ones,
	// else serving-terminating ones. nil when none is usable or when the service has no Local
	// policy.
	Local []Endpoint
	// AllReachable is the union of Cluster and Local, sorted (for conntrack cleanup and
	// masquerade decisions).
	AllReachable []Endpoint
	// HasAnyEndpoints reports whether the service has a usable (ready, or serving and
	// terminating) endpoint anywhere in the cluster, as upstream: with none the backends
	// REJECT, with some but none local, Local-policy traffic is dropped.
	HasAnyEndpoints bool
}

// Internal returns the endpoints for traffic to the service's cluster IP.
func (c Categorized) Internal(svc *ServicePort) []Endpoint {
	if svc.InternalPolicyLocal {
		return c.Local
	}
	return c.Cluster
}

// External returns the endpoints for traffic to the service's node port, external IPs and
// load-balancer IPs.
func (c Categorized) External(svc *ServicePort) []Endpoint {
	if svc.ExternalPolicyLocal {
		return c.Local
	}
	return c.Cluster
}

// CategorizeEndpoints picks, from the endpoints of one service port, those this node uses for
// each traffic policy. It is upstream kube-proxy's CategorizeEndpoints:
//
//   - usable means Ready; when no endpoint of a category is ready, that category falls back
//     to its Serving and Terminating endpoints (the cluster and local sets independently);
//   - Local holds the endpoints on node.Name, computed only when a traffic policy is Local;
//   - topology: when every ready endpoint has node hints and one is hinted for node.Name, the
//     cluster set is narrowed to those; else, when every ready endpoint has zone hints and one
//     is hinted for node.Zone, to those. The EndpointSlice controller writes hints only for
//     services that opt in (spec.trafficDistribution or the topology-mode annotation), so
//     hints alone decide, as upstream. A hint set that matches nothing is ignored.
//
// eps must be sorted by IP then port (as an EndpointsMap holds them); the results are too.
func CategorizeEndpoints(eps []Endpoint, svc *ServicePort, node NodeInfo) Categorized {
	var c Categorized
	if len(eps) == 0 || svc == nil {
		return c
	}
	usesLocal := svc.InternalPolicyLocal || svc.ExternalPolicyLocal
	usesCluster := !svc.InternalPolicyLocal || svc.ExternallyAccessible()

	var topo topologyMode
	if usesCluster {
		topo = topologyFromHints(eps, node)
		c.Cluster = usable(eps, func(ep Endpoint) bool { return topo.allows(ep, node) })
	}
	if usesLocal {
		c.Local = usable(eps, func(ep Endpoint) bool { return node.Name != "" && ep.NodeName == node.Name })
	}
	c.HasAnyEndpoints = slices.ContainsFunc(eps, func(ep Endpoint) bool {
		return ep.Ready || (ep.Serving && ep.Terminating)
	})
	if !usesCluster {
		c.Cluster, c.AllReachable = c.Local, c.Local
		return c
	}
	c.AllReachable = union(c.Cluster, c.Local)
	return c
}

// LocalReadyEndpoints counts, per service, the distinct ready endpoint IPs on the node (all
// ports together; serving-terminating ones do not count): what the health-check node port
// server reports for services with externalTrafficPolicy Local, as upstream.
func LocalReadyEndpoints(m EndpointsMap, nodeName string) map[types.NamespacedName]int {
	ips := map[types.NamespacedName]map[netip.Addr]struct{}{}
	if nodeName == "" {
		return map[types.NamespacedName]int{}
	}
	for name, eps := range m {
		for _, ep := range eps {
			if !ep.Ready || ep.NodeName != nodeName {
				continue
			}
			set := ips[name.NamespacedName]
			if set == nil {
				set = map[netip.Addr]struct{}{}
				ips[name.NamespacedName] = set
			}
			set[ep.IP] = struct{}{}
		}
	}
	out := make(map[types.NamespacedName]int, len(ips))
	for svc, set := range ips {
		out[svc] = len(set)
	}
	return out
}

// topologyMode is which hints narrow the cluster set: none, node hints or zone hints.
type topologyMode string

const (
	topologyNone topologyMode = ""
	topologyNode topologyMode = v1.ServiceTrafficDistributionPreferSameNode
	topologyZone topologyMode = v1.ServiceTrafficDistributionPreferSameZone
)

func (m topologyMode) allows(ep Endpoint, node NodeInfo) bool {
	switch m {
	case topologyNode:
		return slices.Contains(ep.NodeHints(), node.Name)
	case topologyZone:
		return slices.Contains(ep.ZoneHints(), node.Zone)
	}
	return true
}

// topologyFromHints chooses the topology mode from the ready endpoints' hints: node hints if
// all have some and one names this node, else zone hints if all have some and one names this
// node's zone, else none.
func topologyFromHints(eps []Endpoint, node NodeInfo) topologyMode {
	anyReady := false
	allNode, forNode := true, false
	allZone, forZone := true, false
	for _, ep := range eps {
		if !ep.Ready {
			continue
		}
		anyReady = true
		if len(ep.NodeHints()) == 0 {
			allNode = false
		} else if slices.Contains(ep.NodeHints(), node.Name) {
			forNode = true
		}
		if len(ep.ZoneHints()) == 0 {
			allZone = false
		} else if node.Zone != "" && slices.Contains(ep.ZoneHints(), node.Zone) {
			forZone = true
		}
	}
	switch {
	case !anyReady:
		return topologyNone
	case allNode && forNode:
		return topologyNode
	case allZone && forZone:
		return topologyZone
	}
	return topologyNone
}

// usable returns the ready endpoints that pass keep, or if there are none the serving and
// terminating ones that pass keep, or nil.
func usable(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	out := filter(eps, func(ep Endpoint) bool { return ep.Ready && keep(ep) })
	if out == nil {
		out = filter(eps, func(ep Endpoint) bool { return ep.Serving && ep.Terminating && keep(ep) })
	}
	return out
}

func filter(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	var out []Endpoint
	for _, ep := range eps {
		if keep(ep) {
			out = append(out, ep)
		}
	}
	return out
}

// union merges two sorted endpoint lists, dropping duplicates. When one list holds the other
// it is returned as is.
func union(a, b []Endpoint) []Endpoint {
	switch {
	case len(b) == 0:
		return a
	case len(a) == 0:
		return b
	}
	out := make([]Endpoint, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := compareEndpoints(a[i], b[j]); {
		case c < 0:
			out = append(out, a[i])
			i++
		case c > 0:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}
