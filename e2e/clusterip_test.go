//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// programTimeout bounds the wait for a new service to be programmed.
const programTimeout = 15 * time.Second

// A pod on node 1 reaches a ClusterIP whose two endpoints are a pod on node 1 and a pod on
// node 2, and both answer.
func TestClusterIPReachesEndpointsOnBothNodes(t *testing.T) {
	ctx := setup(t, "clusterip-both")
	client, local, remote := cluster.Pod(1, 1), cluster.Pod(1, 2), cluster.Pod(2, 1)
	svc, err := cluster.CreateServiceWithEndpoints(ctx, "clusterip-both", "echo", tcpOnly, local, remote)
	if err != nil {
		t.Fatal(err)
	}
	got, took := untilAllSeen(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), names(local, remote), programTimeout)
	t.Logf("%s → %s (%s): both endpoints answered within %v: %s", client.Name, clusterIPAddr(svc), svc.Name, took.Round(time.Millisecond), got)
}

// Adding an endpoint, then removing one, shows in the traffic within 2 s.
func TestClusterIPFollowsEndpointChanges(t *testing.T) {
	const ns, limit = "clusterip-changes", 2 * time.Second
	ctx := setup(t, ns)
	client, first, second := cluster.Pod(1, 1), cluster.Pod(2, 1), cluster.Pod(1, 2)
	svc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "echo", tcpOnly, first)
	if err != nil {
		t.Fatal(err)
	}
	addr := clusterIPAddr(svc)
	untilAllSeen(ctx, t, client.Name, harness.TCP, addr, names(first), programTimeout)

	ports := []discoveryv1.EndpointPort{harness.EndpointPort("tcp", corev1.ProtocolTCP)}
	t0 := time.Now()
	if err := cluster.ApplyEndpointSlice(ctx, harness.EndpointSlice(ns, "echo", ports, harness.Endpoints(first, second))); err != nil {
		t.Fatal(err)
	}
	_, added := untilAllSeen(ctx, t, client.Name, harness.TCP, addr, names(second), 10*time.Second, first.Name)
	t.Logf("endpoint %s added: first reply from it %v after the update", second.Name, added.Round(time.Millisecond))

	t1 := time.Now()
	if err := cluster.ApplyEndpointSlice(ctx, harness.EndpointSlice(ns, "echo", ports, harness.Endpoints(second))); err != nil {
		t.Fatal(err)
	}
	removed := untilGone(ctx, t, client.Name, addr, first.Name, second.Name, t1, 10*time.Second)
	t.Logf("endpoint %s removed: only %s answers from %v after the update on", first.Name, second.Name, removed.Round(time.Millisecond))
	if d := time.Since(t0); added > limit || removed > limit {
		t.Errorf("endpoint changes took %v (add) and %v (remove), want each ≤ %v (whole sequence %v)", added, removed, limit, d)
	}
}

// untilGone makes requests until gone has not answered for streak requests in a row (all of
// them from stay), and returns the time from since to the first request of that streak.
func untilGone(ctx context.Context, t *testing.T, from, addr, gone, stay string, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	const streak = 12
	var run int
	var runStart time.Time
	for time.Since(since) < timeout {
		sent := time.Now()
		r, err := cluster.Request(ctx, from, harness.TCP, addr, requestTimeout)
		switch {
		case err != nil:
			t.Fatalf("request during the endpoint removal: %v", err)
		case r.Name == stay:
			if run == 0 {
				runStart = sent
			}
			if run++; run == streak {
				return runStart.Sub(since)
			}
		case r.Name == gone:
			run = 0
		default:
			t.Fatalf("reply from %s, want %s or %s", r.Raw, gone, stay)
		}
	}
	t.Fatalf("%s still answers %v after its removal", gone, timeout)
	return 0
}

// pod → ClusterIP → pod on the other node keeps the client pod's IP (no masquerade).
func TestClusterIPKeepsPodSourceIP(t *testing.T) {
	ctx := setup(t, "clusterip-srcip")
	client, backend := cluster.Pod(1, 1), cluster.Pod(2, 1)
	svc, err := cluster.CreateServiceWithEndpoints(ctx, "clusterip-srcip", "echo", tcpOnly, backend)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), programTimeout)
	if r.Name != backend.Name || r.Client.Addr() != client.IP {
		t.Fatalf("reply %q: want name=%s client=%s:*", r.Raw, backend.Name, client.IP)
	}
	t.Logf("%s → %s → %s: backend saw client %s", client.Name, clusterIPAddr(svc), backend.Name, r.Client)
}

// A request from the node's own namespace (not a pod) is masqueraded. To a backend on the
// same node the masquerade is visible: without it the backend would see the node's eth0
// address (the source chosen for the route to the ClusterIP), with it the address of cni0,
// the interface the DNATed packet leaves by. To a backend on the other node both are the node
// IP: that case checks the path, not the masquerade.
func TestClusterIPFromNodeIsMasqueraded(t *testing.T) {
	const ns = "clusterip-node"
	ctx := setup(t, ns)
	node := cluster.Nodes[0]
	local, remote := cluster.Pod(1, 1), cluster.Pod(2, 1)
	localSvc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "local", tcpOnly, local)
	if err != nil {
		t.Fatal(err)
	}
	remoteSvc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "remote", tcpOnly, remote)
	if err != nil {
		t.Fatal(err)
	}
	cni0 := node.PodCIDR.Addr().Next() // 100.64.1.1
	for _, tc := range []struct {
		svc        *corev1.Service
		backend    *harness.Pod
		wantClient string
	}{
		{localSvc, local, cni0.String()},
		{remoteSvc, remote, cluster.SourceTowardPods(node).String()},
	} {
		r, _ := firstReply(ctx, t, node.Name, harness.TCP, clusterIPAddr(tc.svc), programTimeout)
		if r.Name != tc.backend.Name || r.Client.Addr().String() != tc.wantClient {
			t.Errorf("node %s → %s (%s): reply %q, want name=%s client=%s:*", node.Name, clusterIPAddr(tc.svc), tc.svc.Name, r.Raw, tc.backend.Name, tc.wantClient)
			continue
		}
		t.Logf("node %s → %s → %s: backend saw client %s", node.Name, clusterIPAddr(tc.svc), tc.backend.Name, r.Client)
	}
}

// UDP through a ClusterIP reaches both endpoints.
func TestClusterIPUDP(t *testing.T) {
	ctx := setup(t, "clusterip-udp")
	client, local, remote := cluster.Pod(1, 1), cluster.Pod(1, 2), cluster.Pod(2, 1)
	svc, err := cluster.CreateServiceWithEndpoints(ctx, "clusterip-udp", "echo", udpOnly, local, remote)
	if err != nil {
		t.Fatal(err)
	}
	got, took := untilAllSeen(ctx, t, client.Name, harness.UDP, clusterIPAddr(svc), names(local, remote), programTimeout)
	t.Logf("udp %s → %s: both endpoints answered within %v: %s", client.Name, clusterIPAddr(svc), took.Round(time.Millisecond), got)
}

// A pod reaches itself through its own service (hairpin). The packet leaves and re-enters
// cni0 on the same port, and is masqueraded to the node's cni0 address, so the reply comes
// back through the node and is un-DNATed (without the masquerade the pod would answer itself
// directly and the connection would never complete).
func TestClusterIPHairpin(t *testing.T) {
	const ns = "clusterip-hairpin"
	ctx := setup(t, ns)
	pod := cluster.Pod(1, 1)
	svc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "echo", tcpOnly, pod)
	if err != nil {
		t.Fatal(err)
	}
	cni0 := pod.Node.PodCIDR.Addr().Next()
	r, _ := firstReply(ctx, t, pod.Name, harness.TCP, clusterIPAddr(svc), programTimeout)
	if r.Name != pod.Name || r.Client.Addr() != cni0 {
		t.Fatalf("hairpin %s → %s: reply %q, want name=%s client=%s:*", pod.Name, clusterIPAddr(svc), r.Raw, pod.Name, cni0)
	}
	t.Logf("%s → %s → itself: it saw client %s (masqueraded)", pod.Name, clusterIPAddr(svc), r.Client)
}
