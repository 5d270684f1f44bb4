//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// Addresses of the external client's LB and externalIP blocks (harness.LoadBalancerIP(i, k),
// harness.ExternalIP(i, k): routed to node i), one k per test so that tests never share one:
//
//	k=1 TestExternalIPs, TestLoadBalancerIngress (VIP)   k=2 TestLoadBalancerIngress (Proxy)
//	k=3 TestNoEndpointsRejectsAtOnce                     k=4 TestExternalTrafficPolicyLocal
//	k=5 TestLoadBalancerSourceRanges

func nodePortOf(svc *corev1.Service) int32 { return svc.Spec.Ports[0].NodePort }

// A NodePort answers on every node's IP from the external client, also on the node that has
// no endpoint (it forwards to the other node).
func TestNodePortOnEveryNodeIP(t *testing.T) {
	const ns = "nodeport-every"
	ctx := setup(t, ns)
	backend := cluster.Pod(2, 1)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeNodePort), harness.Endpoints(backend))
	for _, n := range cluster.Nodes {
		addr := n.NodePortAddr(nodePortOf(svc))
		got, took := untilAllSeen(ctx, t, ext(), harness.TCP, addr, names(backend), programTimeout)
		t.Logf("%s → %s (node %s): %s answered within %v", ext(), addr, n.Name, got, took.Round(time.Millisecond))
	}
}

// Deleting a NodePort service releases its port on every node: connection refused (no rule,
// no listener), not a timeout.
func TestNodePortReleasedOnDelete(t *testing.T) {
	const ns = "nodeport-delete"
	ctx := setup(t, ns)
	backend := cluster.Pod(1, 1)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeNodePort), harness.Endpoints(backend))
	for _, n := range cluster.Nodes {
		firstReply(ctx, t, ext(), harness.TCP, n.NodePortAddr(nodePortOf(svc)), programTimeout)
	}
	if err := cluster.Client.CoreV1().Services(ns).Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range cluster.Nodes {
		addr := n.NodePortAddr(nodePortOf(svc))
		err, took := untilFails(ctx, t, ext(), harness.TCP, addr, harness.RequestOptions{}, refused, 10*time.Second)
		t.Logf("after delete %s → %s: %v (within %v)", ext(), addr, err, took.Round(time.Millisecond))
	}
}

// externalIPs routed to node 1 and to node 2 answer from the external client, with endpoints
// on both nodes.
func TestExternalIPs(t *testing.T) {
	const ns = "externalips"
	ctx := setup(t, ns)
	eps := []*harness.Pod{cluster.Pod(1, 1), cluster.Pod(2, 1)}
	ips := []string{harness.ExternalIP(1, 1).String(), harness.ExternalIP(2, 1).String()}
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP, func(s *corev1.Service) {
		s.Spec.ExternalIPs = ips
	}), harness.Endpoints(eps...))
	for _, ip := range ips {
		addr := hostPort(ip, svc.Spec.Ports[0].Port)
		got, took := untilAllSeen(ctx, t, ext(), harness.TCP, addr, names(eps...), programTimeout)
		t.Logf("%s → externalIP %s: %s within %v", ext(), addr, got, took.Round(time.Millisecond))
	}
}

// A LoadBalancer ingress IP (ipMode VIP) answers from the external client; one with ipMode
// Proxy is not captured: the node forwards it back out to the external client, which drops it.
func TestLoadBalancerIngress(t *testing.T) {
	const ns = "lb-ingress"
	ctx := setup(t, ns)
	eps := []*harness.Pod{cluster.Pod(1, 1), cluster.Pod(2, 1)}
	vip, proxied := harness.LoadBalancerIP(1, 1), harness.LoadBalancerIP(1, 2)
	for _, tc := range []struct {
		name string
		ip   string
		mode corev1.LoadBalancerIPMode
	}{{"vip", vip.String(), corev1.LoadBalancerIPModeVIP}, {"proxy", proxied.String(), corev1.LoadBalancerIPModeProxy}} {
		createService(ctx, t, newService(ns, tc.name, corev1.ServiceTypeLoadBalancer), harness.Endpoints(eps...))
		if _, err := cluster.SetLoadBalancerIngress(ctx, ns, tc.name, harness.LBIngress(tc.ip, tc.mode)); err != nil {
			t.Fatal(err)
		}
	}
	addr := hostPort(vip.String(), 80)
	got, took := untilAllSeen(ctx, t, ext(), harness.TCP, addr, names(eps...), programTimeout)
	t.Logf("%s → LB %s (ipMode VIP): %s within %v", ext(), addr, got, took.Round(time.Millisecond))
	// The VIP service is programmed: the Proxy one, written just before it, is too.
	paddr := hostPort(proxied.String(), 80)
	for _, from := range []string{ext(), cluster.Pod(1, 2).Name} {
		_, err := cluster.Request(ctx, from, harness.TCP, paddr, requestTimeout)
		if ferr := dropped.check(err, 0); ferr != nil {
			t.Errorf("%s → LB %s (ipMode Proxy): %v; want it not captured (dropped outside)", from, paddr, ferr)
			continue
		}
		t.Logf("%s → LB %s (ipMode Proxy): not captured: %v", from, paddr, err)
	}
}

// Traffic from the external client with externalTrafficPolicy Cluster is masqueraded: the
// backend sees the address of the node's outgoing interface (node IP towards another node,
// cni0 towards a local pod), never 198.51.100.x.
func TestExternalClientMasqueradedWithClusterPolicy(t *testing.T) {
	const ns = "ext-masq"
	ctx := setup(t, ns)
	backend := cluster.Pod(2, 1)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeNodePort), harness.Endpoints(backend))
	n1, n2 := cluster.Nodes[0], cluster.Nodes[1]
	for _, tc := range []struct {
		via  *harness.Node
		want string
	}{
		{n1, cluster.SourceTowardPods(n1).String()}, // forwarded to node 2: SNAT to node 1's address toward pods (eth0, or the VTEP over VXLAN)
		{n2, n2.PodCIDR.Addr().Next().String()},     // local backend: SNAT to node 2's cni0
	} {
		addr := tc.via.NodePortAddr(nodePortOf(svc))
		r, _ := firstReply(ctx, t, ext(), harness.TCP, addr, programTimeout)
		if r.Client.Addr().String() != tc.want {
			t.Errorf("%s → %s → %s: backend saw %s, want %s (masqueraded)", ext(), addr, r.Name, r.Client, tc.want)
			continue
		}
		t.Logf("%s → %s → %s: backend saw %s (masqueraded)", ext(), addr, r.Name, r.Client)
	}
}

// externalTrafficPolicy Local with one endpoint on node 2: through node 2 (NodePort and an LB
// IP routed to node 2) the backend sees the external client's own address; through node 1,
// which has no local endpoint, the traffic is dropped.
func TestExternalTrafficPolicyLocal(t *testing.T) {
	const ns = "etp-local"
	ctx := setup(t, ns)
	backend := cluster.Pod(2, 1)
	n1, n2 := cluster.Nodes[0], cluster.Nodes[1]
	lb1, lb2 := harness.LoadBalancerIP(1, 4), harness.LoadBalancerIP(2, 4)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}), harness.Endpoints(backend))
	if _, err := cluster.SetLoadBalancerIngress(ctx, ns, svc.Name, harness.LBIngress(lb1.String(), corev1.LoadBalancerIPModeVIP), harness.LBIngress(lb2.String(), corev1.LoadBalancerIPModeVIP)); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{n2.NodePortAddr(nodePortOf(svc)), hostPort(lb2.String(), 80)} {
		r, _ := firstReply(ctx, t, ext(), harness.TCP, addr, programTimeout)
		if r.Name != backend.Name || r.Client.Addr() != cluster.External.ClientIP {
			t.Errorf("%s → %s: reply %q, want name=%s client=%s:* (source kept)", ext(), addr, r.Raw, backend.Name, cluster.External.ClientIP)
			continue
		}
		t.Logf("%s → %s → %s: backend saw %s (source kept)", ext(), addr, r.Name, r.Client)
	}
	for _, addr := range []string{n1.NodePortAddr(nodePortOf(svc)), hostPort(lb1.String(), 80)} {
		err, _ := untilFails(ctx, t, ext(), harness.TCP, addr, harness.RequestOptions{}, dropped, 5*time.Second)
		t.Logf("%s → %s (node %s, no local endpoint): %v", ext(), addr, n1.Name, err)
	}
}

// healthResponse is the body of a healthCheckNodePort answer.
type healthResponse struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// The healthCheckNodePort of an externalTrafficPolicy Local service answers 200 with the
// number of local endpoints on a node that has some (2 on node 2) and 503 on a node without
// (node 1), queried from the external client.
func TestHealthCheckNodePort(t *testing.T) {
	const ns = "etp-health"
	ctx := setup(t, ns)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}), harness.Endpoints(cluster.Pod(2, 1), cluster.Pod(2, 2)))
	if svc.Spec.HealthCheckNodePort == 0 {
		t.Fatal("no healthCheckNodePort allocated")
	}
	for _, tc := range []struct {
		node  *harness.Node
		code  int
		local int
	}{{cluster.Nodes[1], http.StatusOK, 2}, {cluster.Nodes[0], http.StatusServiceUnavailable, 0}} {
		url := fmt.Sprintf("http://%s/", tc.node.NodePortAddr(svc.Spec.HealthCheckNodePort))
		var code int
		var body string
		var got healthResponse
		harness.Eventually(t, programTimeout, func() error {
			var err error
			if code, body, err = harness.HTTPGet(ctx, ext(), url); err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				return fmt.Errorf("%d %q: %w", code, body, err)
			}
			if code != tc.code || got.LocalEndpoints != tc.local || got.Service.Namespace != ns || got.Service.Name != svc.Name {
				return fmt.Errorf("%d %s, want %d with localEndpoints %d for %s/%s", code, body, tc.code, tc.local, ns, svc.Name)
			}
			return nil
		})
		t.Logf("%s GET %s (node %s): %d %s", ext(), url, tc.node.Name, code, body)
	}
}

// loadBalancerSourceRanges: only the listed source (198.51.100.10/32) reaches the LB IP; the
// external client's other address (198.51.100.11) is dropped.
func TestLoadBalancerSourceRanges(t *testing.T) {
	const ns = "lb-ranges"
	ctx := setup(t, ns)
	eps := []*harness.Pod{cluster.Pod(1, 1), cluster.Pod(2, 1)}
	lb := harness.LoadBalancerIP(1, 5)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
		s.Spec.LoadBalancerSourceRanges = []string{cluster.External.ClientIP.String() + "/32"}
	}), harness.Endpoints(eps...))
	if _, err := cluster.SetLoadBalancerIngress(ctx, ns, svc.Name, harness.LBIngress(lb.String(), corev1.LoadBalancerIPModeVIP)); err != nil {
		t.Fatal(err)
	}
	addr := hostPort(lb.String(), 80)
	allowed := harness.RequestOptions{Src: cluster.External.ClientIP}
	r := firstReplyWith(ctx, t, ext(), harness.TCP, addr, allowed, programTimeout)
	t.Logf("%s from %s → LB %s: answered by %s", ext(), allowed.Src, addr, r.Name)
	other := harness.RequestOptions{Src: cluster.External.OtherIP}
	err, _ := untilFails(ctx, t, ext(), harness.TCP, addr, other, dropped, 5*time.Second)
	t.Logf("%s from %s → LB %s: %v (not in loadBalancerSourceRanges)", ext(), other.Src, addr, err)
}

// ClusterIP → NodePort → ClusterIP: the NodePort answers while the type is NodePort and is
// refused on every node after the change back; the ClusterIP keeps answering.
func TestTypeChangeRemovesNodePort(t *testing.T) {
	const ns = "type-change"
	ctx := setup(t, ns)
	client, backend := cluster.Pod(1, 1), cluster.Pod(2, 1)
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP), harness.Endpoints(backend))
	firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), programTimeout)
	np, err := cluster.UpdateService(ctx, ns, svc.Name, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort })
	if err != nil {
		t.Fatal(err)
	}
	port := nodePortOf(np)
	for _, n := range cluster.Nodes {
		_, took := firstReply(ctx, t, ext(), harness.TCP, n.NodePortAddr(port), programTimeout)
		t.Logf("NodePort: %s → %s answers (within %v)", ext(), n.NodePortAddr(port), took.Round(time.Millisecond))
	}
	if _, err := cluster.UpdateService(ctx, ns, svc.Name, func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeClusterIP
		for i := range s.Spec.Ports {
			s.Spec.Ports[i].NodePort = 0
		}
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range cluster.Nodes {
		err, took := untilFails(ctx, t, ext(), harness.TCP, n.NodePortAddr(port), harness.RequestOptions{}, refused, 10*time.Second)
		t.Logf("back to ClusterIP: %s → %s: %v (within %v)", ext(), n.NodePortAddr(port), err, took.Round(time.Millisecond))
	}
	r, err := cluster.Request(ctx, client.Name, harness.TCP, clusterIPAddr(svc), requestTimeout)
	if err != nil {
		t.Fatalf("ClusterIP after the type changes: %v", err)
	}
	t.Logf("ClusterIP %s still answers: %s", clusterIPAddr(svc), r.Raw)
}
