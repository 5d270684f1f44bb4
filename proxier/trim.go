package proxier

import (
	"unique"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// lastApplied is kubectl apply's copy of the whole object, kept as an annotation.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// Trim is the informers' transform: it runs on every object before the informer stores it
// and hands it to the handlers. The informers keep every object for as long as it exists, so
// what Trim leaves is memory held all the time: at 10,000 Services and their EndpointSlices
// as the apiserver decodes them, 35 MB.
//
// A Service or an EndpointSlice is replaced by a new object holding only what the endpoints
// tracker reads (compactService, compactSlice). Any other object (a Node, a ServiceCIDR) loses
// its managedFields and kubectl's last-applied annotation, often the larger part of it.
func Trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.Service:
		return compactService(o), nil
	case *discovery.EndpointSlice:
		return compactSlice(o), nil
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return obj, nil // a tombstone: its object was trimmed when stored
	}
	m.SetManagedFields(nil)
	if a := m.GetAnnotations(); a != nil {
		if _, ok := a[lastApplied]; ok {
			delete(a, lastApplied)
			if len(a) == 0 {
				m.SetAnnotations(nil)
			}
		}
	}
	return obj, nil
}

// trackedLabels are the labels the tracker reads, of Services and EndpointSlices.
var trackedLabels = []string{discovery.LabelServiceName, LabelServiceProxyName, LabelHeadless}

// compactMeta keeps of an object's metadata what the tracker reads: namespace and name, the
// resourceVersion (an informer resync redelivers the same version, which reports nothing
// again), the tracked labels and the trigger-time annotation (the programming latency
// metric). The namespace is interned: thousands of objects share a few namespaces.
func compactMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, Namespace: intern(m.Namespace), ResourceVersion: m.ResourceVersion}
	for _, k := range trackedLabels {
		if v, ok := m.Labels[k]; ok {
			if out.Labels == nil {
				out.Labels = make(map[string]string, 1)
			}
			out.Labels[k] = v
		}
	}
	if v, ok := m.Annotations[v1.EndpointsLastChangeTriggerTime]; ok {
		out.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: v}
	}
	return out
}

// compactService keeps the spec (but the selector, which only the EndpointSlice controller
// reads) and the load balancer status. The spec's lists are shared with the decoded object,
// whose remaining parts become garbage.
func compactService(s *v1.Service) *v1.Service {
	out := &v1.Service{
		ObjectMeta: compactMeta(&s.ObjectMeta),
		Spec:       s.Spec,
		Status:     v1.ServiceStatus{LoadBalancer: s.Status.LoadBalancer},
	}
	out.Spec.Selector = nil
	if ips := out.Spec.ClusterIPs; len(ips) > 0 && ips[0] == out.Spec.ClusterIP {
		out.Spec.ClusterIP = ips[0] // one copy of the string, not two
	}
	return out
}

// Shared condition values: every stored endpoint points at one of these instead of three
// values of its own. Stored objects are never modified (the informer's contract).
var (
	condTrue, condFalse = true, false
)

func sharedBool(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return &condTrue
	default:
		return &condFalse
	}
}

// compactSlice keeps the address type, the ports and of each endpoint its first address (the
// only one the tracker uses, as the API tells consumers to), its conditions, node, zone and
// hints; not its targetRef, hostname or deprecatedTopology, nor the slice's owner references.
// The lists are allocated at their length (the decoder's appends leave up to twice that), and
// node and zone names are interned.
func compactSlice(s *discovery.EndpointSlice) *discovery.EndpointSlice {
	out := &discovery.EndpointSlice{
		ObjectMeta:  compactMeta(&s.ObjectMeta),
		AddressType: s.AddressType,
	}
	if len(s.Ports) > 0 {
		out.Ports = append(make([]discovery.EndpointPort, 0, len(s.Ports)), s.Ports...)
	}
	if len(s.Endpoints) > 0 {
		out.Endpoints = make([]discovery.Endpoint, len(s.Endpoints))
	}
	for i := range s.Endpoints {
		in, ep := &s.Endpoints[i], &out.Endpoints[i]
		if len(in.Addresses) > 0 {
			ep.Addresses = in.Addresses[:1:1]
		}
		ep.Conditions = discovery.EndpointConditions{
			Ready:       sharedBool(in.Conditions.Ready),
			Serving:     sharedBool(in.Conditions.Serving),
			Terminating: sharedBool(in.Conditions.Terminating),
		}
		ep.NodeName = internPtr(in.NodeName)
		ep.Zone = internPtr(in.Zone)
		ep.Hints = in.Hints
	}
	return out
}

// intern returns the canonical copy of s, so that equal strings held by many objects share
// one backing array.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

func internPtr(s *string) *string {
	if s == nil {
		return nil
	}
	v := intern(*s)
	return &v
}
