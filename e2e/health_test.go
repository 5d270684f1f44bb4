//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/e2e/harness"
)

// /healthz and /livez answer on the healthz address (0.0.0.0:10256), /metrics and /proxyMode
// on the metrics address (127.0.0.1:10249), queried from inside each node's namespace; the
// healthz port also answers on the node IP, from the fabric.
func TestHealthAndMetrics(t *testing.T) {
	ctx := setup(t, "health")
	for _, n := range cluster.Nodes {
		healthz := fmt.Sprintf("http://127.0.0.1:%d", harness.HealthzPort)
		metrics := fmt.Sprintf("http://127.0.0.1:%d", harness.MetricsPort)
		get := func(ns, url string) string {
			t.Helper()
			code, body, err := harness.HTTPGet(ctx, ns, url)
			if err != nil {
				t.Errorf("%s: GET %s: %v", ns, url, err)
				return ""
			}
			if code != http.StatusOK {
				t.Errorf("%s: GET %s: status %d, want 200; body %q", ns, url, code, body)
			}
			return body
		}

		body := get(n.Name, healthz+"/healthz")
		var h map[string]any
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Errorf("%s /healthz body %q: not JSON: %v", n.Name, body, err)
		}
		for _, key := range []string{"lastUpdated", "currentTime"} {
			if _, ok := h[key]; !ok {
				t.Errorf("%s /healthz body %q: no %q", n.Name, body, key)
			}
		}
		t.Logf("%s /healthz: %s", n.Name, strings.TrimSpace(body))
		get(n.Name, healthz+"/livez")
		get(harness.FabricNetns(cluster.Opts.Prefix), fmt.Sprintf("http://%s:%d/healthz", n.IP, harness.HealthzPort))

		m := get(n.Name, metrics+"/metrics")
		if !strings.Contains(m, "kubeproxy_sync_proxy_rules_duration_seconds") {
			t.Errorf("%s /metrics: no kubeproxy_sync_proxy_rules_duration_seconds (%d bytes)", n.Name, len(m))
		}
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, "kubeproxy_sync_proxy_rules_duration_seconds_count") {
				t.Logf("%s /metrics: %s", n.Name, line)
			}
		}
		if mode := strings.TrimSpace(get(n.Name, metrics+"/proxyMode")); mode != "iptables" {
			t.Errorf("%s /proxyMode: %q, want iptables", n.Name, mode)
		}
	}
}
