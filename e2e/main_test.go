//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/e2e/harness"
)

// cluster is the package's one sandbox: 2 nodes × 2 pods.
var cluster *harness.Cluster

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: must run as root (network namespaces, iptables): sudo make e2e")
		return 1
	}
	opts, err := optionsFromEnv()
	if err != nil {
		fmt.Printf("e2e: %v\n", err)
		return 1
	}
	keep := os.Getenv("KPROXY_E2E_KEEP") == "1"
	cleanup := func() {
		t0 := time.Now()
		rep, err := harness.Cleanup(opts.Prefix)
		fmt.Printf("e2e: cleanup in %dms: %v\n", time.Since(t0).Milliseconds(), rep)
		if err != nil {
			fmt.Printf("e2e: %v\n", err)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Printf("e2e: %v: cleaning up\n", s)
		cleanup()
		os.Exit(130)
	}()

	fmt.Printf("e2e: proxy %s, k8s binaries %s\n", opts.Proxy, opts.K8sBin)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := harness.Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Printf("e2e: sandbox start failed: %v\n", err)
		if !keep {
			cleanup()
		}
		return 1
	}
	cluster = c
	code := m.Run()
	c.Close()
	if keep {
		fmt.Printf("e2e: KPROXY_E2E_KEEP=1: sandbox %s left running; state and logs in %s\n"+
			"  kubectl: nsenter --net=%s %s/kubectl --kubeconfig %s get nodes\n"+
			"  remove:  go run ./e2e/cmd/sandbox down --prefix %s\n",
			opts.Prefix, c.State, harness.NetnsPath(opts.Prefix+"-fab"), opts.K8sBin,
			harness.FabricKubeconfig(opts.Prefix), opts.Prefix)
	} else {
		cleanup()
	}
	return code
}

// optionsFromEnv reads KPROXY_E2E_PROXY (kproxy, kube-proxy, none), KPROXY_BIN,
// KPROXY_ECHO_BIN, KPROXY_K8S_BIN, KPROXY_E2E_PROXY_ARGS and KPROXY_E2E_DATAPATH (vxlan,
// host-gw, ipip: kproxy's --datapath instead of the harness's static routes).
func optionsFromEnv() (harness.Options, error) {
	repo, err := repoRoot()
	if err != nil {
		return harness.Options{}, err
	}
	o := harness.Options{
		Prefix:      envOr("KPROXY_E2E_PREFIX", harness.PrefixTest),
		Nodes:       2,
		PodsPerNode: 2,
		Proxy:       envOr("KPROXY_E2E_PROXY", harness.ProxyKProxy),
		ProxyBin:    envOr("KPROXY_BIN", filepath.Join(repo, "bin", "kproxy")),
		EchoBin:     envOr("KPROXY_ECHO_BIN", filepath.Join(repo, "bin", "echo")),
		K8sBin:      os.Getenv("KPROXY_K8S_BIN"),
		ProxyArgs:   strings.Fields(os.Getenv("KPROXY_E2E_PROXY_ARGS")),
		Datapath:    os.Getenv("KPROXY_E2E_DATAPATH"),
		Logf:        func(format string, args ...any) { fmt.Printf("e2e: "+format+"\n", args...) },
	}
	// kproxy joins the nodes' pods with its own VXLAN datapath, as a cluster running kproxy
	// as its pod network would; other proxies (and KPROXY_E2E_DATAPATH=none) get static routes.
	if _, set := os.LookupEnv("KPROXY_E2E_DATAPATH"); !set && o.Proxy == harness.ProxyKProxy {
		o.Datapath = "vxlan"
	}
	if o.Datapath == "none" {
		o.Datapath = ""
	}
	if o.K8sBin == "" {
		if o.K8sBin, err = buildK8s(repo); err != nil {
			return o, err
		}
	}
	return o, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// repoRoot is the directory holding go.mod, above the test's working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}

// buildK8s runs e2e/tools/build-k8s.sh (instant when its cache is warm) and returns the bin
// directory it prints on its last line.
func buildK8s(repo string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(repo, "e2e", "tools", "build-k8s.sh"))
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("e2e/tools/build-k8s.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1], nil
}

// setup makes the test's Kubernetes namespace, bounds the test with a context and dumps every
// node if the test fails.
func setup(t *testing.T, ns string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range cluster.Nodes {
				cluster.DumpNode(t, n)
			}
		}
	})
	if err := cluster.EnsureNamespace(ctx, ns); err != nil {
		t.Fatalf("namespace %s: %v", ns, err)
	}
	return ctx
}
