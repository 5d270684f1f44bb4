package endpoints

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// namedSlice is one of a service's slices, under its name.
type namedSlice struct {
	name string
	info *sliceInfo
}

// putSlice returns list, which is in name order, with the slice called name set to info (nil
// removes it). A service has one slice per 100 endpoints and address family: a sorted list
// costs 24 bytes a slice where a Go map of one costs a group of eight slots.
func putSlice(list []namedSlice, name string, info *sliceInfo) []namedSlice {
	i, found := slices.BinarySearchFunc(list, name, func(s namedSlice, name string) int { return strings.Compare(s.name, name) })
	switch {
	case found && info == nil:
		return slices.Delete(list, i, i+1)
	case found:
		list[i].info = info
		return list
	case info == nil:
		return list
	}
	return slices.Insert(list, i, namedSlice{name: name, info: info})
}

// mergeSlices folds the slices of one service (in name order) into the endpoints of each of
// its ports. An address:port found more than once (in several slices, or twice in one) is kept
// once: the first ready occurrence, else the first one, slices taken in name order. Each list
// is sorted by IP then port. It returns nil when there is no endpoint at all.
func mergeSlices(bySlice []namedSlice) map[ServicePortName][]Endpoint {
	type key struct {
		name ServicePortName
		ip   netip.Addr
		port int32
	}
	var out map[ServicePortName][]Endpoint
	seen := map[key]int{} // index in out[name]
	// Each port's list is allocated once, for every endpoint of every slice: exact for the
	// usual service (its slices carry the same ports), where growing by append left up to
	// twice the memory behind (the tracker keeps these lists for every service).
	total := 0
	for _, s := range bySlice {
		total += len(s.info.Endpoints)
	}
	for _, s := range bySlice {
		info := s.info
		for _, p := range info.Ports {
			for _, ep := range info.Endpoints {
				ep.Port = p.Port
				k := key{name: p.Name, ip: ep.IP, port: p.Port}
				if i, dup := seen[k]; dup {
					if ep.Ready && !out[p.Name][i].Ready {
						out[p.Name][i] = ep
					}
					continue
				}
				if out == nil {
					out = make(map[ServicePortName][]Endpoint, len(info.Ports))
				}
				if out[p.Name] == nil {
					out[p.Name] = make([]Endpoint, 0, total)
				}
				seen[k] = len(out[p.Name])
				out[p.Name] = append(out[p.Name], ep)
			}
		}
	}
	for _, eps := range out {
		slices.SortFunc(eps, compareEndpoints)
	}
	return out
}

// compareEndpoints orders endpoints by IP, then port.
func compareEndpoints(a, b Endpoint) int {
	if c := a.IP.Compare(b.IP); c != 0 {
		return c
	}
	return int(a.Port - b.Port)
}

// portList is the ports of a map sorted by name (nil for none).
func portList(m map[ServicePortName]*ServicePort) []*ServicePort {
	if len(m) == 0 {
		return nil
	}
	return slices.SortedFunc(maps.Values(m), func(a, b *ServicePort) int { return compareNames(a.Name, b.Name) })
}

// endpointsList is the per-port endpoints of a map sorted by port name (nil for none).
func endpointsList(m map[ServicePortName][]Endpoint) []portEndpoints {
	if len(m) == 0 {
		return nil
	}
	out := make([]portEndpoints, 0, len(m))
	for name, eps := range m {
		out = append(out, portEndpoints{name: name, endpoints: eps})
	}
	slices.SortFunc(out, func(a, b portEndpoints) int { return compareNames(a.name, b.name) })
	return out
}

func compareNames(a, b ServicePortName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
}

// equalEndpointLists reports whether two sorted per-port endpoint lists hold the same values.
func equalEndpointLists(a, b []portEndpoints) bool {
	return slices.EqualFunc(a, b, func(x, y portEndpoints) bool {
		return x.name == y.name && slices.EqualFunc(x.endpoints, y.endpoints, equalEndpoint)
	})
}

func equalEndpoint(a, b Endpoint) bool {
	return a.IP == b.IP && a.Port == b.Port &&
		a.Ready == b.Ready && a.Serving == b.Serving && a.Terminating == b.Terminating &&
		a.NodeName == b.NodeName && a.Zone == b.Zone &&
		slices.Equal(a.ZoneHints(), b.ZoneHints()) && slices.Equal(a.NodeHints(), b.NodeHints())
}

func equalServicePort(a, b *ServicePort) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Name == b.Name && a.ClusterIP == b.ClusterIP && a.Port == b.Port &&
		a.Protocol == b.Protocol && a.NodePort == b.NodePort &&
		slices.Equal(a.ExternalIPs, b.ExternalIPs) &&
		slices.Equal(a.LoadBalancerIPs, b.LoadBalancerIPs) &&
		slices.Equal(a.LoadBalancerSourceRanges, b.LoadBalancerSourceRanges) &&
		a.SessionAffinityTimeout == b.SessionAffinityTimeout &&
		a.ExternalPolicyLocal == b.ExternalPolicyLocal && a.InternalPolicyLocal == b.InternalPolicyLocal &&
		a.HealthCheckNodePort == b.HealthCheckNodePort && a.TrafficDistribution == b.TrafficDistribution
}
