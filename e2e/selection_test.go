//go:build e2e

package e2e

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// A LoadBalancer service with an externalIP first answers on all its addresses, then loses
// its only endpoint: every address must then fail at once (no timeout), from a pod, from the
// node and from the external client. What upstream kube-proxy v1.37 does decides the table:
// its REJECT rules for externalIPs, LB IPs and NodePorts sit in filter KUBE-EXTERNAL-SERVICES,
// hooked only into INPUT and FORWARD, so the node's own requests to an externalIP or LB IP are
// not rejected: they leave the node (towards the external namespace, which drops them).
func TestNoEndpointsRejectsAtOnce(t *testing.T) {
	const ns = "no-endpoints"
	ctx := setup(t, ns)
	backend := cluster.Pod(2, 1)
	extIP, lbIP := harness.ExternalIP(1, 3), harness.LoadBalancerIP(1, 3)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
		s.Spec.ExternalIPs = []string{extIP.String()}
	}), harness.Endpoints(backend))
	if _, err := cluster.SetLoadBalancerIngress(ctx, ns, svc.Name, harness.LBIngress(lbIP.String(), corev1.LoadBalancerIPModeVIP)); err != nil {
		t.Fatal(err)
	}
	pod, n1, n2 := cluster.Pod(1, 1).Name, cluster.Nodes[0], cluster.Nodes[1]
	np := nodePortOf(svc)
	cases := []struct {
		from, what, addr string
		want             failure
	}{
		{pod, "ClusterIP", clusterIPAddr(svc), refused},
		{pod, "NodePort node 1", n1.NodePortAddr(np), refused},
		{pod, "NodePort node 2", n2.NodePortAddr(np), refused},
		{pod, "externalIP", hostPort(extIP.String(), 80), refused},
		{pod, "LB IP", hostPort(lbIP.String(), 80), refused},
		{n1.Name, "ClusterIP", clusterIPAddr(svc), refused},
		{n1.Name, "NodePort own IP", n1.NodePortAddr(np), refused},
		{n1.Name, "NodePort node 2", n2.NodePortAddr(np), refused},
		{n1.Name, "externalIP", hostPort(extIP.String(), 80), dropped}, // upstream: not rejected from the node
		{n1.Name, "LB IP", hostPort(lbIP.String(), 80), dropped},       // upstream: not rejected from the node
		{ext(), "NodePort node 1", n1.NodePortAddr(np), refused},
		{ext(), "NodePort node 2", n2.NodePortAddr(np), refused},
		{ext(), "externalIP", hostPort(extIP.String(), 80), refused},
		{ext(), "LB IP", hostPort(lbIP.String(), 80), refused},
	}
	for _, tc := range cases {
		r, _ := firstReply(ctx, t, tc.from, harness.TCP, tc.addr, programTimeout)
		t.Logf("with an endpoint: %-14s → %-16s %-21s answered by %s", tc.from, tc.what, tc.addr, r.Name)
	}
	setEndpoints(ctx, t, svc, []discoveryv1.Endpoint{})
	// The first case waits for the sync; the others are then immediate.
	for _, tc := range cases {
		err, took := untilFails(ctx, t, tc.from, harness.TCP, tc.addr, harness.RequestOptions{}, tc.want, 5*time.Second)
		t.Logf("no endpoints: %-14s → %-16s %-21s %s: %v (%v)", tc.from, tc.what, tc.addr, tc.want, err, took.Round(time.Millisecond))
	}
}

// A ClusterIP on a port that is not one of its service ports (81, and the endpoints' target
// port 8080) is not forwarded to an endpoint, over TCP and UDP. Upstream kube-proxy v1.37's
// iptables mode has no rule for it (its nftables mode rejects): the packet leaves the node and
// dies in the fabric (whose `unreachable 100.100.0.0/16` route sends no ICMP: the fabric does
// not forward), so the client times out. A REJECT (refused) would pass too.
func TestClusterIPUnknownPortRejected(t *testing.T) {
	const ns = "clusterip-badport"
	ctx := setup(t, ns)
	client := cluster.Pod(1, 1)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP), harness.Endpoints(cluster.Pod(2, 1)))
	firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), programTimeout)
	for _, port := range []int32{81, harness.EchoPort} {
		addr := hostPort(svc.Spec.ClusterIP, port)
		for _, proto := range []harness.Proto{harness.TCP, harness.UDP} {
			err, _ := untilFails(ctx, t, client.Name, proto, addr, harness.RequestOptions{}, notAnswered, time.Second)
			t.Logf("%s %s → %s (not a service port): %v", proto, client.Name, addr, err)
		}
	}
}

// Terminating endpoints (serving) are used only when there is no ready endpoint; a terminating
// endpoint that is not serving is never used, so the service then rejects.
func TestTerminatingEndpointsOnlyWithoutReady(t *testing.T) {
	const ns = "terminating"
	ctx := setup(t, ns)
	client, ready, term := cluster.Pod(1, 1), cluster.Pod(1, 2), cluster.Pod(2, 1)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP),
		append(harness.EndpointsIn(harness.Ready, ready), harness.EndpointsIn(harness.TerminatingServing, term)...))
	addr := clusterIPAddr(svc)
	firstReply(ctx, t, client.Name, harness.TCP, addr, programTimeout)
	got := expectOnly(ctx, t, client.Name, harness.TCP, addr, names(ready), 12)
	t.Logf("ready %s + terminating %s: [%s]", ready.Name, term.Name, got)

	setEndpoints(ctx, t, svc, append(harness.EndpointsIn(harness.Unready, ready), harness.EndpointsIn(harness.TerminatingServing, term)...))
	_, took := untilAllSeen(ctx, t, client.Name, harness.TCP, addr, names(term), programTimeout, ready.Name)
	got = expectOnly(ctx, t, client.Name, harness.TCP, addr, names(term), 12)
	t.Logf("unready %s + terminating %s: fallback within %v, then [%s]", ready.Name, term.Name, took.Round(time.Millisecond), got)

	setEndpoints(ctx, t, svc, harness.EndpointsIn(harness.TerminatingNotServing, term))
	err, took := untilFails(ctx, t, client.Name, harness.TCP, addr, harness.RequestOptions{}, refused, programTimeout)
	t.Logf("only terminating, not serving %s: %v (within %v)", term.Name, err, took.Round(time.Millisecond))
}

// An unready endpoint gets no traffic; once ready it does.
func TestUnreadyEndpointsNotUsed(t *testing.T) {
	const ns = "unready"
	ctx := setup(t, ns)
	client, ready, unready := cluster.Pod(1, 1), cluster.Pod(1, 2), cluster.Pod(2, 1)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP),
		append(harness.EndpointsIn(harness.Ready, ready), harness.EndpointsIn(harness.Unready, unready)...))
	addr := clusterIPAddr(svc)
	firstReply(ctx, t, client.Name, harness.TCP, addr, programTimeout)
	got := expectOnly(ctx, t, client.Name, harness.TCP, addr, names(ready), 16)
	t.Logf("ready %s + unready %s: [%s]", ready.Name, unready.Name, got)
	setEndpoints(ctx, t, svc, harness.Endpoints(ready, unready))
	got, took := untilAllSeen(ctx, t, client.Name, harness.TCP, addr, names(ready, unready), programTimeout)
	t.Logf("both ready: [%s] within %v", got, took.Round(time.Millisecond))
}

// internalTrafficPolicy Local: a pod only reaches the endpoints on its own node.
func TestInternalTrafficPolicyLocal(t *testing.T) {
	const ns = "itp-local"
	ctx := setup(t, ns)
	e1, e2 := cluster.Pod(1, 2), cluster.Pod(2, 1)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
		s.Spec.InternalTrafficPolicy = ptrTo(corev1.ServiceInternalTrafficPolicyLocal)
	}), harness.Endpoints(e1, e2))
	addr := clusterIPAddr(svc)
	for _, tc := range []struct{ client, want *harness.Pod }{{cluster.Pod(1, 1), e1}, {cluster.Pod(2, 2), e2}} {
		firstReply(ctx, t, tc.client.Name, harness.TCP, addr, programTimeout)
		got := expectOnly(ctx, t, tc.client.Name, harness.TCP, addr, names(tc.want), 12)
		t.Logf("%s → %s: [%s] (local only)", tc.client.Name, addr, got)
	}
}

// Session affinity ClientIP keeps a client on one backend for 20 requests; switching to None
// spreads its requests again.
func TestSessionAffinityClientIP(t *testing.T) {
	const ns = "affinity"
	ctx := setup(t, ns)
	client := cluster.Pod(1, 1)
	eps := []*harness.Pod{cluster.Pod(1, 2), cluster.Pod(2, 1), cluster.Pod(2, 2)}
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	}), harness.Endpoints(eps...))
	addr := clusterIPAddr(svc)
	first, _ := firstReply(ctx, t, client.Name, harness.TCP, addr, programTimeout)
	got := expectOnly(ctx, t, client.Name, harness.TCP, addr, []string{first.Name}, 20)
	t.Logf("ClientIP: %s → %s: [%s]", client.Name, addr, got)
	if _, err := cluster.UpdateService(ctx, ns, svc.Name, func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityNone
		s.Spec.SessionAffinityConfig = nil
	}); err != nil {
		t.Fatal(err)
	}
	got, took := untilAllSeen(ctx, t, client.Name, harness.TCP, addr, names(eps...), programTimeout)
	t.Logf("None: %s → %s: [%s] within %v", client.Name, addr, got, took.Round(time.Millisecond))
}

func ptrTo[T any](v T) *T { return &v }
