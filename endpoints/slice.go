package endpoints

import (
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// sliceInfo is the part of an EndpointSlice the tracker keeps: which service it belongs to,
// its valid ports, and its valid endpoints (Port left 0: one list serves every port).
type sliceInfo struct {
	Service     types.NamespacedName
	Ports       []slicePort
	Endpoints   []Endpoint
	TriggerTime time.Time // zero when the annotation is absent or does not parse
}

// slicePort is one port of a slice and the service port its endpoints serve.
type slicePort struct {
	Name ServicePortName
	Port int32
}

// convertSlice converts an EndpointSlice. It returns nil for a slice kube-proxy does not use
// (FQDN or other-family addresses, the service-proxy-name or headless label, or no
// kubernetes.io/service-name label: that last one reported) and the invalid parts it skipped.
func convertSlice(s *discovery.EndpointSlice, family v1.IPFamily) (*sliceInfo, issues) {
	if s == nil || s.AddressType != discovery.AddressType(family) {
		return nil, nil // the address types are "IPv4", "IPv6" and "FQDN"
	}
	if _, ok := s.Labels[labelServiceProxyName]; ok {
		return nil, nil
	}
	if _, ok := s.Labels[labelHeadless]; ok {
		return nil, nil
	}
	var is issues
	svcName := s.Labels[discovery.LabelServiceName]
	if svcName == "" {
		is.add(ReasonMissingServiceName, "EndpointSlice has no %s label; slice ignored", discovery.LabelServiceName)
		return nil, is
	}
	info := &sliceInfo{Service: types.NamespacedName{Namespace: s.Namespace, Name: svcName}}
	for i := range s.Ports {
		if p, ok := convertSlicePort(info.Service, &s.Ports[i], &is); ok {
			info.Ports = append(info.Ports, p)
		}
	}
	info.Endpoints = make([]Endpoint, 0, len(s.Endpoints))
	for i := range s.Endpoints {
		if ep, ok := convertEndpoint(&s.Endpoints[i], family, &is); ok {
			info.Endpoints = append(info.Endpoints, ep)
		}
	}
	if v, ok := s.Annotations[v1.EndpointsLastChangeTriggerTime]; ok {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			info.TriggerTime = t
		}
	}
	return info, is
}

func convertSlicePort(svc types.NamespacedName, p *discovery.EndpointPort, is *issues) (slicePort, bool) {
	name := ""
	if p.Name != nil {
		name = *p.Name
	}
	var proto v1.Protocol
	if p.Protocol != nil {
		proto = *p.Protocol
	}
	proto, ok := knownProtocol(proto)
	if !ok {
		is.add(ReasonInvalidProtocol, "port %q: protocol %q is not TCP, UDP or SCTP; port skipped", name, proto)
		return slicePort{}, false
	}
	if p.Port == nil {
		is.add(ReasonInvalidEndpointPort, "port %q has no port number; port skipped", name)
		return slicePort{}, false
	}
	if !validPort(*p.Port) {
		is.add(ReasonInvalidEndpointPort, "port %q: %d is out of range; port skipped", name, *p.Port)
		return slicePort{}, false
	}
	return slicePort{
		Name: ServicePortName{NamespacedName: svc, Port: name, Protocol: proto},
		Port: *p.Port,
	}, true
}

// convertEndpoint converts one slice endpoint, using its first address (the API says consumers
// should). An endpoint without a parsable address of the slice's family is reported.
func convertEndpoint(e *discovery.Endpoint, family v1.IPFamily, is *issues) (Endpoint, bool) {
	if len(e.Addresses) == 0 {
		is.add(ReasonInvalidEndpointAddress, "endpoint has no address; endpoint skipped")
		return Endpoint{}, false
	}
	a, ok := parseIP(e.Addresses[0])
	if !ok || familyOf(a) != family {
		is.add(ReasonInvalidEndpointAddress, "endpoint address %q is not an %s address; endpoint skipped",
			e.Addresses[0], family)
		return Endpoint{}, false
	}
	c := e.Conditions
	ep := Endpoint{
		IP:          a,
		Ready:       c.Ready == nil || *c.Ready,
		Terminating: c.Terminating != nil && *c.Terminating,
	}
	ep.Serving = ep.Ready
	if c.Serving != nil {
		ep.Serving = *c.Serving
	}
	if e.NodeName != nil {
		ep.NodeName = *e.NodeName
	}
	if e.Zone != nil {
		ep.Zone = *e.Zone
	}
	if h := e.Hints; h != nil && len(h.ForZones)+len(h.ForNodes) > 0 {
		ep.Hints = &Hints{}
		for _, z := range h.ForZones {
			ep.Hints.Zones = append(ep.Hints.Zones, z.Name)
		}
		for _, n := range h.ForNodes {
			ep.Hints.Nodes = append(ep.Hints.Nodes, n.Name)
		}
	}
	return ep, true
}
