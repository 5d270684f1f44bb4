//go:build e2e && vm

package ipvse2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kproxy/kproxy/e2e/harness"
)

// prefixBase starts the harness prefix of a run: kpvm<pid>, so that two runs (two helpers,
// two terminals) have sandboxes of their own; a run's sandbox is removed at its end, and
// those of runs whose process is gone at the start of the next run (removeStaleSandboxes).
const prefixBase = "kpvm"

const (
	vmNode    = "kpvm-vm"
	vmNodeIP  = "192.0.2.15" // the guest's eth0 (run-test.sh -n)
	vmPodCIDR = "100.64.9.0/24"
	// The VM node's IPv6 address and pod CIDR (TESTING.md: underlay 2001:db8:3::/64, pods
	// 2001:db8:1::/48): with both on its Node, kproxy in the VM programs both families.
	vmNodeIP6  = "2001:db8:3::15"
	vmPodCIDR6 = "2001:db8:1:9::/64"
	testNS     = "kpvm-ipvs"
	// otherNode is where the EndpointSlices say the pods of 100.64.10.0/24 run: they are in
	// the VM too (behind a second bridge), but kproxy counts them as remote.
	otherNode = "kpvm-other"
	lbIP      = "198.51.100.100" // LoadBalancer ingress (TESTING.md: 198.51.100.0/24)
	lbSrcIP   = "198.51.100.101" // lb-src's ingress (loadBalancerSourceRanges)
	lbHCIP    = "198.51.100.102" // lb-hc's ingress (Local, with a local endpoint)
	extIP     = "203.0.113.10"   // externalIP (203.0.113.0/24)
	// allowedSrc is the one source lb-src's loadBalancerSourceRanges let in: the guest's
	// external client (its second address, 198.51.100.21, is refused).
	allowedSrc = "198.51.100.20/32"
	vmZone     = "zone-vm" // the VM node's topology.kubernetes.io/zone
)

// The pods inside the VM (the guest test makes them): p1 and p2 are endpoints of echo from
// the start, p3 is added when the guest asks (KPVM-STEP add-endpoint), p1 removed on
// remove-endpoint. r1 and r2 are "on another node".
var vmPods = []struct{ name, ip, ip6, node string }{
	{"kpvm-p1", "100.64.9.10", "2001:db8:1:9::10", vmNode},
	{"kpvm-p2", "100.64.9.11", "2001:db8:1:9::11", vmNode},
	{"kpvm-p3", "100.64.9.12", "", vmNode},
	{"kpvm-r1", "100.64.10.10", "", otherNode},
	{"kpvm-r2", "100.64.10.11", "", otherNode},
}

const (
	p1, p2, p3, r1, r2 = 0, 1, 2, 3, 4
)

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

	prefix := prefixBase + strconv.Itoa(os.Getpid())
	removeStaleSandboxes(logf)
	// ---- the control plane on the host: no proxy, one host node (the harness wants one).
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := harness.Start(sctx, harness.Options{
		Prefix: prefix, Nodes: 1, PodsPerNode: 0, Proxy: harness.ProxyNone, DualStack: true,
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
	svcs, err := createServices(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	svcFile := filepath.Join(dir, "services.json")
	if err := writeJSON(svcFile, svcs); err != nil {
		t.Fatal(err)
	}
	logf("apiserver via %s; Node %s (%s, %s); services: %s", fwd, vmNode, vmNodeIP, vmPodCIDR, svcs)
	echoPorts := []discoveryv1.EndpointPort{harness.EndpointPort("tcp", corev1.ProtocolTCP), harness.EndpointPort("udp", corev1.ProtocolUDP)}
	udpPorts := []discoveryv1.EndpointPort{harness.EndpointPort("udp", corev1.ProtocolUDP)}
	steps := map[string]func() error{
		"add-endpoint": func() error {
			return c.ApplyEndpointSlice(ctx, harness.EndpointSlice(testNS, "echo", echoPorts, harness.Endpoints(pods(p1, p2, p3)...)))
		},
		"remove-endpoint": func() error {
			return c.ApplyEndpointSlice(ctx, harness.EndpointSlice(testNS, "echo", echoPorts, harness.Endpoints(pods(p2, p3)...)))
		},
		// udp-ct's only endpoint, p1 or p2 (the UDP conntrack scenario, in every mode)
		"udpct-p1": func() error {
			return c.ApplyEndpointSlice(ctx, harness.EndpointSlice(testNS, "udp-ct", udpPorts, harness.Endpoints(pods(p1)...)))
		},
		"udpct-p2": func() error {
			return c.ApplyEndpointSlice(ctx, harness.EndpointSlice(testNS, "udp-ct", udpPorts, harness.Endpoints(pods(p2)...)))
		},
	}

	// ---- the VM
	timeout := envOr("KPVM_VM_TIMEOUT", "420")
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "e2e", "vm", "run-test.sh"),
		"-n", fwdPort, "-t", timeout,
		"-f", bins["kproxy"], "-f", bins["echo"], "-f", kc, "-f", svcFile,
		"-e", "KPVM_DYNAMIC="+envOr("KPVM_DYNAMIC", "1"), "-e", "KPVM_KPROXY_ARGS="+os.Getenv("KPVM_KPROXY_ARGS"),
		"-e", "KPVM_MODES="+envOr("KPVM_MODES", "ipvs,iptables"),
		bins["guest.test"], "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "VM_QUIET=0") // the console carries the guest's KPVM-STEP requests
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
	var results []string
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		if m := resultRE.FindStringSubmatch(line); m != nil {
			results = append(results, m[1]+" "+m[2])
		}
		name, ok := strings.CutPrefix(strings.TrimSpace(line), "KPVM-STEP ")
		if !ok {
			continue
		}
		if step := steps[name]; step == nil {
			stepErr = append(stepErr, "unknown step "+name)
		} else if err := step(); err != nil {
			stepErr = append(stepErr, name+": "+err.Error())
		} else {
			logf("host: step %s done", name)
		}
	}
	err = cmd.Wait()
	logf("VM run: %.1fs (exit %v)", time.Since(tb).Seconds(), err)
	pass, fail := 0, 0
	for _, r := range results {
		if strings.HasPrefix(r, "PASS") {
			pass++
		} else if strings.HasPrefix(r, "FAIL") {
			fail++
		}
	}
	logf("guest subtests: %d passed, %d failed", pass, fail)
	if len(stepErr) > 0 {
		t.Errorf("host steps: %v", stepErr)
	}
	if err != nil {
		t.Fatalf("in-VM test failed: %v (the guest's output is above)", err)
	}
}

// removeStaleSandboxes removes the sandboxes of earlier runs whose process is gone (a run
// killed before its cleanup).
func removeStaleSandboxes(logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(filepath.Dir(harness.StateDir(prefixBase)), prefixBase+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), prefixBase))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // its run is still going
		}
		rep, err := harness.Cleanup(filepath.Base(d))
		logf("removed the sandbox of a run that is gone (pid %d): %v %v", pid, rep, err)
	}
}

// resultRE matches go test -v's result lines of the guest's subtests (the scenarios).
var resultRE = regexp.MustCompile(`^\s+--- (PASS|FAIL): (\S+/\S+)`)

// pods returns the harness pods with the given indexes into vmPods.
func pods(idx ...int) []*harness.Pod {
	var out []*harness.Pod
	for _, i := range idx {
		p := vmPods[i]
		out = append(out, &harness.Pod{Name: p.name, Node: &harness.Node{Name: p.node, Zone: vmZone}, IP: netip.MustParseAddr(p.ip)})
	}
	return out
}

// vmService is what the guest needs to know of a service (services.json).
type vmService struct {
	ClusterIP           string `json:"clusterIP"`
	NodePort            int32  `json:"nodePort,omitempty"`
	LBIP                string `json:"lbIP,omitempty"`
	ExternalIP          string `json:"externalIP,omitempty"`
	HealthCheckNodePort int32  `json:"healthCheckNodePort,omitempty"`
	ClusterIP6          string `json:"clusterIP6,omitempty"` // a dual-stack service's IPv6 ClusterIP
}

type vmServices map[string]vmService

func (s vmServices) String() string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(s)) {
		v := s[name]
		parts = append(parts, fmt.Sprintf("%s=%s np=%d lb=%s ext=%s hc=%d v6=%s", name, v.ClusterIP, v.NodePort, v.LBIP, v.ExternalIP, v.HealthCheckNodePort, v.ClusterIP6))
	}
	return strings.Join(parts, "; ")
}

// createServices creates the services the guest's scenarios use, with their EndpointSlices:
//
//	echo        ClusterIP TCP+UDP 80       -> p1, p2 (p3 added, p1 removed by the steps)
//	empty       ClusterIP TCP 80           no endpoints
//	affinity    ClusterIP TCP 80, ClientIP -> p1, p2
//	np-cluster  NodePort, Cluster policy   -> p1, r1
//	np-local    NodePort, Local policy     -> p2, r1
//	lb-local    LoadBalancer 198.51.100.100, externalIP 203.0.113.10, Local policy -> r1, r2
//	            (no endpoint on the VM node)
//	lb-src      LoadBalancer 198.51.100.101, Cluster policy, loadBalancerSourceRanges
//	            198.51.100.20/32 -> p1, p2
//	lb-hc       LoadBalancer 198.51.100.102, Local policy -> p1, r1 (one local endpoint)
//	hints       ClusterIP TCP 80, trafficDistribution PreferClose -> p1 (hinted for zone-vm,
//	            the VM node's zone), r1 (hinted for zone-other)
//	sctp        ClusterIP SCTP 80          -> p1, p2
//	udp-ct      ClusterIP UDP 80           -> p1 (the udpct-* steps make it p1 or p2)
//	dual        NodePort TCP 80, RequireDualStack -> p1, p2 (an IPv4 and an IPv6 slice)
func createServices(ctx context.Context, c *harness.Cluster) (vmServices, error) {
	tcp := []corev1.ServicePort{harness.ServicePort("tcp", corev1.ProtocolTCP, 80)}
	tcpSlice := []discoveryv1.EndpointPort{harness.EndpointPort("tcp", corev1.ProtocolTCP)}
	defs := []struct {
		name  string
		spec  corev1.ServiceSpec
		ports []discoveryv1.EndpointPort
		eps   []discoveryv1.Endpoint
		lbIP  string                 // the load-balancer ingress IP the status gets (LoadBalancer only)
		eps6  []discoveryv1.Endpoint // the IPv6 slice's endpoints (dual-stack only)
	}{
		{name: "echo", spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{harness.ServicePort("tcp", corev1.ProtocolTCP, 80),
			harness.ServicePort("udp", corev1.ProtocolUDP, 80)}},
			ports: []discoveryv1.EndpointPort{harness.EndpointPort("tcp", corev1.ProtocolTCP), harness.EndpointPort("udp", corev1.ProtocolUDP)},
			eps:   harness.Endpoints(pods(p1, p2)...)},
		{name: "empty", spec: corev1.ServiceSpec{Ports: tcp}},
		{name: "affinity", spec: corev1.ServiceSpec{Ports: tcp, SessionAffinity: corev1.ServiceAffinityClientIP}, ports: tcpSlice,
			eps: harness.Endpoints(pods(p1, p2)...)},
		{name: "np-cluster", spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: tcp,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster}, ports: tcpSlice, eps: harness.Endpoints(pods(p1, r1)...)},
		{name: "np-local", spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: tcp,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal}, ports: tcpSlice, eps: harness.Endpoints(pods(p2, r1)...)},
		{name: "lb-local", spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: tcp, ExternalIPs: []string{extIP},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal}, ports: tcpSlice, eps: harness.Endpoints(pods(r1, r2)...), lbIP: lbIP},
		{name: "lb-src", spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: tcp,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster, LoadBalancerSourceRanges: []string{allowedSrc}},
			ports: tcpSlice, eps: harness.Endpoints(pods(p1, p2)...), lbIP: lbSrcIP},
		{name: "lb-hc", spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: tcp,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal}, ports: tcpSlice, eps: harness.Endpoints(pods(p1, r1)...), lbIP: lbHCIP},
		{name: "hints", spec: corev1.ServiceSpec{Ports: tcp, TrafficDistribution: ptr.To(corev1.ServiceTrafficDistributionPreferClose)},
			ports: tcpSlice, eps: withZoneHints(harness.Endpoints(pods(p1, r1)...), vmZone, "zone-other")},
		{name: "sctp", spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{harness.ServicePort("sctp", corev1.ProtocolSCTP, 80)}},
			ports: []discoveryv1.EndpointPort{harness.EndpointPort("sctp", corev1.ProtocolSCTP)}, eps: harness.Endpoints(pods(p1, p2)...)},
		{name: "udp-ct", spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{harness.ServicePort("udp", corev1.ProtocolUDP, 80)}},
			ports: []discoveryv1.EndpointPort{harness.EndpointPort("udp", corev1.ProtocolUDP)}, eps: harness.Endpoints(pods(p1)...)},
		{name: "dual", spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: tcp,
			IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack), IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}},
			ports: tcpSlice, eps: harness.Endpoints(pods(p1, p2)...), eps6: endpointsV6(p1, p2)},
	}
	out := vmServices{}
	for _, d := range defs {
		svc, err := c.CreateServiceObject(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: d.name, Namespace: testNS}, Spec: d.spec})
		if err != nil {
			return nil, err
		}
		if d.lbIP != "" {
			if svc, err = c.SetLoadBalancerIngress(ctx, testNS, d.name, harness.LBIngress(d.lbIP, corev1.LoadBalancerIPModeVIP)); err != nil {
				return nil, err
			}
		}
		if d.eps != nil {
			if err := c.ApplyEndpointSlice(ctx, harness.EndpointSlice(testNS, d.name, d.ports, d.eps)); err != nil {
				return nil, err
			}
		}
		if d.eps6 != nil {
			s6 := harness.EndpointSlice(testNS, d.name, d.ports, d.eps6)
			s6.Name, s6.AddressType = d.name+"-e2e-v6", discoveryv1.AddressTypeIPv6
			if err := c.ApplyEndpointSlice(ctx, s6); err != nil {
				return nil, err
			}
		}
		v := vmService{ClusterIP: svc.Spec.ClusterIP, NodePort: svc.Spec.Ports[0].NodePort, HealthCheckNodePort: svc.Spec.HealthCheckNodePort}
		if len(svc.Spec.ClusterIPs) > 1 {
			v.ClusterIP6 = svc.Spec.ClusterIPs[1]
		}
		if len(svc.Status.LoadBalancer.Ingress) > 0 {
			v.LBIP = svc.Status.LoadBalancer.Ingress[0].IP
		}
		if len(svc.Spec.ExternalIPs) > 0 {
			v.ExternalIP = svc.Spec.ExternalIPs[0]
		}
		out[d.name] = v
	}
	return out, nil
}

// endpointsV6 are ready endpoints at the pods' IPv6 addresses.
func endpointsV6(idx ...int) []discoveryv1.Endpoint {
	eps := harness.Endpoints(pods(idx...)...)
	for i, j := range idx {
		eps[i].Addresses = []string{vmPods[j].ip6}
	}
	return eps
}

// withZoneHints sets hints.forZones of endpoint i to zones[i], as the EndpointSlice
// controller does for a service with trafficDistribution PreferClose.
func withZoneHints(eps []discoveryv1.Endpoint, zones ...string) []discoveryv1.Endpoint {
	for i := range eps {
		eps[i].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zones[i]}}}
	}
	return eps
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func createVMNode(ctx context.Context, c *harness.Cluster) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: vmNode, Labels: map[string]string{
			"kubernetes.io/hostname": vmNode, "kubernetes.io/os": "linux", "topology.kubernetes.io/zone": vmZone,
		}},
		Spec: corev1.NodeSpec{PodCIDR: vmPodCIDR, PodCIDRs: []string{vmPodCIDR, vmPodCIDR6}},
	}
	created, err := c.Client.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", vmNode, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: vmNodeIP}, {Type: corev1.NodeInternalIP, Address: vmNodeIP6},
			{Type: corev1.NodeHostName, Address: vmNode}},
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
