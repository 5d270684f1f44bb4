package main

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
	"github.com/kproxy/kproxy/proxier"
)

// pipeline is the daemon's wiring (tracker → reconciler → iptables mode) over the iptables
// Fake: the same pieces serve() connects, minus informers and the kernel.
type pipeline struct {
	t        *testing.T
	tracker  *endpoints.Tracker
	rec      *proxier.Reconciler
	ipt      *iptables.Fake
	invalids []string
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	p := &pipeline{t: t, ipt: iptables.NewFake(iptables.IPv4)}
	p.tracker = endpoints.NewTracker(endpoints.TrackerOptions{
		IPFamily: v1.IPv4Protocol,
		OnInvalid: func(kind, ns, name, reason, _ string) {
			p.invalids = append(p.invalids, kind+" "+ns+"/"+name+" "+reason)
		},
	})
	backend := iptproxy.NewProxier(p.ipt, iptproxy.Config{
		Family: iptables.IPv4, ClusterCIDR: netip.MustParsePrefix("100.64.0.0/16"), MasqueradeBit: 14,
	})
	p.rec = proxier.NewReconciler(p.tracker, backend, proxier.NewMetrics().For("IPv4"), proxier.NewHealth(time.Minute, []string{"IPv4"}, nil), proxier.ReconcilerOptions{})
	p.rec.SetNode(endpoints.NodeInfo{Name: "node1"})
	return p
}

func (p *pipeline) sync() {
	p.t.Helper()
	if err := p.rec.Sync(context.Background()); err != nil {
		p.t.Fatalf("sync: %v", err)
	}
}

// trace sends a TCP packet from a pod on node1 and returns the sorted DNAT destinations
// (or the verdict when there is no DNAT).
func (p *pipeline) trace(dst string, port int) []string {
	p.t.Helper()
	outs, err := iptables.Trace(p.ipt, iptables.Packet{
		Src: netip.MustParseAddr("100.64.1.5"), Dst: netip.MustParseAddr(dst),
		Protocol: iptables.ProtocolTCP, DstPort: port,
	}, iptables.HookPrerouting, []netip.Addr{netip.MustParseAddr("192.0.2.11")})
	if err != nil {
		p.t.Fatalf("trace %s:%d: %v", dst, port, err)
	}
	var got []string
	for _, o := range outs {
		if o.DNAT != "" {
			got = append(got, o.DNAT)
		} else {
			got = append(got, string(o.Verdict))
		}
	}
	sort.Strings(got)
	return got
}

func service(name, clusterIP string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeClusterIP, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP},
			Ports: []v1.ServicePort{{Name: "http", Port: 80, Protocol: v1.ProtocolTCP}},
		},
	}
}

func slice(svc, name string, addrs ...string) *discovery.EndpointSlice {
	s := &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			Labels: map[string]string{discovery.LabelServiceName: svc}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(v1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Addresses: []string{a},
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To("node1")})
	}
	return s
}

// TestPipelineSkipsBadInput shows that a Service with an invalid clusterIP and an
// EndpointSlice endpoint with an invalid address are reported and skipped while the other
// services keep working, and that nothing already programmed is lost.
func TestPipelineSkipsBadInput(t *testing.T) {
	p := newPipeline(t)
	p.tracker.OnServiceAdd(service("good", "100.100.0.10"))
	p.tracker.OnEndpointSliceAdd(slice("good", "good-1", "100.64.1.10", "100.64.2.10"))
	p.sync()
	if diff := cmp.Diff([]string{"100.64.1.10:8080", "100.64.2.10:8080"}, p.trace("100.100.0.10", 80)); diff != "" {
		t.Fatalf("good service before bad input (-want +got):\n%s", diff)
	}

	// Bad input arrives: a service whose clusterIP does not parse, and a slice of another
	// service with one address that does not parse next to a good one.
	p.tracker.OnServiceAdd(service("bad-ip", "100.100.0.300"))
	p.tracker.OnEndpointSliceAdd(slice("bad-ip", "bad-ip-1", "100.64.1.11"))
	p.tracker.OnServiceAdd(service("mixed", "100.100.0.12"))
	p.tracker.OnEndpointSliceAdd(slice("mixed", "mixed-1", "100.64.1.12", "not-an-ip"))
	// And the good service gains an endpoint in the same sync.
	p.tracker.OnEndpointSliceUpdate(slice("good", "good-1", "100.64.1.10", "100.64.2.10"),
		slice("good", "good-1", "100.64.1.10", "100.64.2.10", "100.64.2.11"))
	p.sync()

	if diff := cmp.Diff([]string{"100.64.1.10:8080", "100.64.2.10:8080", "100.64.2.11:8080"}, p.trace("100.100.0.10", 80)); diff != "" {
		t.Errorf("good service after bad input (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"100.64.1.12:8080"}, p.trace("100.100.0.12", 80)); diff != "" {
		t.Errorf("service with one bad address (-want +got):\n%s", diff)
	}
	if strings.Contains(p.ipt.Dump(), "100.100.0.300") {
		t.Errorf("the invalid clusterIP reached the rules:\n%s", p.ipt.Dump())
	}
	want := []string{"EndpointSlice default/mixed-1 InvalidEndpointAddress", "Service default/bad-ip InvalidClusterIP"}
	sort.Strings(p.invalids)
	if diff := cmp.Diff(want, p.invalids); diff != "" {
		t.Errorf("reported invalid input (-want +got):\n%s", diff)
	}
}
