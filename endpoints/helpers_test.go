package endpoints

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// cmpNetip compares netip values (whose fields are unexported) by value.
var cmpNetip = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func nn(ns, name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }

func spn(ns, name, port string, proto v1.Protocol) ServicePortName {
	return ServicePortName{NamespacedName: nn(ns, name), Port: port, Protocol: proto}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, addr(s))
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// makeService returns a ClusterIP service ns/name with cluster IP 10.0.0.1 and one TCP port
// "http" 80, changed by the mutators.
func makeService(ns, name string, mutate ...func(*v1.Service)) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  "10.0.0.1",
			ClusterIPs: []string{"10.0.0.1"},
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			Ports:      []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

// basePort is the ServicePort makeService's default converts to.
func basePort(ns, name string) *ServicePort {
	return &ServicePort{
		Name:      spn(ns, name, "http", v1.ProtocolTCP),
		ClusterIP: addr("10.0.0.1"),
		Port:      80,
		Protocol:  v1.ProtocolTCP,
	}
}

// withPort returns a copy of p changed by f.
func withPort(p *ServicePort, f func(*ServicePort)) *ServicePort {
	c := *p
	f(&c)
	return &c
}

// ep describes one slice endpoint for makeSlice: "ip" ready, plus optional flags after
// spaces: "unready", "terminating" (serving stays as ready unless "serving" or
// "notserving"), "node=NAME", "zone=Z", "zh=a,b" (zone hints), "nh=a,b" (node hints).
func ep(spec string) discovery.Endpoint {
	fields := strings.Fields(spec)
	e := discovery.Endpoint{Addresses: []string{fields[0]}}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "unready":
			e.Conditions.Ready = ptr.To(false)
		case "terminating":
			e.Conditions.Terminating = ptr.To(true)
		case "serving":
			e.Conditions.Serving = ptr.To(true)
		case "notserving":
			e.Conditions.Serving = ptr.To(false)
		case "node":
			e.NodeName = ptr.To(v)
		case "zone":
			e.Zone = ptr.To(v)
		case "zh":
			if e.Hints == nil {
				e.Hints = &discovery.EndpointHints{}
			}
			for _, z := range strings.Split(v, ",") {
				e.Hints.ForZones = append(e.Hints.ForZones, discovery.ForZone{Name: z})
			}
		case "nh":
			if e.Hints == nil {
				e.Hints = &discovery.EndpointHints{}
			}
			for _, n := range strings.Split(v, ",") {
				e.Hints.ForNodes = append(e.Hints.ForNodes, discovery.ForNode{Name: n})
			}
		default:
			panic(fmt.Sprintf("ep %q: unknown flag %q", spec, f))
		}
	}
	return e
}

// slicePortTCP is a named TCP slice port.
func slicePortTCP(name string, port int32) discovery.EndpointPort {
	return discovery.EndpointPort{Name: ptr.To(name), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(port)}
}

// makeSlice returns an IPv4 slice ns/name of service svc with port "http" 8080 and the
// endpoints described by specs (see ep).
func makeSlice(ns, name, svc string, specs ...string) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, ResourceVersion: "1",
			Labels: map[string]string{discovery.LabelServiceName: svc},
		},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{slicePortTCP("http", 8080)},
	}
	for _, spec := range specs {
		s.Endpoints = append(s.Endpoints, ep(spec))
	}
	return s
}

// mutSlice returns a deep copy of s changed by f (as an informer update would deliver).
func mutSlice(s *discovery.EndpointSlice, f func(*discovery.EndpointSlice)) *discovery.EndpointSlice {
	c := s.DeepCopy()
	f(c)
	return c
}

// mutService returns a deep copy of svc changed by f.
func mutService(svc *v1.Service, f func(*v1.Service)) *v1.Service {
	c := svc.DeepCopy()
	f(c)
	return c
}

func withTrigger(t time.Time) func(*discovery.EndpointSlice) {
	return func(s *discovery.EndpointSlice) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[v1.EndpointsLastChangeTriggerTime] = t.Format(time.RFC3339Nano)
	}
}

// epStrings renders endpoints compactly: "ip:port" plus the non-default conditions.
func epStrings(eps []Endpoint) []string {
	if eps == nil {
		return nil
	}
	out := make([]string, 0, len(eps))
	for _, e := range eps {
		s := e.String()
		if !e.Ready {
			s += " unready"
		}
		if e.Serving != e.Ready {
			s += fmt.Sprintf(" serving=%t", e.Serving)
		}
		if e.Terminating {
			s += " terminating"
		}
		if e.NodeName != "" {
			s += " node=" + e.NodeName
		}
		out = append(out, s)
	}
	return out
}

// snapSummary is a Snapshot in a form that reads well in a diff.
type snapSummary struct {
	Services        []string
	Endpoints       map[string][]string
	Changed         []string
	TriggerTimes    map[string][]time.Time
	ServiceChanges  int
	EndpointChanges int
}

func summarize(t *testing.T, s Snapshot) snapSummary {
	t.Helper()
	sum := snapSummary{
		Endpoints:       map[string][]string{},
		TriggerTimes:    map[string][]time.Time{},
		ServiceChanges:  s.ServiceChanges,
		EndpointChanges: s.EndpointChanges,
	}
	for name, p := range s.Services {
		if p.Name != name {
			t.Errorf("Services[%v] holds port named %v", name, p.Name)
		}
		sum.Services = append(sum.Services, fmt.Sprintf("%s/%s %s:%d", name, name.Protocol, p.ClusterIP, p.Port))
	}
	slices.Sort(sum.Services)
	for name, eps := range s.Endpoints {
		sum.Endpoints[name.String()+"/"+string(name.Protocol)] = epStrings(eps)
	}
	for name := range s.Changed {
		sum.Changed = append(sum.Changed, name.String())
	}
	slices.Sort(sum.Changed)
	for name, times := range s.TriggerTimes {
		sum.TriggerTimes[name.String()] = times
	}
	return sum
}

// equalEndpointMaps reports whether two per-port endpoint maps hold the same values.
func equalEndpointMaps(a, b map[ServicePortName][]Endpoint) bool {
	return maps.EqualFunc(a, b, func(x, y []Endpoint) bool { return slices.EqualFunc(x, y, equalEndpoint) })
}

// equalPortMaps reports whether two per-port service maps hold the same values.
func equalPortMaps(a, b map[ServicePortName]*ServicePort) bool {
	return maps.EqualFunc(a, b, equalServicePort)
}
