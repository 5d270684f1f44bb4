package endpoints

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func TestConvertSlice(t *testing.T) {
	svc := nn("ns", "svc")
	http := slicePort{Name: spn("ns", "svc", "http", v1.ProtocolTCP), Port: 8080}
	ready := func(ip string) Endpoint { return Endpoint{IP: addr(ip), Ready: true, Serving: true} }
	trigger := time.Date(2026, 1, 2, 3, 4, 5, 600000000, time.UTC)
	tests := []struct {
		name       string
		family     v1.IPFamily
		slice      *discovery.EndpointSlice
		want       *sliceInfo
		wantIssues issues
	}{{
		name:  "ready endpoints",
		slice: makeSlice("ns", "s1", "svc", "10.1.0.1", "10.1.0.2"),
		want:  &sliceInfo{Service: svc, Ports: []slicePort{http}, Endpoints: []Endpoint{ready("10.1.0.1"), ready("10.1.0.2")}},
	}, {
		name:  "FQDN slice ignored",
		slice: mutSlice(makeSlice("ns", "s1", "svc", "10.1.0.1"), func(s *discovery.EndpointSlice) { s.AddressType = discovery.AddressTypeFQDN }),
	}, {
		name:  "IPv6 slice ignored by an IPv4 tracker",
		slice: mutSlice(makeSlice("ns", "s1", "svc", "fd00::1"), func(s *discovery.EndpointSlice) { s.AddressType = discovery.AddressTypeIPv6 }),
	}, {
		name:   "IPv4 slice ignored by an IPv6 tracker",
		family: v1.IPv6Protocol,
		slice:  makeSlice("ns", "s1", "svc", "10.1.0.1"),
	}, {
		name:   "IPv6 slice used by an IPv6 tracker",
		family: v1.IPv6Protocol,
		slice:  mutSlice(makeSlice("ns", "s1", "svc", "fd00::1"), func(s *discovery.EndpointSlice) { s.AddressType = discovery.AddressTypeIPv6 }),
		want:   &sliceInfo{Service: svc, Ports: []slicePort{http}, Endpoints: []Endpoint{ready("fd00::1")}},
	}, {
		name: "service-proxy-name label ignored",
		slice: mutSlice(makeSlice("ns", "s1", "svc", "10.1.0.1"), func(s *discovery.EndpointSlice) {
			s.Labels[labelServiceProxyName] = "other"
		}),
	}, {
		name: "headless label ignored",
		slice: mutSlice(makeSlice("ns", "s1", "svc", "10.1.0.1"), func(s *discovery.EndpointSlice) {
			s.Labels[labelHeadless] = ""
		}),
	}, {
		name: "no service-name label reported",
		slice: mutSlice(makeSlice("ns", "s1", "svc", "10.1.0.1"), func(s *discovery.EndpointSlice) {
			delete(s.Labels, discovery.LabelServiceName)
		}),
		wantIssues: issues{{ReasonMissingServiceName, "EndpointSlice has no kubernetes.io/service-name label; slice ignored"}},
	}, {
		name: "bad ports skipped, nil name and protocol defaulted",
		slice: mutSlice(makeSlice("ns", "s1", "svc", "10.1.0.1"), func(s *discovery.EndpointSlice) {
			s.Ports = []discovery.EndpointPort{
				{Port: ptr.To[int32](80)},
				{Name: ptr.To("nil"), Protocol: ptr.To(v1.ProtocolTCP)},
				{Name: ptr.To("big"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To[int32](65536)},
				{Name: ptr.To("zero"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To[int32](0)},
				{Name: ptr.To("icmp"), Protocol: ptr.To[v1.Protocol]("ICMP"), Port: ptr.To[int32](1)},
				{Name: ptr.To("sctp"), Protocol: ptr.To(v1.ProtocolSCTP), Port: ptr.To[int32](9)},
			}
		}),
		want: &sliceInfo{Service: svc, Ports: []slicePort{
			{Name: spn("ns", "svc", "", v1.ProtocolTCP), Port: 80},
			{Name: spn("ns", "svc", "sctp", v1.ProtocolSCTP), Port: 9},
		}, Endpoints: []Endpoint{ready("10.1.0.1")}},
		wantIssues: issues{
			{ReasonInvalidEndpointPort, `port "nil" has no port number; port skipped`},
			{ReasonInvalidEndpointPort, `port "big": 65536 is out of range; port skipped`},
			{ReasonInvalidEndpointPort, `port "zero": 0 is out of range; port skipped`},
			{ReasonInvalidProtocol, `port "icmp": protocol "ICMP" is not TCP, UDP or SCTP; port skipped`},
		},
	}, {
		name: "bad addresses skipped, the rest kept",
		slice: mutSlice(makeSlice("ns", "s1", "svc", "10.1.0.1", "10.1.0.x", "fd00::1", "10.1.0.2"), func(s *discovery.EndpointSlice) {
			s.Endpoints = append(s.Endpoints, discovery.Endpoint{})
		}),
		want: &sliceInfo{Service: svc, Ports: []slicePort{http}, Endpoints: []Endpoint{ready("10.1.0.1"), ready("10.1.0.2")}},
		wantIssues: issues{
			{ReasonInvalidEndpointAddress, `endpoint address "10.1.0.x" is not an IPv4 address; endpoint skipped`},
			{ReasonInvalidEndpointAddress, `endpoint address "fd00::1" is not an IPv4 address; endpoint skipped`},
			{ReasonInvalidEndpointAddress, `endpoint has no address; endpoint skipped`},
		},
	}, {
		name: "only the first address is used",
		slice: mutSlice(makeSlice("ns", "s1", "svc", "10.1.0.1"), func(s *discovery.EndpointSlice) {
			s.Endpoints[0].Addresses = append(s.Endpoints[0].Addresses, "10.1.0.9")
		}),
		want: &sliceInfo{Service: svc, Ports: []slicePort{http}, Endpoints: []Endpoint{ready("10.1.0.1")}},
	}, {
		name: "conditions",
		slice: makeSlice("ns", "s1", "svc",
			"10.1.0.1 unready",                        // serving follows ready
			"10.1.0.2 unready serving terminating",    // draining
			"10.1.0.3 unready notserving terminating", // gone
			"10.1.0.4 notserving",                     // ready but not serving: as the API says
		),
		want: &sliceInfo{Service: svc, Ports: []slicePort{http}, Endpoints: []Endpoint{
			{IP: addr("10.1.0.1")},
			{IP: addr("10.1.0.2"), Serving: true, Terminating: true},
			{IP: addr("10.1.0.3"), Terminating: true},
			{IP: addr("10.1.0.4"), Ready: true},
		}},
	}, {
		name:  "node, zone and hints",
		slice: makeSlice("ns", "s1", "svc", "10.1.0.1 node=n1 zone=z1 zh=z1,z2 nh=n1", "10.1.0.2 node=n2 zone=z2"),
		want: &sliceInfo{Service: svc, Ports: []slicePort{http}, Endpoints: []Endpoint{
			{IP: addr("10.1.0.1"), Ready: true, Serving: true, NodeName: "n1", Zone: "z1", Hints: &Hints{Zones: []string{"z1", "z2"}, Nodes: []string{"n1"}}},
			{IP: addr("10.1.0.2"), Ready: true, Serving: true, NodeName: "n2", Zone: "z2"},
		}},
	}, {
		name:  "trigger time",
		slice: mutSlice(makeSlice("ns", "s1", "svc"), withTrigger(trigger)),
		want:  &sliceInfo{Service: svc, Ports: []slicePort{http}, Endpoints: []Endpoint{}, TriggerTime: trigger},
	}, {
		name: "unparsable trigger time ignored",
		slice: mutSlice(makeSlice("ns", "s1", "svc"), func(s *discovery.EndpointSlice) {
			s.Annotations = map[string]string{v1.EndpointsLastChangeTriggerTime: "yesterday"}
		}),
		want: &sliceInfo{Service: svc, Ports: []slicePort{http}, Endpoints: []Endpoint{}},
	}, {
		name: "nil slice",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			family := tc.family
			if family == "" {
				family = v1.IPv4Protocol
			}
			got, gotIssues := convertSlice(tc.slice, family)
			if diff := cmp.Diff(tc.want, got, cmpNetip); diff != "" {
				t.Errorf("slice (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantIssues, gotIssues); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMergeSlices(t *testing.T) {
	info := func(t *testing.T, s *discovery.EndpointSlice) *sliceInfo {
		t.Helper()
		i, is := convertSlice(s, v1.IPv4Protocol)
		if len(is) > 0 || i == nil {
			t.Fatalf("convertSlice(%s) = %v, %v", s.Name, i, is)
		}
		return i
	}
	tests := []struct {
		name   string
		slices []*discovery.EndpointSlice
		want   map[string][]string
	}{{
		name: "no slices",
	}, {
		name:   "slices without endpoints",
		slices: []*discovery.EndpointSlice{makeSlice("ns", "a", "svc")},
	}, {
		name: "two slices merged and sorted by IP",
		slices: []*discovery.EndpointSlice{
			makeSlice("ns", "b", "svc", "10.1.0.3", "10.1.0.1"),
			makeSlice("ns", "a", "svc", "10.1.0.10", "10.1.0.2"),
		},
		want: map[string][]string{"ns/svc:http": {"10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080", "10.1.0.10:8080"}},
	}, {
		name: "duplicate across slices: the ready one wins whatever the slice order",
		slices: []*discovery.EndpointSlice{
			makeSlice("ns", "a", "svc", "10.1.0.1 unready node=old"),
			makeSlice("ns", "b", "svc", "10.1.0.1 node=new"),
			makeSlice("ns", "c", "svc", "10.1.0.2 node=new"),
			makeSlice("ns", "d", "svc", "10.1.0.2 unready node=old"),
		},
		want: map[string][]string{"ns/svc:http": {"10.1.0.1:8080 node=new", "10.1.0.2:8080 node=new"}},
	}, {
		name: "duplicate, both ready: the first slice by name wins",
		slices: []*discovery.EndpointSlice{
			makeSlice("ns", "b", "svc", "10.1.0.1 node=b"),
			makeSlice("ns", "a", "svc", "10.1.0.1 node=a"),
		},
		want: map[string][]string{"ns/svc:http": {"10.1.0.1:8080 node=a"}},
	}, {
		name: "duplicate within one slice",
		slices: []*discovery.EndpointSlice{
			makeSlice("ns", "a", "svc", "10.1.0.1 unready", "10.1.0.1"),
		},
		want: map[string][]string{"ns/svc:http": {"10.1.0.1:8080"}},
	}, {
		name: "same port name with two numbers (a rolling port change): both kept, sorted by port",
		slices: []*discovery.EndpointSlice{
			makeSlice("ns", "a", "svc", "10.1.0.1"),
			mutSlice(makeSlice("ns", "b", "svc", "10.1.0.1"), func(s *discovery.EndpointSlice) {
				s.Ports = []discovery.EndpointPort{slicePortTCP("http", 80)}
			}),
		},
		want: map[string][]string{"ns/svc:http": {"10.1.0.1:80", "10.1.0.1:8080"}},
	}, {
		name: "several ports in one slice",
		slices: []*discovery.EndpointSlice{
			mutSlice(makeSlice("ns", "a", "svc", "10.1.0.1"), func(s *discovery.EndpointSlice) {
				s.Ports = append(s.Ports, slicePortTCP("metrics", 9090))
			}),
		},
		want: map[string][]string{"ns/svc:http": {"10.1.0.1:8080"}, "ns/svc:metrics": {"10.1.0.1:9090"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var bySlice []namedSlice
			for _, s := range tc.slices {
				bySlice = putSlice(bySlice, s.Name, info(t, s))
			}
			got := mergeSlices(bySlice)
			var gotStrings map[string][]string
			for name, eps := range got {
				if gotStrings == nil {
					gotStrings = map[string][]string{}
				}
				gotStrings[name.String()] = epStrings(eps)
			}
			if diff := cmp.Diff(tc.want, gotStrings); diff != "" {
				t.Errorf("merged (-want +got):\n%s", diff)
			}
		})
	}
}

// putSlice keeps a service's slices in name order: inserted where they belong, replaced in
// place, removed; removing one that is not there changes nothing.
func TestPutSlice(t *testing.T) {
	a, b, c, b2 := &sliceInfo{}, &sliceInfo{}, &sliceInfo{}, &sliceInfo{}
	var list []namedSlice
	for _, step := range []struct {
		name string
		info *sliceInfo
		want []namedSlice
	}{
		{"b", b, []namedSlice{{"b", b}}},
		{"c", c, []namedSlice{{"b", b}, {"c", c}}},
		{"a", a, []namedSlice{{"a", a}, {"b", b}, {"c", c}}},
		{"b", b2, []namedSlice{{"a", a}, {"b", b2}, {"c", c}}},
		{"x", nil, []namedSlice{{"a", a}, {"b", b2}, {"c", c}}},
		{"b", nil, []namedSlice{{"a", a}, {"c", c}}},
		{"a", nil, []namedSlice{{"c", c}}},
		{"c", nil, []namedSlice{}},
	} {
		list = putSlice(list, step.name, step.info)
		if !slices.Equal(list, step.want) {
			t.Fatalf("after put %q: %v, want %v", step.name, list, step.want)
		}
	}
}
