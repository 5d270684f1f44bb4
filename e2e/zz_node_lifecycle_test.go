//go:build e2e

package e2e

// This file's name sorts last so that its tests, which taint and delete a Node object, run
// after the others; they put the Node back as it was in any case (also on failure).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/kproxy/kproxy/e2e/harness"
)

// toBeDeletedTaint is the cluster autoscaler's taint on a node it is about to delete.
const toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// holdFinalizer keeps a deleted Node object around (deletionTimestamp set) until removed.
const holdFinalizer = "e2e.kproxy.io/hold"

// healthz is one /healthz answer of a node's proxy.
type healthz struct {
	code     int
	eligible *bool
	body     string
}

func getHealthz(ctx context.Context, n *harness.Node) (healthz, error) {
	code, body, err := harness.HTTPGet(ctx, n.Name, fmt.Sprintf("http://127.0.0.1:%d/healthz", harness.HealthzPort))
	if err != nil {
		return healthz{}, err
	}
	var h struct {
		NodeEligible *bool `json:"nodeEligible"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		return healthz{}, fmt.Errorf("/healthz %d %q: not JSON: %w", code, body, err)
	}
	return healthz{code: code, eligible: h.NodeEligible, body: strings.TrimSpace(body)}, nil
}

// waitHealthz waits until node n's /healthz answers code with nodeEligible eligible.
func waitHealthz(ctx context.Context, t *testing.T, n *harness.Node, code int, eligible bool, timeout time.Duration) healthz {
	t.Helper()
	var h healthz
	harness.Eventually(t, timeout, func() error {
		var err error
		if h, err = getHealthz(ctx, n); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if h.code != code || h.eligible == nil || *h.eligible != eligible {
			return fmt.Errorf("%s /healthz: %d %s, want %d with nodeEligible %v", n.Name, h.code, h.body, code, eligible)
		}
		return nil
	})
	return h
}

// updateNode applies mutate to the current Node object and writes it back.
func updateNode(ctx context.Context, name string, mutate func(*corev1.Node)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(cur)
		_, err = cluster.Client.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// /healthz answers 503 with nodeEligible false while the node carries the cluster autoscaler's
// ToBeDeletedByClusterAutoscaler taint and while its Node object is being deleted (held by a
// finalizer); the other node stays 200. The Node is then deleted for good and recreated as it
// was, and /healthz is 200 again. Upstream kube-proxy exits when its Node is deleted (its node
// manager treats a deleted Node like a changed node IP): its proxy is then started again, as
// its DaemonSet would; kproxy keeps running and must turn healthy by itself.
func TestHealthzNodeNotEligible(t *testing.T) {
	ctx := setup(t, "healthz-node")
	ctx, cancel := context.WithTimeout(ctx, 80*time.Second)
	defer cancel()
	target, other := cluster.Nodes[1], cluster.Nodes[0]
	saved, err := cluster.Client.CoreV1().Nodes().Get(ctx, target.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cluster.Nodes {
		h := waitHealthz(ctx, t, n, http.StatusOK, true, programTimeout)
		t.Logf("before: %s /healthz %d %s", n.Name, h.code, h.body)
	}
	t.Cleanup(func() { restoreNode(t, target, saved) })

	// 1. The autoscaler's taint.
	if err := updateNode(ctx, target.Name, func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: toBeDeletedTaint, Value: strconv.FormatInt(time.Now().Unix(), 10), Effect: corev1.TaintEffectNoSchedule})
	}); err != nil {
		t.Fatal(err)
	}
	h := waitHealthz(ctx, t, target, http.StatusServiceUnavailable, false, 5*time.Second)
	t.Logf("tainted %s: %s /healthz %d %s", toBeDeletedTaint, target.Name, h.code, h.body)
	h = waitHealthz(ctx, t, other, http.StatusOK, true, time.Second)
	t.Logf("tainted %s: %s /healthz %d %s", toBeDeletedTaint, other.Name, h.code, h.body)
	if err := updateNode(ctx, target.Name, func(n *corev1.Node) {
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == toBeDeletedTaint })
	}); err != nil {
		t.Fatal(err)
	}
	h = waitHealthz(ctx, t, target, http.StatusOK, true, 5*time.Second)
	t.Logf("taint removed: %s /healthz %d %s", target.Name, h.code, h.body)

	// 2. The Node being deleted (deletionTimestamp set, held by a finalizer).
	if err := updateNode(ctx, target.Name, func(n *corev1.Node) {
		n.Finalizers = append(n.Finalizers, holdFinalizer)
	}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Client.CoreV1().Nodes().Delete(ctx, target.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h = waitHealthz(ctx, t, target, http.StatusServiceUnavailable, false, 5*time.Second)
	t.Logf("node being deleted: %s /healthz %d %s", target.Name, h.code, h.body)
	h = waitHealthz(ctx, t, other, http.StatusOK, true, time.Second)
	t.Logf("node being deleted: %s /healthz %d %s", other.Name, h.code, h.body)

	// 3. Deleted for good, then recreated as it was.
	restoreNode(t, target, saved)
	h = waitHealthz(ctx, t, target, http.StatusOK, true, programTimeout)
	t.Logf("node recreated: %s /healthz %d %s", target.Name, h.code, h.body)

	// The proxies still program changes: a new service, from both nodes, to both nodes.
	svc, err := cluster.CreateServiceWithEndpoints(ctx, "healthz-node", "after", tcpOnly, cluster.Pod(1, 2), cluster.Pod(2, 2))
	if err != nil {
		t.Fatal(err)
	}
	for _, client := range []*harness.Pod{cluster.Pod(1, 1), cluster.Pod(2, 1)} {
		got, took := untilAllSeen(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), names(cluster.Pod(1, 2), cluster.Pod(2, 2)), programTimeout)
		t.Logf("after: %s → %s: [%s] within %v", client.Name, clusterIPAddr(svc), got, took.Round(time.Millisecond))
	}
}

// restoreNode makes sure node n's Node object exists as saved, without the taint or the
// finalizer this file adds and not being deleted, and that its proxy runs (upstream kube-proxy
// exits when its Node is deleted). It is idempotent: it also runs as the test's cleanup.
func restoreNode(t *testing.T, n *harness.Node, saved *corev1.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	api := cluster.Client.CoreV1().Nodes()
	cur, err := api.Get(ctx, n.Name, metav1.GetOptions{})
	switch {
	case err == nil && cur.DeletionTimestamp == nil:
		if slices.ContainsFunc(cur.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == toBeDeletedTaint }) || slices.Contains(cur.Finalizers, holdFinalizer) {
			if err := updateNode(ctx, n.Name, func(c *corev1.Node) {
				c.Spec.Taints = slices.DeleteFunc(c.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == toBeDeletedTaint })
				c.Finalizers = slices.DeleteFunc(c.Finalizers, func(f string) bool { return f == holdFinalizer })
			}); err != nil {
				t.Errorf("restore node %s: %v", n.Name, err)
			}
		}
		return
	case err == nil:
		if err := updateNode(ctx, n.Name, func(c *corev1.Node) {
			c.Finalizers = slices.DeleteFunc(c.Finalizers, func(f string) bool { return f == holdFinalizer })
		}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("restore node %s: remove finalizer: %v", n.Name, err)
			return
		}
		if err := harness.Poll(ctx, 50*time.Millisecond, 10*time.Second, func() error {
			if _, err := api.Get(ctx, n.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("node %s still there (%w)", n.Name, err)
			}
			return nil
		}); err != nil {
			t.Errorf("restore node %s: %v", n.Name, err)
			return
		}
	case !apierrors.IsNotFound(err):
		t.Errorf("restore node %s: %v", n.Name, err)
		return
	}
	// Gone: recreate it as saved.
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: saved.Name, Labels: saved.Labels, Annotations: saved.Annotations},
		Spec:       *saved.Spec.DeepCopy(),
	}
	created, err := api.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Errorf("recreate node %s: %v", n.Name, err)
		return
	}
	created.Status = *saved.Status.DeepCopy()
	if _, err := api.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Errorf("recreate node %s: status: %v", n.Name, err)
		return
	}
	// Upstream kube-proxy exits on its Node's deletion (NodeManager.OnNodeDelete): wait for
	// that, then start it again as its DaemonSet would. kproxy must still be running.
	exited := func() bool { gone, _ := cluster.ProxyExited(n); return gone }
	if cluster.Opts.Proxy == harness.ProxyKubeProxy {
		_ = harness.Poll(ctx, 50*time.Millisecond, 5*time.Second, func() error {
			if !exited() {
				return fmt.Errorf("still running")
			}
			return nil
		})
	}
	gone, status := cluster.ProxyExited(n)
	switch {
	case gone && cluster.Opts.Proxy == harness.ProxyKubeProxy:
		t.Logf("node %s recreated; kube-proxy exited on the deletion (%v), as upstream does: started again", n.Name, status)
	case gone:
		t.Errorf("node %s: the proxy exited after its Node was deleted (%v); log %s", n.Name, status, cluster.ProxyLog(n))
	default:
		t.Logf("node %s recreated; its proxy kept running", n.Name)
		return
	}
	if err := cluster.RestartProxy(ctx, n); err != nil {
		t.Errorf("restart proxy on %s after the node was recreated: %v", n.Name, err)
	}
}

// After traffic to a service whose slice carries endpoints.kubernetes.io/last-change-trigger-time
// (as the EndpointSlice controller writes it; the harness does too), each proxy's /metrics has
// kubeproxy_sync_proxy_rules_iptables_total{table="nat"} > 0 and
// kubeproxy_network_programming_duration_seconds_count > 0.
func TestMetricsAfterTraffic(t *testing.T) {
	const ns = "metrics"
	ctx := setup(t, ns)
	svc, err := cluster.CreateServiceWithEndpoints(ctx, ns, "echo", tcpOnly, cluster.Pod(1, 2), cluster.Pod(2, 2))
	if err != nil {
		t.Fatal(err)
	}
	slice, err := cluster.Client.DiscoveryV1().EndpointSlices(ns).Get(ctx, svc.Name+"-e2e", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("slice %s: %s=%s", slice.Name, corev1.EndpointsLastChangeTriggerTime, slice.Annotations[corev1.EndpointsLastChangeTriggerTime])
	for _, client := range []*harness.Pod{cluster.Pod(1, 1), cluster.Pod(2, 1)} {
		untilAllSeen(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), names(cluster.Pod(1, 2), cluster.Pod(2, 2)), programTimeout)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", harness.MetricsPort)
	for _, n := range cluster.Nodes {
		var nat, npd []string
		harness.Eventually(t, 5*time.Second, func() error {
			code, body, err := harness.HTTPGet(ctx, n.Name, url)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("%s /metrics: %d", n.Name, code)
			}
			nat = metricLines(body, "kubeproxy_sync_proxy_rules_iptables_total", `table="nat"`)
			npd = metricLines(body, "kubeproxy_network_programming_duration_seconds_count", "")
			if !anyPositive(nat) {
				return fmt.Errorf("%s /metrics: kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\"}: %q, want > 0", n.Name, nat)
			}
			if !anyPositive(npd) {
				return fmt.Errorf("%s /metrics: kubeproxy_network_programming_duration_seconds_count: %q, want > 0", n.Name, npd)
			}
			return nil
		})
		t.Logf("%s /metrics: %s; %s", n.Name, strings.Join(nat, ", "), strings.Join(npd, ", "))
	}
}

// metricLines are the samples of a metric (name followed by labels or a space) whose line also
// contains label (if not "").
func metricLines(body, name, label string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") {
			if label == "" || strings.Contains(l, label) {
				out = append(out, l)
			}
		}
	}
	return out
}

// anyPositive reports whether a sample's value (the last field) is > 0.
func anyPositive(samples []string) bool {
	for _, s := range samples {
		f := strings.Fields(s)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil && v > 0 {
			return true
		}
	}
	return false
}
