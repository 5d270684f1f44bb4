//go:build vm

package guest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The node inside the VM (TESTING.md's plan): this node's pods on cni0 (100.64.9.0/24, the
// Node's podCIDR); "another node's" pods on cni1 (100.64.10.0/24: in the VM too, but their
// EndpointSlices name node kpvm-other, so kproxy treats them as remote); an external client
// namespace on a veth (198.51.100.20), routed to the node IP, the LB IP and the externalIPs.
const (
	nodeName = "kpvm-vm"
	nodeIP   = "192.0.2.15"
	zone     = "zone-vm"   // the Node's topology.kubernetes.io/zone
	testNS   = "kpvm-ipvs" // the services' namespace
	clientNS = "kpvm-c"
	clientIP = "100.64.9.20"
	extNS    = "kpvm-ext"
	extIP    = "198.51.100.20"
	// extIP2 is the external client's second address, which lb-src's
	// loadBalancerSourceRanges (198.51.100.20/32) refuse.
	extIP2     = "198.51.100.21"
	extGW      = "198.51.100.1"
	echoPort   = "8080"
	kubeconfig = "/kproxy/kubeconfig"
	healthz    = "http://127.0.0.1:10256/healthz"
	metricsURL = "http://127.0.0.1:10249/metrics"
)

// IPv6 (TESTING.md: pods 2001:db8:1::/48, underlay 2001:db8:3::/64): this node's pod
// subnet on cni0, the node's address (on the kpvm-svc dummy: eth0 is qemu's), and the
// external client's link (2001:db8:4::/64, the plan's IPv6 prefix has no external range).
const (
	podGW6    = "2001:db8:1:9::1"
	nodeIP6   = "2001:db8:3::15"
	extIP6    = "2001:db8:4::20"
	extGW6    = "2001:db8:4::1"
	clientIP6 = "2001:db8:1:9::20"
)

type pod struct{ ns, ip, bridge, ip6 string }

// The pods: p1 and p2 are endpoints of echo from the start; the host adds p3 when asked
// (KPVM-STEP). r1 and r2 are "on another node".
var (
	p1     = pod{"kpvm-p1", "100.64.9.10", "cni0", "2001:db8:1:9::10"}
	p2     = pod{"kpvm-p2", "100.64.9.11", "cni0", "2001:db8:1:9::11"}
	p3     = pod{"kpvm-p3", "100.64.9.12", "cni0", ""}
	r1     = pod{"kpvm-r1", "100.64.10.10", "cni1", ""}
	r2     = pod{"kpvm-r2", "100.64.10.11", "cni1", ""}
	client = pod{clientNS, clientIP, "cni0", clientIP6}
	bridge = map[string]string{"cni0": "100.64.9.1", "cni1": "100.64.10.1"}
)

// service is one entry of services.json, written by the host half.
type service struct {
	ClusterIP           string `json:"clusterIP"`
	NodePort            int32  `json:"nodePort,omitempty"`
	LBIP                string `json:"lbIP,omitempty"`
	ExternalIP          string `json:"externalIP,omitempty"`
	HealthCheckNodePort int32  `json:"healthCheckNodePort,omitempty"`
	ClusterIP6          string `json:"clusterIP6,omitempty"`
}

func (s service) clusterIP(port string) string { return s.ClusterIP + ":" + port }
func (s service) nodePort() string             { return fmt.Sprintf("%s:%d", nodeIP, s.NodePort) }

// clusterIP6 and nodePort6 are the IPv6 addresses of a dual-stack service.
func (s service) clusterIP6(port string) string { return net.JoinHostPort(s.ClusterIP6, port) }
func (s service) nodePort6() string {
	return net.JoinHostPort(nodeIP6, strconv.Itoa(int(s.NodePort)))
}

func readServices(t *testing.T) map[string]service {
	t.Helper()
	b, err := os.ReadFile("/kproxy/services.json")
	if err != nil {
		t.Fatalf("services.json (written by the host half): %v", err)
	}
	var svcs map[string]service
	if err := json.Unmarshal(b, &svcs); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"echo", "empty", "affinity", "np-cluster", "np-local", "lb-local", "lb-src", "lb-hc", "hints", "sctp", "udp-ct", "dual"} {
		if svcs[name].ClusterIP == "" {
			t.Fatalf("services.json has no %s: %s", name, b)
		}
	}
	if svcs["dual"].ClusterIP6 == "" {
		t.Fatalf("services.json: dual has no IPv6 ClusterIP: %s", b)
	}
	return svcs
}

// setupNode builds the bridges, the pods with their echo servers and the external client.
func setupNode(t *testing.T) {
	t.Helper()
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1",
		"net.ipv6.conf.all.forwarding=1", "net.bridge.bridge-nf-call-ip6tables=1"} {
		sh(t, "sysctl", "-qw", s)
	}
	for br, gw := range bridge {
		sh(t, "ip", "link", "add", br, "type", "bridge")
		sh(t, "ip", "addr", "add", gw+"/24", "dev", br)
		sh(t, "ip", "link", "set", br, "up")
	}
	for i, p := range []pod{client, p1, p2, p3, r1, r2} {
		host := fmt.Sprintf("vkp%d", i)
		sh(t, "ip", "netns", "add", p.ns)
		sh(t, "ip", "-n", p.ns, "link", "set", "lo", "up")
		sh(t, "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		sh(t, "ip", "link", "set", host, "master", p.bridge, "up")
		sh(t, "ip", "link", "set", host, "type", "bridge_slave", "hairpin", "on")
		sh(t, "ip", "-n", p.ns, "addr", "add", p.ip+"/24", "dev", "eth0")
		sh(t, "ip", "-n", p.ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", p.ns, "route", "add", "default", "via", bridge[p.bridge])
		if p.ip6 != "" { // nodad: usable at once
			sh(t, "ip", "-n", p.ns, "addr", "add", p.ip6+"/64", "dev", "eth0", "nodad")
			sh(t, "ip", "-n", p.ns, "-6", "route", "add", "default", "via", podGW6)
		}
	}
	sh(t, "ip", "addr", "add", podGW6+"/64", "dev", "cni0", "nodad")
	// the external client: its own link to the node, routes to the node IP, the LB IPs and
	// the externalIPs only (the LB IP is in its /24, hence the host route)
	sh(t, "ip", "netns", "add", extNS)
	sh(t, "ip", "-n", extNS, "link", "set", "lo", "up")
	sh(t, "ip", "link", "add", "vext0", "type", "veth", "peer", "name", "eth0", "netns", extNS)
	sh(t, "ip", "addr", "add", extGW+"/24", "dev", "vext0")
	sh(t, "ip", "link", "set", "vext0", "up")
	sh(t, "ip", "-n", extNS, "addr", "add", extIP+"/24", "dev", "eth0")
	sh(t, "ip", "-n", extNS, "addr", "add", extIP2+"/24", "dev", "eth0")
	sh(t, "ip", "-n", extNS, "link", "set", "eth0", "up")
	// 198.51.100.100-103: the load-balancer IPs
	for _, dst := range []string{"192.0.2.0/24", "203.0.113.0/24", "198.51.100.100/30"} {
		sh(t, "ip", "-n", extNS, "route", "add", dst, "via", extGW)
	}
	sh(t, "ip", "addr", "add", extGW6+"/64", "dev", "vext0", "nodad")
	sh(t, "ip", "-n", extNS, "addr", "add", extIP6+"/64", "dev", "eth0", "nodad")
	sh(t, "ip", "-n", extNS, "-6", "route", "add", nodeIP6+"/128", "via", extGW6)
	// A node has a route for the service CIDRs and the externalIPs (a default route, on a
	// real one): the iptables mode DNATs the node's own packets after their first route
	// lookup. Here they go to a dummy device, where anything not DNATed ends. It also holds
	// the node's IPv6 address (eth0 is qemu's user network).
	sh(t, "ip", "link", "add", "kpvm-svc", "type", "dummy")
	sh(t, "ip", "link", "set", "kpvm-svc", "up")
	for _, dst := range []string{"100.100.0.0/16", "203.0.113.0/24", "2001:db8:2::/112"} {
		sh(t, "ip", "route", "add", dst, "dev", "kpvm-svc")
	}
	sh(t, "ip", "addr", "add", nodeIP6+"/128", "dev", "kpvm-svc", "nodad")
	for _, p := range []pod{p1, p2, p3, r1, r2} {
		cmd := exec.Command("ip", "netns", "exec", p.ns, "/kproxy/echo", "server", "--name", p.ns, "--port", echoPort)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("echo server in %s: %v", p.ns, err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	for _, p := range []pod{p1, p2, p3, r1, r2} {
		waitFor(t, 10*time.Second, "echo server "+p.ns, func() error {
			_, err := request("", "tcp", p.ip+":"+echoPort)
			return err
		})
	}
}

// syncBuf collects kproxy's output.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// kproxy is one kproxy process in the VM.
type kproxy struct {
	mode   string
	args   []string
	cmd    *exec.Cmd
	log    *syncBuf
	exited chan error
}

// startKProxy starts kproxy in mode and waits for /healthz 200. The process is killed at
// the end of root (the top-level test), its log printed if that failed.
func startKProxy(t, root *testing.T, mode string, extra ...string) *kproxy {
	t.Helper()
	args := append([]string{"--mode=" + mode, "--kubeconfig", kubeconfig, "--hostname-override", nodeName,
		"--cluster-cidr", "100.64.0.0/16", "--ipvs-sync-period=5s", "--iptables-sync-period=5s", "-v=2"},
		strings.Fields(os.Getenv("KPVM_KPROXY_ARGS"))...)
	args = append(args, extra...)
	k := &kproxy{mode: mode, args: args, log: &syncBuf{}, exited: make(chan error, 1)}
	k.cmd = exec.Command("/kproxy/kproxy", args...)
	k.cmd.Stdout, k.cmd.Stderr = k.log, k.log
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start kproxy: %v", err)
	}
	go func() { k.exited <- k.cmd.Wait() }()
	root.Cleanup(func() {
		k.kill()
		if root.Failed() {
			fmt.Printf("---- kproxy --mode=%s log\n%s---- end of kproxy log\n", mode, k.log.String())
		}
	})
	waitFor(t, 90*time.Second, "kproxy /healthz 200", func() error {
		select {
		case err := <-k.exited:
			k.exited <- err
			return stop{fmt.Errorf("kproxy exited: %w\n%s", err, k.log.String())}
		default:
		}
		resp, err := (&http.Client{Timeout: time.Second}).Get(healthz)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz %d", resp.StatusCode)
		}
		return nil
	})
	return k
}

// pause stops kproxy (SIGSTOP) until resume: nothing it would repair is repaired meanwhile.
func (k *kproxy) pause()  { _ = k.cmd.Process.Signal(syscall.SIGSTOP) }
func (k *kproxy) resume() { _ = k.cmd.Process.Signal(syscall.SIGCONT) }

// kill sends SIGKILL and waits for the process to end (a no-op once it has).
func (k *kproxy) kill() {
	_ = k.cmd.Process.Signal(syscall.SIGKILL)
	err := <-k.exited
	k.exited <- err
}

// dumpState prints what the harness prints for a failing node.
func dumpState() {
	for _, args := range [][]string{{"ipvsadm", "-Ln"}, {"ip", "addr", "show", "kube-ipvs0"}, {"iptables-save"},
		{"ipset", "list", "-t"}, {"ip", "route"}} {
		fmt.Printf("---- %s\n%s", strings.Join(args, " "), out(args...))
	}
}
