package endpoints

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// eps converts ep specs (see ep) into sorted Endpoints on port 80.
func eps(t *testing.T, specs ...string) []Endpoint {
	t.Helper()
	s := makeSlice("ns", "s", "svc", specs...)
	s.Ports = []discovery.EndpointPort{slicePortTCP("http", 80)}
	info, is := convertSlice(s, v1.IPv4Protocol)
	if len(is) > 0 {
		t.Fatalf("bad endpoint specs: %v", is)
	}
	return mergeSlices([]namedSlice{{name: "s", info: info}})[spn("ns", "svc", "http", v1.ProtocolTCP)]
}

// catSummary is a Categorized with endpoints as "ip:port" strings.
type catSummary struct {
	Cluster, Local, AllReachable []string
	HasAnyEndpoints              bool
}

func ipList(eps []Endpoint) []string {
	if eps == nil {
		return nil
	}
	out := make([]string, 0, len(eps))
	for _, e := range eps {
		out = append(out, e.IP.String())
	}
	return out
}

func TestCategorizeEndpoints(t *testing.T) {
	node := NodeInfo{Name: "n1", Zone: "z1"}
	clusterSvc := basePort("ns", "svc")
	itpLocal := withPort(clusterSvc, func(p *ServicePort) { p.InternalPolicyLocal = true })
	nodePort := withPort(clusterSvc, func(p *ServicePort) { p.NodePort = 30080 })
	etpLocal := withPort(nodePort, func(p *ServicePort) { p.ExternalPolicyLocal = true })
	bothLocal := withPort(etpLocal, func(p *ServicePort) { p.InternalPolicyLocal = true })
	itpLocalNodePort := withPort(nodePort, func(p *ServicePort) { p.InternalPolicyLocal = true })

	tests := []struct {
		name  string
		svc   *ServicePort
		node  NodeInfo
		specs []string
		want  catSummary
	}{{
		name: "no endpoints",
		svc:  clusterSvc,
	}, {
		name:  "cluster policy: ready ones, unready not used",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 node=n1", "10.0.1.2 node=n2", "10.0.1.3 unready node=n2"},
		want:  catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"}, AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "cluster policy: only unready endpoints",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 unready", "10.0.1.2 unready notserving terminating"},
		want:  catSummary{},
	}, {
		name:  "cluster policy: no ready, falls back to serving-terminating",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 unready serving terminating", "10.0.1.2 unready notserving terminating", "10.0.1.3 unready"},
		want:  catSummary{Cluster: []string{"10.0.1.1"}, AllReachable: []string{"10.0.1.1"}, HasAnyEndpoints: true},
	}, {
		name:  "cluster policy: ready ones preferred over serving-terminating",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 unready serving terminating", "10.0.1.2"},
		want:  catSummary{Cluster: []string{"10.0.1.2"}, AllReachable: []string{"10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "ITP Local: cluster traffic uses the local set",
		svc:   itpLocal,
		specs: []string{"10.0.1.1 node=n1", "10.0.1.2 node=n2", "10.0.1.3 unready node=n1"},
		want: catSummary{Cluster: []string{"10.0.1.1"}, Local: []string{"10.0.1.1"},
			AllReachable: []string{"10.0.1.1"}, HasAnyEndpoints: true},
	}, {
		name:  "ITP Local: no local endpoint, remote ones exist",
		svc:   itpLocal,
		specs: []string{"10.0.1.2 node=n2"},
		want:  catSummary{HasAnyEndpoints: true},
	}, {
		name:  "ITP Local: local falls back to serving-terminating",
		svc:   itpLocal,
		specs: []string{"10.0.1.1 unready serving terminating node=n1", "10.0.1.2 node=n2"},
		want: catSummary{Cluster: []string{"10.0.1.1"}, Local: []string{"10.0.1.1"},
			AllReachable: []string{"10.0.1.1"}, HasAnyEndpoints: true},
	}, {
		name:  "ITP Local on a node-port service: external traffic still has the cluster set",
		svc:   itpLocalNodePort,
		specs: []string{"10.0.1.1 node=n1", "10.0.1.2 node=n2"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"}, Local: []string{"10.0.1.1"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "ETP Local: cluster and local sets",
		svc:   etpLocal,
		specs: []string{"10.0.1.1 node=n1", "10.0.1.2 node=n2", "10.0.1.3 unready serving terminating node=n1"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"}, Local: []string{"10.0.1.1"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "ETP Local: local falls back to terminating while the cluster set has ready remote ones",
		svc:   etpLocal,
		specs: []string{"10.0.1.1 unready serving terminating node=n1", "10.0.1.2 node=n2"},
		want: catSummary{Cluster: []string{"10.0.1.2"}, Local: []string{"10.0.1.1"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "ETP Local: no local endpoint",
		svc:   etpLocal,
		specs: []string{"10.0.1.2 node=n2"},
		want:  catSummary{Cluster: []string{"10.0.1.2"}, AllReachable: []string{"10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "ETP Local: only unready endpoints",
		svc:   etpLocal,
		specs: []string{"10.0.1.1 unready node=n1"},
		want:  catSummary{},
	}, {
		name:  "ITP and ETP Local",
		svc:   bothLocal,
		specs: []string{"10.0.1.1 node=n1", "10.0.1.2 node=n2"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"}, Local: []string{"10.0.1.1"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "local needs a node name",
		svc:   etpLocal,
		node:  NodeInfo{Zone: "z1"},
		specs: []string{"10.0.1.1", "10.0.1.2 node=n2"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "zone hints narrow the cluster set",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 zh=z1", "10.0.1.2 zh=z2", "10.0.1.3 zh=z1,z2"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.3"},
			AllReachable: []string{"10.0.1.1", "10.0.1.3"}, HasAnyEndpoints: true},
	}, {
		name:  "zone hints: one ready endpoint without hints disables topology",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 zh=z1", "10.0.1.2"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "zone hints: unready endpoints without hints do not matter",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 zh=z1", "10.0.1.2 zh=z2", "10.0.1.3 unready"},
		want:  catSummary{Cluster: []string{"10.0.1.1"}, AllReachable: []string{"10.0.1.1"}, HasAnyEndpoints: true},
	}, {
		name:  "zone hints: none for this zone, all used",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 zh=z2", "10.0.1.2 zh=z3"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "zone hints: node without a zone, all used",
		svc:   clusterSvc,
		node:  NodeInfo{Name: "n1"},
		specs: []string{"10.0.1.1 zh=z1", "10.0.1.2 zh=z2"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "node hints narrow the cluster set before zone hints",
		svc:   withPort(clusterSvc, func(p *ServicePort) { p.TrafficDistribution = v1.ServiceTrafficDistributionPreferSameNode }),
		specs: []string{"10.0.1.1 nh=n1 zh=z1", "10.0.1.2 nh=n2 zh=z1", "10.0.1.3 nh=n3 zh=z2"},
		want:  catSummary{Cluster: []string{"10.0.1.1"}, AllReachable: []string{"10.0.1.1"}, HasAnyEndpoints: true},
	}, {
		name:  "node hints: none for this node, falls back to zone hints",
		svc:   withPort(clusterSvc, func(p *ServicePort) { p.TrafficDistribution = v1.ServiceTrafficDistributionPreferSameNode }),
		specs: []string{"10.0.1.2 nh=n2 zh=z1", "10.0.1.3 nh=n3 zh=z2"},
		want:  catSummary{Cluster: []string{"10.0.1.2"}, AllReachable: []string{"10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "node hints: one missing, falls back to zone hints",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 nh=n1 zh=z1", "10.0.1.2 zh=z1", "10.0.1.3 nh=n3 zh=z2"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "hints: no ready endpoints, serving-terminating ones used regardless of hints",
		svc:   clusterSvc,
		specs: []string{"10.0.1.1 unready serving terminating zh=z2", "10.0.1.2 unready serving terminating zh=z1"},
		want: catSummary{Cluster: []string{"10.0.1.1", "10.0.1.2"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "hints with ETP Local: all reachable holds the local endpoint outside the zone",
		svc:   etpLocal,
		specs: []string{"10.0.1.1 zh=z1 node=n2", "10.0.1.2 zh=z2 node=n1"},
		want: catSummary{Cluster: []string{"10.0.1.1"}, Local: []string{"10.0.1.2"},
			AllReachable: []string{"10.0.1.1", "10.0.1.2"}, HasAnyEndpoints: true},
	}, {
		name:  "hints do not apply to ITP Local",
		svc:   itpLocal,
		specs: []string{"10.0.1.1 zh=z2 node=n1", "10.0.1.2 zh=z1 node=n2"},
		want: catSummary{Cluster: []string{"10.0.1.1"}, Local: []string{"10.0.1.1"},
			AllReachable: []string{"10.0.1.1"}, HasAnyEndpoints: true},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.node
			if n == (NodeInfo{}) {
				n = node
			}
			c := CategorizeEndpoints(eps(t, tc.specs...), tc.svc, n)
			got := catSummary{
				Cluster:         ipList(c.Cluster),
				Local:           ipList(c.Local),
				AllReachable:    ipList(c.AllReachable),
				HasAnyEndpoints: c.HasAnyEndpoints,
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("CategorizeEndpoints (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCategorizedInternalExternal(t *testing.T) {
	c := Categorized{Cluster: []Endpoint{{IP: addr("10.0.1.1")}}, Local: []Endpoint{{IP: addr("10.0.1.2")}}}
	base := basePort("ns", "svc")
	tests := []struct {
		name                  string
		svc                   *ServicePort
		wantInternal, wantExt []string
	}{
		{"cluster policies", base, []string{"10.0.1.1"}, []string{"10.0.1.1"}},
		{"ITP Local", withPort(base, func(p *ServicePort) { p.InternalPolicyLocal = true }), []string{"10.0.1.2"}, []string{"10.0.1.1"}},
		{"ETP Local", withPort(base, func(p *ServicePort) { p.ExternalPolicyLocal = true }), []string{"10.0.1.1"}, []string{"10.0.1.2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.wantInternal, ipList(c.Internal(tc.svc))); diff != "" {
				t.Errorf("Internal (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantExt, ipList(c.External(tc.svc))); diff != "" {
				t.Errorf("External (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLocalReadyEndpoints(t *testing.T) {
	m := EndpointsMap{
		spn("ns", "a", "http", v1.ProtocolTCP): eps(t, "10.0.1.1 node=n1", "10.0.1.2 node=n1", "10.0.1.3 node=n2"),
		// The same IPs on another port count once.
		spn("ns", "a", "dns", v1.ProtocolUDP): eps(t, "10.0.1.1 node=n1", "10.0.1.2 node=n1"),
		// Terminating and unready local endpoints do not count.
		spn("ns", "b", "http", v1.ProtocolTCP): eps(t, "10.0.2.1 unready serving terminating node=n1", "10.0.2.2 unready node=n1"),
		spn("ns", "c", "http", v1.ProtocolTCP): eps(t, "10.0.3.1 node=n2"),
	}
	want := map[types.NamespacedName]int{nn("ns", "a"): 2}
	if diff := cmp.Diff(want, LocalReadyEndpoints(m, "n1")); diff != "" {
		t.Errorf("LocalReadyEndpoints (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[types.NamespacedName]int{}, LocalReadyEndpoints(EndpointsMap{
		spn("ns", "d", "http", v1.ProtocolTCP): eps(t, "10.0.4.1"),
	}, "")); diff != "" {
		t.Errorf("LocalReadyEndpoints without a node name (-want +got):\n%s", diff)
	}
}

func TestUnion(t *testing.T) {
	a := []Endpoint{{IP: addr("10.0.0.1"), Port: 80}, {IP: addr("10.0.0.3"), Port: 80}}
	b := []Endpoint{{IP: addr("10.0.0.2"), Port: 80}, {IP: addr("10.0.0.3"), Port: 80}, {IP: addr("10.0.0.3"), Port: 81}}
	tests := []struct {
		name string
		a, b []Endpoint
		want []string
	}{
		{"both empty", nil, nil, nil},
		{"first only", a, nil, []string{"10.0.0.1:80", "10.0.0.3:80"}},
		{"second only", nil, b, []string{"10.0.0.2:80", "10.0.0.3:80", "10.0.0.3:81"}},
		{"merged without duplicates", a, b, []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.3:81"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, e := range union(tc.a, tc.b) {
				got = append(got, e.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("union (-want +got):\n%s", diff)
			}
		})
	}
}
