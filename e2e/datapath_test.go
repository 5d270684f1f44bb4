//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// The datapath tests run kproxy as the pod network too (--datapath): each backend gets a
// sandbox of its own (prefix <KPROXY_E2E_PREFIX><suffix>, 2 nodes × 1 pod, no static routes
// between the nodes), started beside the package's one, so the two backends run in parallel.

// transferSize is the full-size TCP transfer across nodes (every segment at the pod MTU).
const transferSize = 10 << 20

func TestDatapathVXLAN(t *testing.T) {
	t.Parallel()
	c := startDatapathCluster(t, "vxlan", "vx")
	testDatapath(t, c, 1450)
	t.Run("VTEPAnnotationsPublished", func(t *testing.T) {
		ctx := context.Background()
		for _, n := range c.Nodes {
			got, err := c.NodeAnnotations(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			ip4 := n.IP.As4()
			want := fmt.Sprintf("0e:6b:%02x:%02x:%02x:%02x", ip4[0], ip4[1], ip4[2], ip4[3])
			if got["kproxy.io/vtep-mac"] != want || got["kproxy.io/public-ip"] != n.IP.String() {
				t.Errorf("node %s annotations %v, want vtep-mac %s and public-ip %s", n.Name, got, want, n.IP)
			}
			mtu, err := harness.LinkMTU(ctx, n.Name, "kproxy.1")
			if err != nil || mtu != 1450 {
				t.Errorf("node %s: kproxy.1 mtu %d (%v), want 1450", n.Name, mtu, err)
			}
		}
	})
	testCNIPluginPod(t, c)
	testNodeJoinsAndLeaves(t, c, "192.0.2.13")
}

func TestDatapathHostGW(t *testing.T) {
	t.Parallel()
	c := startDatapathCluster(t, "host-gw", "hg")
	testDatapath(t, c, 1500)
	testCNIPluginPod(t, c)
	testNodeJoinsAndLeaves(t, c, "")
}

// VXLAN with direct routing: every peer is on the fabric's L2 subnet, so every peer gets a
// plain route via its node IP (no encapsulation); pods keep the VXLAN MTU.
func TestDatapathVXLANDirectRouting(t *testing.T) {
	t.Parallel()
	c := startDatapathCluster(t, "vxlan", "dr", "--vxlan-direct-routing")
	t.Run("PlainRoutesToPeersOnTheSubnet", func(t *testing.T) {
		for _, n := range c.Nodes {
			routes, err := c.DatapathRoutes(context.Background(), n)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range c.Nodes {
				want := p.PodCIDR.String() + " via " + p.IP.String() + " dev eth0"
				if p != n && !slices.ContainsFunc(routes, func(r string) bool { return strings.HasPrefix(r, want) }) {
					t.Errorf("node %s routes %q, want %q", n.Name, routes, want)
				}
			}
		}
	})
	testDatapath(t, c, 1450)
}

// IPIP needs the ipip module, which the host kernel may lack (then the test skips; the
// datapath's kernel tests run it in the VM).
func TestDatapathIPIP(t *testing.T) {
	t.Parallel()
	if err := probeIPIP(); err != nil {
		t.Skipf("no ipip in this kernel: %v", err)
	}
	c := startDatapathCluster(t, "ipip", "ip")
	testDatapath(t, c, 1480)
}

// probeIPIP creates an ipip device in a scratch namespace.
func probeIPIP() error {
	ns := fmt.Sprintf("kpipipprobe-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	defer func() { _ = exec.Command("ip", "netns", "del", ns).Run() }()
	if out, err := exec.Command("ip", "-n", ns, "link", "add", "kpprobe", "type", "ipip", "local", "192.0.2.5").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link add type ipip: %s", strings.TrimSpace(string(out)))
	}
	return nil
}

// startDatapathCluster starts a sandbox with kproxy's datapath and removes it when the test ends.
func startDatapathCluster(t *testing.T, backend, suffix string, proxyArgs ...string) *harness.Cluster {
	t.Helper()
	opts, err := optionsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Proxy != harness.ProxyKProxy {
		t.Skipf("the datapath is kproxy's; proxy is %s", opts.Proxy)
	}
	opts.Prefix += suffix
	opts.Nodes, opts.PodsPerNode, opts.Datapath = 2, 1, backend
	opts.ProxyArgs = append(opts.ProxyArgs, proxyArgs...)
	opts.Logf = func(format string, args ...any) { t.Logf(format, args...) }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := harness.Start(ctx, opts)
	t.Cleanup(func() {
		if c != nil {
			if t.Failed() {
				for _, n := range c.Nodes {
					c.DumpNode(t, n)
				}
			}
			c.Close()
		}
		if os.Getenv("KPROXY_E2E_KEEP") == "1" {
			t.Logf("KPROXY_E2E_KEEP=1: sandbox %s left running", opts.Prefix)
			return
		}
		rep, err := harness.Cleanup(opts.Prefix)
		if err != nil {
			t.Errorf("cleanup %s: %v (%v)", opts.Prefix, err, rep)
		}
	})
	if err != nil {
		t.Fatalf("sandbox %s: %v", opts.Prefix, err)
	}
	return c
}

// request asks pod or namespace from for addr and returns the reply, retrying for up to 5 s
// (the first packets may race the last route).
func request(t *testing.T, c *harness.Cluster, from, addr string) harness.Reply {
	t.Helper()
	var r harness.Reply
	harness.Eventually(t, 5*time.Second, func() error {
		var err error
		r, err = c.Request(context.Background(), from, harness.TCP, addr, requestTimeout)
		return err
	})
	return r
}

// testDatapath: pod ↔ pod across nodes (source kept), pod → ClusterIP with the endpoint on
// the other node, a full-size transfer, pod egress masqueraded to the node IP.
func testDatapath(t *testing.T, c *harness.Cluster, podMTU int) {
	p1, p2 := c.Pod(1, 1), c.Pod(2, 1)
	t.Run("PodToPodAcrossNodes", func(t *testing.T) {
		for _, tc := range []struct{ from, to *harness.Pod }{{p1, p2}, {p2, p1}} {
			r := request(t, c, tc.from.Name, tc.to.Addr(harness.EchoPort))
			if r.Name != tc.to.Name || r.Client.Addr() != tc.from.IP {
				t.Errorf("%s → %s: reply %q, want name=%s client=%s", tc.from.Name, tc.to.Name, r.Raw, tc.to.Name, tc.from.IP)
			}
		}
	})
	t.Run("PodToServiceOnOtherNode", func(t *testing.T) {
		ctx := context.Background()
		ns := "datapath-svc"
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		svc, err := c.CreateServiceWithEndpoints(ctx, ns, "echo", []corev1.Protocol{corev1.ProtocolTCP}, p2)
		if err != nil {
			t.Fatal(err)
		}
		addr := clusterIPAddr(svc)
		var r harness.Reply
		took := harness.Eventually(t, programTimeout, func() error {
			var err error
			r, err = c.Request(ctx, p1.Name, harness.TCP, addr, requestTimeout)
			return err
		})
		if r.Name != p2.Name || r.Client.Addr() != p1.IP {
			t.Errorf("%s → %s: reply %q, want name=%s client=%s", p1.Name, addr, r.Raw, p2.Name, p1.IP)
		}
		t.Logf("%s → ClusterIP %s → %s on the other node in %v: %s", p1.Name, addr, p2.Name, took.Round(time.Millisecond), r.Raw)
	})
	t.Run("FullSizeTCPTransfer", func(t *testing.T) {
		ctx := context.Background()
		for _, n := range c.Nodes {
			if got, err := c.ConflistMTU(n); err != nil || got != podMTU {
				t.Errorf("node %s conflist mtu %d (%v), want %d", n.Name, got, err, podMTU)
			}
		}
		if got, err := harness.LinkMTU(ctx, p1.Name, "eth0"); err != nil || got != podMTU {
			t.Errorf("pod %s eth0 mtu %d (%v), want %d", p1.Name, got, err, podMTU)
		}
		for _, tc := range []struct{ from, to *harness.Pod }{{p1, p2}, {p2, p1}} {
			took, err := harness.Transfer(ctx, tc.from, tc.to, transferSize, 20*time.Second)
			if err != nil {
				t.Fatalf("%s → %s, %d bytes: %v", tc.from.Name, tc.to.Name, transferSize, err)
			}
			t.Logf("%s → %s: %d MiB in %v", tc.from.Name, tc.to.Name, transferSize>>20, took.Round(time.Millisecond))
		}
	})
	t.Run("EgressMasqueradedToNodeIP", func(t *testing.T) {
		addr, err := c.StartExternalEcho(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []*harness.Pod{p1, p2} {
			r := request(t, c, p.Name, addr)
			if r.Client.Addr() != p.Node.IP {
				t.Errorf("%s → external %s: seen from %s, want the node IP %s", p.Name, addr, r.Client.Addr(), p.Node.IP)
			}
		}
	})
}

// testNodeJoinsAndLeaves adds a third node: every peer gets a route to it and pods talk
// across; then removes it: its routes (and, for VXLAN, its FDB entry at fdbDst) go from
// every peer.
func testNodeJoinsAndLeaves(t *testing.T, c *harness.Cluster, fdbDst string) {
	t.Run("NodeJoinsAndLeaves", func(t *testing.T) {
		ctx := context.Background()
		t0 := time.Now()
		n3, err := c.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("node %s up (proxy healthy) in %v", n3.Name, time.Since(t0).Round(time.Millisecond))
		if err := c.WaitDatapath(ctx); err != nil {
			t.Fatal(err)
		}
		p1, p2, p3 := c.Pod(1, 1), c.Pod(2, 1), n3.Pods[0]
		for _, tc := range []struct{ from, to *harness.Pod }{{p1, p3}, {p3, p2}} {
			r := request(t, c, tc.from.Name, tc.to.Addr(harness.EchoPort))
			if r.Name != tc.to.Name || r.Client.Addr() != tc.from.IP {
				t.Errorf("%s → %s: reply %q, want name=%s client=%s", tc.from.Name, tc.to.Name, r.Raw, tc.to.Name, tc.from.IP)
			}
		}
		t.Logf("node %s joined: every peer routes to %s and pods reach each other, %v after it was added", n3.Name, n3.PodCIDR, time.Since(t0).Round(time.Millisecond))

		if err := c.RemoveNode(ctx, n3); err != nil {
			t.Fatal(err)
		}
		gone := harness.Eventually(t, 15*time.Second, func() error {
			for _, n := range c.Nodes {
				routes, err := c.DatapathRoutes(ctx, n)
				if err != nil {
					return err
				}
				if harness.HasDatapathRoute(routes, n3.PodCIDR.String()) {
					return fmt.Errorf("node %s still routes %s: %q", n.Name, n3.PodCIDR, routes)
				}
				if fdbDst == "" {
					continue
				}
				out, err := harness.Exec(ctx, n.Name, "bridge", "fdb", "show", "dev", "kproxy.1")
				if err != nil {
					return err
				}
				if strings.Contains(out, "dst "+fdbDst+" ") {
					return fmt.Errorf("node %s still has the FDB entry to %s:\n%s", n.Name, fdbDst, out)
				}
			}
			return nil
		})
		t.Logf("node %s left: its routes gone from every peer %v after the removal", n3.Name, gone.Round(time.Millisecond))
	})
}

// testCNIPluginPod attaches a pod on node 2 with the real CNI plugins (bridge, host-local,
// portmap) through the conflist kproxy wrote: it gets an address of node 2's podCIDR and the
// conflist's MTU, and pods on node 1 reach it and it them, sources kept.
func testCNIPluginPod(t *testing.T, c *harness.Cluster) {
	t.Run("RealCNIPluginPod", func(t *testing.T) {
		bin := envOr("KPROXY_CNI_BIN", "/var/cache/kproxy/cni-plugins-v1.9.1/bin")
		if _, err := os.Stat(bin + "/bridge"); err != nil {
			t.Skipf("no CNI plugins in %s (datapath/cni/build-plugins.sh builds them): %v", bin, err)
		}
		ctx := context.Background()
		n2 := c.Nodes[1]
		pod, err := c.AddCNIPod(ctx, n2, 1, bin)
		if err != nil {
			t.Fatal(err)
		}
		if !n2.PodCIDR.Contains(pod.IP) {
			t.Errorf("CNI pod %s got %s, outside node %s's podCIDR %s", pod.Name, pod.IP, n2.Name, n2.PodCIDR)
		}
		want, err := c.ConflistMTU(n2)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := harness.LinkMTU(ctx, pod.Name, "eth0"); err != nil || got != want {
			t.Errorf("CNI pod eth0 mtu %d (%v), want the conflist's %d", got, err, want)
		}
		p1 := c.Pod(1, 1)
		for _, tc := range []struct{ from, to *harness.Pod }{{p1, pod}, {pod, p1}} {
			r := request(t, c, tc.from.Name, tc.to.Addr(harness.EchoPort))
			if r.Name != tc.to.Name || r.Client.Addr() != tc.from.IP {
				t.Errorf("%s → %s: reply %q, want name=%s client=%s", tc.from.Name, tc.to.Name, r.Raw, tc.to.Name, tc.from.IP)
			}
		}
		t.Logf("CNI pod %s (%s, mtu %d, attached by bridge+host-local+portmap from %s) ↔ %s across nodes", pod.Name, pod.IP, want, bin, p1.Name)
	})
}
