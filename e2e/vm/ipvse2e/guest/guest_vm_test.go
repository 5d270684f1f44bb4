//go:build vm

package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The node inside the VM (TESTING.md's plan: pod CIDR 100.64.9.0/24 for the VM node).
const (
	nodeName   = "kpvm-vm"
	gateway    = "100.64.9.1"
	clientNS   = "kpvm-c"
	clientIP   = "100.64.9.20"
	echoPort   = "8080"
	kubeconfig = "/kproxy/kubeconfig"
)

// The pods: p1 and p2 are endpoints from the start; the host adds p3 when asked (KPVM-STEP).
var pods = []struct{ ns, ip string }{
	{"kpvm-p1", "100.64.9.10"},
	{"kpvm-p2", "100.64.9.11"},
	{"kpvm-p3", "100.64.9.12"},
}

// kproxyLog collects kproxy's stdout and stderr.
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

func TestKProxyIPVSWithRealAPIServer(t *testing.T) {
	if os.Getenv("KPROXY_IN_VM") != "1" {
		t.Skip("runs inside the IPVS test VM only (e2e/vm/ipvse2e)")
	}
	svcIP, emptyIP := os.Getenv("KPVM_SVC_IP"), os.Getenv("KPVM_EMPTY_IP")
	if svcIP == "" || emptyIP == "" {
		t.Fatal("KPVM_SVC_IP and KPVM_EMPTY_IP must be set (the host side passes them)")
	}
	if _, err := os.Stat("/sys/class/net/eth0"); err != nil {
		t.Fatal("no eth0: boot with run-test.sh -n PORT")
	}
	t0 := time.Now()
	step := func(format string, args ...any) {
		fmt.Printf("KPVM %6.2fs %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
	}

	// ---- the node: cni0, pods, echo servers
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
		sh(t, "sysctl", "-qw", s)
	}
	sh(t, "ip", "link", "add", "cni0", "type", "bridge")
	sh(t, "ip", "addr", "add", gateway+"/24", "dev", "cni0")
	sh(t, "ip", "link", "set", "cni0", "up")
	all := append([]struct{ ns, ip string }{{clientNS, clientIP}}, pods...)
	for i, p := range all {
		host := fmt.Sprintf("vkp%d", i)
		sh(t, "ip", "netns", "add", p.ns)
		sh(t, "ip", "-n", p.ns, "link", "set", "lo", "up")
		sh(t, "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
		sh(t, "ip", "link", "set", host, "master", "cni0", "up")
		sh(t, "ip", "link", "set", host, "type", "bridge_slave", "hairpin", "on")
		sh(t, "ip", "-n", p.ns, "addr", "add", p.ip+"/24", "dev", "eth0")
		sh(t, "ip", "-n", p.ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", p.ns, "route", "add", "default", "via", gateway)
	}
	for _, p := range pods {
		cmd := exec.Command("ip", "netns", "exec", p.ns, "/kproxy/echo", "server", "--name", p.ns, "--port", echoPort)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("echo server in %s: %v", p.ns, err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	for _, p := range pods {
		waitFor(t, 10*time.Second, "echo server "+p.ns, func() error {
			_, err := request(p.ip + ":" + echoPort)
			return err
		})
	}
	step("node ready: cni0 %s/24, client %s, pods %s %s %s with echo servers", gateway, clientIP, pods[0].ip, pods[1].ip, pods[2].ip)

	// ---- kproxy --mode=ipvs, fed by the apiserver on the host
	var klog syncBuf
	kargs := append([]string{"--mode=ipvs", "--kubeconfig", kubeconfig,
		"--hostname-override", nodeName, "--cluster-cidr", "100.64.0.0/16", "-v=2"},
		strings.Fields(os.Getenv("KPVM_KPROXY_ARGS"))...)
	kp := exec.Command("/kproxy/kproxy", kargs...)
	kp.Stdout, kp.Stderr = &klog, &klog
	if err := kp.Start(); err != nil {
		t.Fatalf("start kproxy: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- kp.Wait() }()
	t.Cleanup(func() {
		_ = kp.Process.Kill()
		if t.Failed() {
			fmt.Printf("---- kproxy log\n%s---- end of kproxy log\n", klog.String())
			fmt.Printf("---- ipvsadm -Ln\n%s", out("ipvsadm", "-Ln"))
			fmt.Printf("---- ip addr show kube-ipvs0\n%s", out("ip", "addr", "show", "kube-ipvs0"))
			fmt.Printf("---- iptables-save\n%s", out("iptables-save"))
			fmt.Printf("---- ipset list -t\n%s", out("ipset", "list", "-t"))
		}
	})
	waitFor(t, 90*time.Second, "kproxy /healthz 200", func() error {
		select {
		case err := <-exited:
			exited <- err
			return stop{fmt.Errorf("kproxy exited: %w", err)}
		default:
		}
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://127.0.0.1:10256/healthz")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz %d", resp.StatusCode)
		}
		return nil
	})
	step("kproxy %s: /healthz 200", strings.Join(kargs, " "))

	vip := svcIP + ":80"
	ok := t.Run("ClusterIPReachesBothPodsInVM", func(t *testing.T) {
		seen := map[string]string{}
		waitFor(t, 30*time.Second, "both pods answer through "+vip, func() error {
			name, client, err := clientRequest(vip)
			if err != nil {
				return err
			}
			seen[name] = client
			if len(seen) < 2 {
				return fmt.Errorf("answered so far: %v", seen)
			}
			return nil
		})
		for _, p := range pods[:2] {
			if _, ok := seen[p.ns]; !ok {
				t.Errorf("%s did not answer through %s: %v", p.ns, vip, seen)
			}
		}
		step("client pod -> %s: answered by %v", vip, keys(seen))
	})
	t.Run("ClientSourceIPKept", func(t *testing.T) {
		_, client, err := clientRequest(vip)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(client, clientIP+":") {
			t.Errorf("backend saw client=%s, want %s (pod source IP kept)", client, clientIP)
		}
		step("backend saw client=%s", client)
	})
	t.Run("IpvsadmOneVirtualServerTwoRealServers", func(t *testing.T) {
		all := out("ipvsadm", "-Ln")
		fmt.Printf("KPVM ipvsadm -Ln:\n%s", all)
		vs := regexp.MustCompile(`(?m)^TCP\s+` + regexp.QuoteMeta(vip) + `\s`)
		if n := len(vs.FindAllString(all, -1)); n != 1 {
			t.Errorf("ipvsadm -Ln: %d virtual servers TCP %s, want 1", n, vip)
		}
		rs := realServers(svcIP + ":80")
		if len(rs) != 2 || !contains(rs, pods[0].ip+":"+echoPort) || !contains(rs, pods[1].ip+":"+echoPort) {
			t.Errorf("real servers of %s: %v, want %s:%s and %s:%s", vip, rs, pods[0].ip, echoPort, pods[1].ip, echoPort)
		}
	})
	t.Run("KubeIPVS0HoldsClusterIP", func(t *testing.T) {
		a := out("ip", "-4", "addr", "show", "dev", "kube-ipvs0")
		if !strings.Contains(a, " "+svcIP+"/32") || !strings.Contains(a, " "+emptyIP+"/32") {
			t.Errorf("kube-ipvs0 lacks %s or %s:\n%s", svcIP, emptyIP, a)
		}
	})
	t.Run("NoEndpointsRefusedAtOnce", func(t *testing.T) {
		start := time.Now()
		code, msg := clientExit(emptyIP + ":80")
		d := time.Since(start)
		if code != 1 {
			t.Errorf("client pod -> %s:80 (no endpoints): exit %d (%s), want 1 (refused)", emptyIP, code, msg)
		} else if d > time.Second {
			t.Errorf("refused only after %v", d)
		}
		step("client pod -> %s:80 (no endpoints): exit %d %s in %dms", emptyIP, code, strings.TrimSpace(msg), d.Milliseconds())
	})
	if !ok || os.Getenv("KPVM_DYNAMIC") != "1" {
		return
	}
	// ---- endpoint changes made on the host while the VM runs: the host test watches the
	// console for KPVM-STEP lines and rewrites the EndpointSlice.
	t.Run("EndpointAddedFromHost", func(t *testing.T) {
		t1 := time.Now()
		fmt.Println("KPVM-STEP add-endpoint")
		waitFor(t, 30*time.Second, pods[2].ns+" answers through "+vip, func() error {
			name, _, err := clientRequest(vip)
			if err != nil {
				return err
			}
			if name != pods[2].ns {
				return fmt.Errorf("answered by %s", name)
			}
			return nil
		})
		step("endpoint %s added on the host: answers after %dms; real servers %v", pods[2].ip, time.Since(t1).Milliseconds(), realServers(vip))
	})
	t.Run("EndpointRemovedFromHost", func(t *testing.T) {
		t1 := time.Now()
		fmt.Println("KPVM-STEP remove-endpoint")
		// Graceful termination: the real server gets weight 0 (no new connections) and goes
		// once its connections drain.
		waitFor(t, 30*time.Second, pods[0].ns+" weight 0 or gone", func() error {
			for _, line := range strings.Split(out("ipvsadm", "-Ln", "-t", vip), "\n") {
				f := strings.Fields(line)
				if len(f) >= 4 && f[0] == "->" && f[1] == pods[0].ip+":"+echoPort && f[3] != "0" {
					return fmt.Errorf("still weight %s", f[3])
				}
			}
			return nil
		})
		for i := 0; i < 12; i++ {
			name, _, err := clientRequest(vip)
			if err != nil {
				t.Fatal(err)
			}
			if name == pods[0].ns {
				t.Fatalf("removed endpoint %s still answers", pods[0].ns)
			}
		}
		step("endpoint %s removed on the host: out of rotation after %dms; 12 requests, none to it", pods[0].ip, time.Since(t1).Milliseconds())
	})
}

var replyRE = regexp.MustCompile(`name=(\S+) client=(\S+)`)

// clientRequest sends one TCP request from the client pod and returns who answered and the
// client address the backend saw.
func clientRequest(addr string) (name, client string, err error) {
	o, err := exec.Command("ip", "netns", "exec", clientNS, "/kproxy/echo", "client", "--tcp", addr, "--timeout", "2s").CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("echo client %s: %w: %s", addr, err, bytes.TrimSpace(o))
	}
	m := replyRE.FindStringSubmatch(string(o))
	if m == nil {
		return "", "", fmt.Errorf("echo client %s: unexpected reply %q", addr, o)
	}
	return m[1], m[2], nil
}

// clientExit is echo client's exit code (0 reply, 1 refused, 2 timeout) and its output.
func clientExit(addr string) (int, string) {
	o, err := exec.Command("ip", "netns", "exec", clientNS, "/kproxy/echo", "client", "--tcp", addr, "--timeout", "3s").CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(o)
	}
	if err != nil {
		return -1, err.Error()
	}
	return 0, string(o)
}

// request dials addr from the guest's root namespace (echo server liveness).
func request(addr string) (string, error) {
	o, err := exec.Command("/kproxy/echo", "client", "--tcp", addr, "--timeout", "1s").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, o)
	}
	return string(o), nil
}

// realServers lists the real servers (IP:port) of the TCP virtual server vip.
func realServers(vip string) []string {
	var rs []string
	for _, line := range strings.Split(out("ipvsadm", "-Ln", "-t", vip), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "->" && f[1] != "RemoteAddress:Port" {
			rs = append(rs, f[1])
		}
	}
	return rs
}

type stop struct{ error }

func waitFor(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		err := fn()
		if err == nil {
			return
		}
		var s stop
		if errors.As(err, &s) {
			t.Fatalf("%s: %v", what, s.error)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	o, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, o)
	}
	return string(o)
}

func out(args ...string) string {
	o, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s%s: %v\n", o, strings.Join(args, " "), err)
	}
	return string(o)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func keys(m map[string]string) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	return k
}
