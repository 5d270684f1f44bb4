//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// inspectOn runs `kproxy inspect` in node n's namespace with the daemon's flags and returns
// its output and exit code.
func inspectOn(ctx context.Context, t *testing.T, n *harness.Node, args ...string) (string, int) {
	t.Helper()
	full := append([]string{"--net=" + harness.NetnsPath(n.Name), "--", cluster.Opts.ProxyBin, "inspect",
		"--kubeconfig=" + filepath.Join(cluster.State, "kube-proxy.kubeconfig"),
		"--hostname-override=" + n.Name, "--cluster-cidr=" + harness.ClusterCIDR.String()}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("kproxy inspect: %v %s", err, out)
	return "", -1
}

// `kproxy inspect` on node 1, with the daemon's flags and identity (kube-proxy's
// kubeconfig): for a service with endpoints on node 2 it shows the DNAT targets and that the
// kernel matches (exit 0); from a pod's address the trace keeps the source, from the node's
// it masquerades; -o json parses; with one endpoint rule deleted by hand it names the
// difference and exits 3.
func TestInspect(t *testing.T) {
	if cluster.Opts.Proxy != harness.ProxyKProxy {
		t.Skip("kproxy inspect")
	}
	const ns = "inspect"
	ctx := setup(t, ns)
	n1, client := cluster.Nodes[0], cluster.Pod(1, 1)
	backends := []*harness.Pod{cluster.Pod(2, 1), cluster.Pod(2, 2)}
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP), harness.Endpoints(backends...))
	untilAllSeen(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), names(backends...), programTimeout)

	out, code := inspectOn(ctx, t, n1, ns+"/echo", "--source="+client.IP.String())
	t.Logf("kproxy inspect %s/echo --source=%s: exit %d\n%s", ns, client.IP, code, out)
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	for _, want := range []string{"kernel matches the expected state", "→ " + backends[0].Addr(harness.EchoPort),
		"→ " + backends[1].Addr(harness.EchoPort), "DNAT to " + backends[0].Addr(harness.EchoPort) + ", source kept"} {
		if !strings.Contains(out, want) {
			t.Errorf("output has no %q", want)
		}
	}
	out, _ = inspectOn(ctx, t, n1, clusterIPAddr(svc)+"/tcp", "--source="+n1.IP.String(), "-o", "json")
	var doc struct {
		Reports []struct {
			Ports []struct {
				Name   string `json:"name"`
				Traces []struct {
					Outcomes []string `json:"outcomes"`
				} `json:"traces"`
			} `json:"servicePorts"`
		} `json:"reports"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Reports) != 1 || len(doc.Reports[0].Ports) != 1 ||
		len(doc.Reports[0].Ports[0].Traces) != 1 || !strings.Contains(strings.Join(doc.Reports[0].Ports[0].Traces[0].Outcomes, ";"), "masqueraded") {
		t.Errorf("-o json from the node's address: %v\n%s", err, out)
	}

	var rule string
	for _, l := range strings.Split(iptablesSave(ctx, t, n1, "-t", "nat"), "\n") {
		if strings.HasPrefix(l, "-A KUBE-SVC-") && strings.Contains(l, ns+"/echo:tcp -> "+backends[0].IP.String()) {
			rule = l
		}
	}
	if rule == "" {
		t.Fatalf("%s: no KUBE-SVC rule to %s", n1.Name, backends[0].Name)
	}
	execSh(t, n1, "iptables -t nat "+strings.Replace(rule, "-A ", "-D ", 1))
	out, code = inspectOn(ctx, t, n1, ns+"/echo")
	t.Logf("after deleting %q: exit %d\n%s", rule, code, out)
	if code != 3 || !strings.Contains(out, "missing: ") {
		t.Errorf("exit %d, want 3 with the missing rule named", code)
	}
	restartProxy(t, n1) // puts the rule back at once (a full sync)
}
