package ipvs

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/ipset"
)

// benchWorld is n ClusterIP services × 5 remote endpoints, the benchmark's load.
func benchWorld(n int) (endpoints.ServiceMap, endpoints.EndpointsMap) {
	svcs, eps := endpoints.ServiceMap{}, endpoints.EndpointsMap{}
	for i := 0; i < n; i++ {
		name := portName("bench", fmt.Sprintf("svc-%05d", i), "http", v1.ProtocolTCP)
		svcs[name] = &endpoints.ServicePort{Name: name, Port: 80, Protocol: v1.ProtocolTCP,
			ClusterIP: netip.AddrFrom4([4]byte{100, 100, byte(1 + i/250), byte(1 + i%250)})}
		for e := 0; e < 5; e++ {
			k := i*5 + e
			eps[name] = append(eps[name], endpoints.Endpoint{IP: netip.AddrFrom4([4]byte{100, 64, byte(10 + k/250), byte(1 + k%250)}),
				Port: 8080, Ready: true, Serving: true, NodeName: "node-2"})
		}
	}
	return svcs, eps
}

func BenchmarkComputePlan10k(b *testing.B) {
	svcs, eps := benchWorld(10000)
	b.ReportAllocs()
	for b.Loop() {
		ComputePlan(PlanInput{Services: svcs, Endpoints: eps, Node: testNode, Config: testConfig()})
	}
}

// BenchmarkPlanCacheOneChange10k: a plan after one service's endpoints changed, with every
// other fragment cached.
func BenchmarkPlanCacheOneChange10k(b *testing.B) {
	svcs, eps := benchWorld(10000)
	in := PlanInput{Services: svcs, Endpoints: eps, Node: testNode, Config: testConfig()}
	var c PlanCache
	c.Plan(in, nil)
	name := portName("bench", "svc-00042", "http", v1.ProtocolTCP)
	changed := map[types.NamespacedName]struct{}{name.NamespacedName: {}}
	b.ReportAllocs()
	for b.Loop() {
		c.Plan(in, changed)
	}
}

// BenchmarkPartialSyncOneChange10k: a partial sync (no kernel check) after one service's
// endpoints changed, 10,000 services programmed in the fakes.
func BenchmarkPartialSyncOneChange10k(b *testing.B) {
	svcs, eps := benchWorld(10000)
	p, err := NewProxier(Writers{IPVS: NewFakeIPVS(), Links: NewFakeLinks(), IPSet: ipset.NewFake(), IPTables: newFakeIPT()}, testConfig())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Apply(ctx, endpoints.Snapshot{Services: svcs, Endpoints: eps}, testNode, true); err != nil {
		b.Fatal(err)
	}
	name := portName("bench", "svc-00042", "http", v1.ProtocolTCP)
	changed := map[types.NamespacedName]struct{}{name.NamespacedName: {}}
	alt := slices.Clone(eps[name])
	alt[0].Port = 9090
	orig := eps[name]
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i++; i%2 == 0 {
			eps[name] = orig
		} else {
			eps[name] = alt
		}
		if err := p.Apply(ctx, endpoints.Snapshot{Services: svcs, Endpoints: eps, Changed: changed}, testNode, false); err != nil {
			b.Fatal(err)
		}
		if st := p.LastSync(); st.Writes() != 2 {
			b.Fatalf("writes %+v", st)
		}
	}
}
