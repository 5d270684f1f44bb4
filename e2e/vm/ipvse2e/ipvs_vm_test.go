//go:build e2e && vm

package ipvse2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

const (
	prefix    = "kpvm"
	vmNode    = "kpvm-vm"
	vmNodeIP  = "192.0.2.15" // the guest's eth0 (run-test.sh -n)
	vmPodCIDR = "100.64.9.0/24"
	testNS    = "kpvm-ipvs"
)

// The pods inside the VM (the guest test makes them): p1 and p2 are endpoints from the start,
// p3 is added when the guest asks (KPVM-STEP add-endpoint), p1 removed on remove-endpoint.
var vmPods = []struct{ name, ip string }{
	{"kpvm-p1", "100.64.9.10"},
	{"kpvm-p2", "100.64.9.11"},
	{"kpvm-p3", "100.64.9.12"},
}

// TestKProxyIPVSInVMWithRealAPIServer: the real apiserver on the host, kproxy --mode=ipvs in
// the VM, real traffic between network namespaces in the VM. See doc.go.
func TestKProxyIPVSInVMWithRealAPIServer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, qemu, /var/cache)")
	}
	t0 := time.Now()
	logf := func(format string, args ...any) {
		fmt.Printf("ipvs-e2e %6.2fs "+format+"\n", append([]any{time.Since(t0).Seconds()}, args...)...)
	}
	repo := repoRoot(t)
	bins := buildBinaries(t, repo, logf)
	k8sBin := os.Getenv("KPROXY_K8S_BIN")
	if k8sBin == "" {
		k8sBin = buildK8s(t, repo)
	}

	// ---- the control plane on the host: no proxy, one host node (the harness wants one).
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := harness.Start(sctx, harness.Options{
		Prefix: prefix, Nodes: 1, PodsPerNode: 0, Proxy: harness.ProxyNone,
		K8sBin: k8sBin, EchoBin: bins["echo"],
		Logf: func(format string, args ...any) { logf("harness: "+format, args...) },
	})
	scancel()
	defer func() {
		if c != nil {
			c.Close()
		}
		if os.Getenv("KPROXY_E2E_KEEP") == "1" {
			logf("KPROXY_E2E_KEEP=1: sandbox %s left running (go run ./e2e/cmd/sandbox down --prefix %s)", prefix, prefix)
			return
		}
		rep, err := harness.Cleanup(prefix)
		logf("cleanup: %v %v", rep, err)
	}()
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	fwd := c.APIForwarderAddr()
	_, fwdPort, err := net.SplitHostPort(fwd)
	if err != nil {
		t.Fatalf("API forwarder address %q: %v", fwd, err)
	}

	// ---- the guest's kubeconfig, its Node object, the services
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := c.WriteProxyKubeconfig(kc, "https://"+harness.VMAPIServerIP.String()+":6443"); err != nil {
		t.Fatal(err)
	}
	if err := createVMNode(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureNamespace(ctx, testNS); err != nil {
		t.Fatal(err)
	}
	node := &harness.Node{Name: vmNode, Zone: "zone-vm"}
	pod := func(i int) *harness.Pod {
		return &harness.Pod{Name: vmPods[i].name, Node: node, IP: netip.MustParseAddr(vmPods[i].ip)}
	}
	svc, err := c.CreateServiceWithEndpoints(ctx, testNS, "echo", []corev1.Protocol{corev1.ProtocolTCP}, pod(0), pod(1))
	if err != nil {
		t.Fatal(err)
	}
	empty, err := c.CreateService(ctx, testNS, "empty", harness.ServicePort("tcp", corev1.ProtocolTCP, 80))
	if err != nil {
		t.Fatal(err)
	}
	setEndpoints := func(idx ...int) error {
		var ps []*harness.Pod
		for _, i := range idx {
			ps = append(ps, pod(i))
		}
		return c.ApplyEndpointSlice(ctx, harness.EndpointSlice(testNS, "echo",
			[]discoveryv1.EndpointPort{harness.EndpointPort("tcp", corev1.ProtocolTCP)}, harness.Endpoints(ps...)))
	}
	logf("apiserver via %s; Node %s (%s, %s); service echo %s:80 -> %s, %s; service empty %s:80 (no endpoints)",
		fwd, vmNode, vmNodeIP, vmPodCIDR, svc.Spec.ClusterIP, vmPods[0].ip, vmPods[1].ip, empty.Spec.ClusterIP)

	// ---- the VM
	timeout := "300"
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "e2e", "vm", "run-test.sh"),
		"-n", fwdPort, "-t", timeout,
		"-f", bins["kproxy"], "-f", bins["echo"], "-f", kc,
		"-e", "KPVM_SVC_IP="+svc.Spec.ClusterIP, "-e", "KPVM_EMPTY_IP="+empty.Spec.ClusterIP,
		"-e", "KPVM_DYNAMIC="+envOr("KPVM_DYNAMIC", "1"), "-e", "KPVM_KPROXY_ARGS="+os.Getenv("KPVM_KPROXY_ARGS"),
		bins["guest.test"], "-test.v", "-test.count=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tb := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var stepErr []string
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		switch strings.TrimSpace(line) {
		case "KPVM-STEP add-endpoint":
			if err := setEndpoints(0, 1, 2); err != nil {
				stepErr = append(stepErr, err.Error())
			}
			logf("host: EndpointSlice echo-e2e now %s, %s, %s", vmPods[0].ip, vmPods[1].ip, vmPods[2].ip)
		case "KPVM-STEP remove-endpoint":
			if err := setEndpoints(1, 2); err != nil {
				stepErr = append(stepErr, err.Error())
			}
			logf("host: EndpointSlice echo-e2e now %s, %s", vmPods[1].ip, vmPods[2].ip)
		}
	}
	err = cmd.Wait()
	logf("VM run: %.1fs (exit %v)", time.Since(tb).Seconds(), err)
	if len(stepErr) > 0 {
		t.Errorf("host steps: %v", stepErr)
	}
	if err != nil {
		t.Fatalf("in-VM test failed: %v (the guest's output is above)", err)
	}
}

func createVMNode(ctx context.Context, c *harness.Cluster) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: vmNode, Labels: map[string]string{
			"kubernetes.io/hostname": vmNode, "kubernetes.io/os": "linux", "topology.kubernetes.io/zone": "zone-vm",
		}},
		Spec: corev1.NodeSpec{PodCIDR: vmPodCIDR, PodCIDRs: []string{vmPodCIDR}},
	}
	created, err := c.Client.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", vmNode, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: vmNodeIP}, {Type: corev1.NodeHostName, Address: vmNode}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KproxyE2E",
			Message: "the IPVS test VM", LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s status: %w", vmNode, err)
	}
	return nil
}

// buildBinaries builds static kproxy, echo and the guest test into a temporary directory
// (KPROXY_BIN / KPROXY_ECHO_BIN override the first two; they must be static).
func buildBinaries(t *testing.T, repo string, logf func(string, ...any)) map[string]string {
	t.Helper()
	out := t.TempDir()
	bins := map[string]string{
		"kproxy":     filepath.Join(out, "kproxy"),
		"echo":       filepath.Join(out, "echo"),
		"guest.test": filepath.Join(out, "guest.test"),
	}
	t0 := time.Now()
	builds := [][]string{{"test", "-c", "-tags", "vm", "-o", bins["guest.test"], "./e2e/vm/ipvse2e/guest"}}
	if b := os.Getenv("KPROXY_BIN"); b != "" {
		bins["kproxy"] = b
	} else {
		builds = append(builds, []string{"build", "-trimpath", "-o", bins["kproxy"], "./cmd/kproxy"})
	}
	if b := os.Getenv("KPROXY_ECHO_BIN"); b != "" {
		bins["echo"] = b
	} else {
		builds = append(builds, []string{"build", "-trimpath", "-o", bins["echo"], "./e2e/cmd/echo"})
	}
	for _, args := range builds {
		cmd := exec.Command("go", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local")
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, o)
		}
	}
	logf("static binaries built in %.1fs: %s", time.Since(t0).Seconds(), out)
	return bins
}

func buildK8s(t *testing.T, repo string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(filepath.Join(repo, "e2e", "tools", "build-k8s.sh"))
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("e2e/tools/build-k8s.sh: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[len(lines)-1]
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if d == filepath.Dir(d) {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
