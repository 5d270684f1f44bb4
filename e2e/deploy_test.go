//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/e2e/harness"
)

// kubectl runs the suite's kubectl as the cluster admin (through the forwarder on
// 127.0.0.1) and returns its combined output and exit code (-1 when it did not run).
func kubectl(ctx context.Context, t *testing.T, args ...string) (string, int) {
	t.Helper()
	full := append([]string{"--kubeconfig", harness.AdminKubeconfig(cluster.Opts.Prefix)}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(cluster.Opts.K8sBin, "kubectl"), full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	default:
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		return "", -1
	}
}

// TestDeployManifestsServerDryRun validates every object of deploy/ (and deploy/optional/)
// against the real apiserver with a server-side dry run and strict field validation, then
// applies the RBAC objects for real and checks with `kubectl auth can-i` that the kproxy
// ServiceAccount can do what kproxy needs and nothing more.
func TestDeployManifestsServerDryRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	deploy := filepath.Join(repo, "deploy")
	optional := filepath.Join(deploy, "optional")

	out, code := kubectl(ctx, t, "apply", "--dry-run=server", "--validate=strict", "-f", deploy, "-f", optional)
	t.Logf("kubectl apply --dry-run=server:\n%s", out)
	if code != 0 {
		t.Fatalf("server-side dry run of deploy/ failed (exit %d):\n%s", code, out)
	}
	for _, want := range []string{
		"serviceaccount/kproxy", "clusterrole.rbac.authorization.k8s.io/kproxy ",
		"clusterrolebinding.rbac.authorization.k8s.io/kproxy ", "configmap/kproxy",
		"daemonset.apps/kproxy", "clusterrole.rbac.authorization.k8s.io/kproxy-datapath",
		"clusterrolebinding.rbac.authorization.k8s.io/kproxy-datapath",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output has no %q", want)
		}
	}

	// The datapath variant on its own, as docs/install.md applies it (its DaemonSet replaces
	// deploy/daemonset.yaml's: same name).
	out, code = kubectl(ctx, t, "apply", "--dry-run=server", "--validate=strict",
		"-f", filepath.Join(deploy, "rbac.yaml"), "-f", filepath.Join(deploy, "configmap.yaml"), "-f", optional)
	t.Logf("kubectl apply --dry-run=server (datapath):\n%s", out)
	if code != 0 || !strings.Contains(out, "daemonset.apps/kproxy") {
		t.Fatalf("server-side dry run of the datapath manifests failed (exit %d):\n%s", code, out)
	}

	// The RBAC objects for real (cluster-scoped, deleted at the end; no controller needed).
	rbac := filepath.Join(deploy, "rbac.yaml")
	datapathRBAC := filepath.Join(optional, "datapath-rbac.yaml")
	if out, code := kubectl(ctx, t, "apply", "-f", rbac); code != 0 {
		t.Fatalf("apply %s (exit %d):\n%s", rbac, code, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, f := range []string{datapathRBAC, rbac} {
			if out, code := kubectl(ctx, t, "delete", "--ignore-not-found", "-f", f); code != 0 {
				t.Errorf("delete %s (exit %d):\n%s", f, code, out)
			}
		}
	})

	const sa = "system:serviceaccount:kube-system:kproxy"
	type check struct {
		verb, resource string
		allowed        bool
	}
	canI := func(t *testing.T, checks []check) {
		t.Helper()
		for _, c := range checks {
			// auth can-i exits 0 for yes and 1 for no; the RBAC cache can lag an apply by a
			// moment, so each answer is polled for up to 10 s.
			var out string
			var code int
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				args := []string{"auth", "can-i", c.verb, c.resource, "--all-namespaces", "--as=" + sa}
				// "nodes/status" would be read as the Node named status: a subresource is a flag.
				if res, sub, ok := strings.Cut(c.resource, "/"); ok {
					args = append(args[:3:3], res, "--subresource="+sub, "--all-namespaces", "--as="+sa)
				}
				out, code = kubectl(ctx, t, args...)
				if (code == 0) == c.allowed || time.Now().After(deadline) {
					break
				}
			}
			if code != 0 && code != 1 {
				t.Errorf("auth can-i %s %s: exit %d: %s", c.verb, c.resource, code, out)
				continue
			}
			if got := code == 0; got != c.allowed {
				t.Errorf("%s can %s %s = %v, want %v (%s)", sa, c.verb, c.resource, got, c.allowed, strings.TrimSpace(out))
			}
		}
	}
	t.Run("kproxy role", func(t *testing.T) {
		canI(t, []check{
			{"list", "services", true},
			{"watch", "services", true},
			{"list", "endpointslices.discovery.k8s.io", true},
			{"watch", "endpointslices.discovery.k8s.io", true},
			{"get", "nodes", true},
			{"list", "nodes", true},
			{"watch", "nodes", true},
			{"list", "servicecidrs.networking.k8s.io", true},
			{"watch", "servicecidrs.networking.k8s.io", true},
			{"create", "events.events.k8s.io", true},
			{"patch", "events.events.k8s.io", true},
			{"create", "events", true},
			{"patch", "events", true},

			{"delete", "services", false},
			{"create", "services", false},
			{"update", "services", false},
			{"get", "secrets", false},
			{"list", "secrets", false},
			{"list", "configmaps", false},
			{"update", "endpointslices.discovery.k8s.io", false},
			{"delete", "endpointslices.discovery.k8s.io", false},
			{"patch", "nodes", false},
			{"delete", "nodes", false},
			{"create", "servicecidrs.networking.k8s.io", false},
			{"list", "pods", false},
			{"delete", "events", false},
			{"create", "serviceaccounts/token", false},
			{"impersonate", "users", false},
		})
	})
	t.Run("with the optional datapath role", func(t *testing.T) {
		if out, code := kubectl(ctx, t, "apply", "-f", datapathRBAC); code != 0 {
			t.Fatalf("apply %s (exit %d):\n%s", datapathRBAC, code, out)
		}
		canI(t, []check{
			{"patch", "nodes", true},
			{"update", "nodes", false},
			{"delete", "nodes", false},
			{"patch", "nodes/status", false},
			{"get", "secrets", false},
		})
	})
}
