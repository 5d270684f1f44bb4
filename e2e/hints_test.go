//go:build e2e

package e2e

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// withZoneHints returns eps with hints.forZones set to zones[i] for endpoint i ("" leaves
// the endpoint without hints).
func withZoneHints(eps []discoveryv1.Endpoint, zones ...string) []discoveryv1.Endpoint {
	for i := range eps {
		if zones[i] == "" {
			continue
		}
		if eps[i].Hints == nil {
			eps[i].Hints = &discoveryv1.EndpointHints{}
		}
		eps[i].Hints.ForZones = []discoveryv1.ForZone{{Name: zones[i]}}
	}
	return eps
}

// withNodeHints returns eps with hints.forNodes set to nodes[i] for endpoint i.
func withNodeHints(eps []discoveryv1.Endpoint, nodes ...string) []discoveryv1.Endpoint {
	for i := range eps {
		if eps[i].Hints == nil {
			eps[i].Hints = &discoveryv1.EndpointHints{}
		}
		eps[i].Hints.ForNodes = []discoveryv1.ForNode{{Name: nodes[i]}}
	}
	return eps
}

// Topology hints (trafficDistribution PreferClose; the EndpointSlice controller would write
// hints.forZones). The nodes are labelled topology.kubernetes.io/zone=zone-<i>. Endpoints
// n1-p2 and n2-p1 are hinted for zone-1, n2-p2 for zone-2: a pod on node 1 reaches only the
// two zone-1 endpoints (one of them in zone 2: the hint decides, not where the endpoint is), a
// pod on node 2 only n2-p2. Once one ready endpoint has no hint, the proxy ignores the hints
// (upstream: hints are used only when every ready endpoint has one) and node 1 reaches all three.
func TestTopologyHintsForZones(t *testing.T) {
	const ns = "hints-zones"
	ctx := setup(t, ns)
	e1, e2, e3 := cluster.Pod(1, 2), cluster.Pod(2, 1), cluster.Pod(2, 2)
	for _, n := range cluster.Nodes {
		node, err := cluster.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if z := node.Labels[corev1.LabelTopologyZone]; z != n.Zone {
			t.Fatalf("node %s: %s=%q, want %q", n.Name, corev1.LabelTopologyZone, z, n.Zone)
		}
	}
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
		s.Spec.TrafficDistribution = ptrTo(corev1.ServiceTrafficDistributionPreferClose)
	}), withZoneHints(harness.Endpoints(e1, e2, e3), "zone-1", "zone-1", "zone-2"))
	addr := clusterIPAddr(svc)
	for _, tc := range []struct {
		client *harness.Pod
		want   []*harness.Pod
	}{
		{cluster.Pod(1, 1), []*harness.Pod{e1, e2}},
		{cluster.Pod(2, 1), []*harness.Pod{e3}},
	} {
		firstReply(ctx, t, tc.client.Name, harness.TCP, addr, programTimeout)
		// Every hinted endpoint answers, and nothing else does over many requests.
		got, _ := untilAllSeen(ctx, t, tc.client.Name, harness.TCP, addr, names(tc.want...), programTimeout)
		more := expectOnly(ctx, t, tc.client.Name, harness.TCP, addr, names(tc.want...), 16)
		t.Logf("%s (%s) → %s: [%s] then [%s] (zone-hinted only)", tc.client.Name, tc.client.Node.Zone, addr, got, more)
	}

	// e3 loses its hint: hints are ignored, node 1 reaches all three.
	setEndpoints(ctx, t, svc, withZoneHints(harness.Endpoints(e1, e2, e3), "zone-1", "zone-1", ""))
	got, took := untilAllSeen(ctx, t, cluster.Pod(1, 1).Name, harness.TCP, addr, names(e1, e2, e3), programTimeout)
	t.Logf("one endpoint without a hint: %s → %s: [%s] within %v (hints ignored)", cluster.Pod(1, 1).Name, addr, got, took)
}

// Node hints (trafficDistribution PreferSameNode, GA and locked on since 1.35; the controller
// writes hints.forNodes and hints.forZones). Every endpoint is also hinted for zone-1, so that
// a zone-based choice would differ: node 1 would reach both, node 2 would ignore the zone hints
// and reach both. With the node hints each pod reaches only the endpoint on its own node.
func TestTopologyHintsForNodes(t *testing.T) {
	const ns = "hints-nodes"
	ctx := setup(t, ns)
	e1, e2 := cluster.Pod(1, 2), cluster.Pod(2, 2)
	svc := newService(ns, "echo", corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
		s.Spec.TrafficDistribution = ptrTo(corev1.ServiceTrafficDistributionPreferSameNode)
	})
	out := createService(ctx, t, svc, withNodeHints(withZoneHints(harness.Endpoints(e1, e2), "zone-1", "zone-1"), e1.Node.Name, e2.Node.Name))
	if td := out.Spec.TrafficDistribution; td == nil || *td != corev1.ServiceTrafficDistributionPreferSameNode {
		t.Fatalf("service trafficDistribution %v after create, want %s (dropped by the apiserver?)", td, corev1.ServiceTrafficDistributionPreferSameNode)
	}
	// PreferSameZone (PreferClose's newer name) is accepted too (server-side dry run).
	if _, err := cluster.Client.CoreV1().Services(ns).Create(ctx, newService(ns, "dry-zone", corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
		s.Spec.TrafficDistribution = ptrTo(corev1.ServiceTrafficDistributionPreferSameZone)
	}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("trafficDistribution %s: %v", corev1.ServiceTrafficDistributionPreferSameZone, err)
	}
	addr := clusterIPAddr(out)
	for _, tc := range []struct{ client, want *harness.Pod }{{cluster.Pod(1, 1), e1}, {cluster.Pod(2, 1), e2}} {
		firstReply(ctx, t, tc.client.Name, harness.TCP, addr, programTimeout)
		got, _ := untilAllSeen(ctx, t, tc.client.Name, harness.TCP, addr, names(tc.want), programTimeout)
		more := expectOnly(ctx, t, tc.client.Name, harness.TCP, addr, names(tc.want), 16)
		t.Logf("%s (node %s) → %s: [%s] then [%s] (same-node only)", tc.client.Name, tc.client.Node.Name, addr, got, more)
	}
}
