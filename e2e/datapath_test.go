//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// The datapath tests run kproxy as the pod network too (--datapath): each backend gets a
// sandbox of its own (prefix <KPROXY_E2E_PREFIX><suffix>), started beside the package's one,
// so the backends run in parallel. Its topology (harness topology.go) shows what each backend
// can and cannot do: nodes 1 and 2 share the fabric's L2 subnet 192.0.2.0/25, node 3 sits on
// 192.0.2.128/25 behind a router namespace. Every pod is attached by the upstream CNI
// plugins (bridge, host-local, portmap) through libcni, with the conflist its node's kproxy
// wrote; there are no static routes between pod subnets.

// transferSize is the full-size TCP transfer across nodes (every segment at the pod MTU).
const transferSize = 10 << 20

// The datapath sandboxes: datapathNodes nodes, the last datapathRoutedNodes of them routed.
const (
	datapathNodes       = 3
	datapathRoutedNodes = 1
)

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
	t.Run("EveryPeerThroughVXLANAcrossTheRouter", func(t *testing.T) {
		checkPeerRoutes(t, c, func(n, p *harness.Node) peerRoute { return viaVXLAN })
	})
	testNodeJoinsAndLeaves(t, c)
}

// host-gw routes the pod subnet of a peer on the node's L2 subnet via the peer's node IP; a
// routed peer cannot be reached that way: kproxy logs it once and installs nothing for it
// (no blackhole), so pods get an unreachable error at once.
func TestDatapathHostGW(t *testing.T) {
	t.Parallel()
	c := startDatapathCluster(t, "host-gw", "hg")
	testDatapath(t, c, 1500)
	t.Run("RoutesOnlyToPeersOnTheSubnet", func(t *testing.T) {
		checkPeerRoutes(t, c, func(n, p *harness.Node) peerRoute {
			if n.Subnet.Contains(p.IP) {
				return viaNodeIP
			}
			return noRoute
		})
	})
	testNodeJoinsAndLeaves(t, c)
	// After the join and the leave: both made every node sync again.
	t.Run("RoutedPeerLoggedOnceNotBlackholed", func(t *testing.T) { testRoutedPeerLoggedOnce(t, c) })
}

// VXLAN with direct routing: a peer on the node's L2 subnet gets a plain route via its node
// IP (no encapsulation, no FDB entry); the routed peer goes through VXLAN. Pods keep the
// VXLAN MTU.
func TestDatapathVXLANDirectRouting(t *testing.T) {
	t.Parallel()
	c := startDatapathCluster(t, "vxlan", "dr", "--vxlan-direct-routing")
	t.Run("PlainRoutesOnTheSubnetVXLANAcrossTheRouter", func(t *testing.T) {
		checkPeerRoutes(t, c, func(n, p *harness.Node) peerRoute {
			if n.Subnet.Contains(p.IP) {
				return viaNodeIP
			}
			return viaVXLAN
		})
	})
	testDatapath(t, c, 1450)
	testNodeJoinsAndLeaves(t, c)
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

var cniBinOnce struct {
	sync.Once
	dir string
	err error
}

// cniBin is the directory of the upstream CNI plugins: KPROXY_CNI_BIN, or what
// datapath/cni/build-plugins.sh prints on its last line (instant when its cache is warm).
func cniBin(t *testing.T) string {
	t.Helper()
	cniBinOnce.Do(func() {
		if cniBinOnce.dir = os.Getenv("KPROXY_CNI_BIN"); cniBinOnce.dir != "" {
			return
		}
		repo, err := repoRoot()
		if err != nil {
			cniBinOnce.err = err
			return
		}
		out, err := exec.Command(filepath.Join(repo, "datapath", "cni", "build-plugins.sh")).Output()
		if err != nil {
			cniBinOnce.err = fmt.Errorf("datapath/cni/build-plugins.sh: %w", err)
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		cniBinOnce.dir = lines[len(lines)-1]
	})
	if cniBinOnce.err != nil {
		t.Fatal(cniBinOnce.err)
	}
	return cniBinOnce.dir
}

// startDatapathCluster starts a sandbox with kproxy's datapath (datapathNodes nodes, the last
// datapathRoutedNodes behind the router, one CNI pod each) and removes it when the test ends.
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
	opts.Nodes, opts.RoutedNodes, opts.PodsPerNode, opts.Datapath = datapathNodes, datapathRoutedNodes, 1, backend
	opts.CNIBin = cniBin(t)
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
				rtr := harness.RouterNetns(opts.Prefix)
				out, err := harness.Exec(context.Background(), rtr, "ip", "route")
				t.Logf("===== router %s: ip route (%v)\n%s", rtr, err, out)
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

// expectPodToPod checks that from reaches to's echo server with its source kept.
func expectPodToPod(t *testing.T, c *harness.Cluster, from, to *harness.Pod) {
	t.Helper()
	r := request(t, c, from.Name, to.Addr(harness.EchoPort))
	if r.Name != to.Name || r.Client.Addr() != from.IP {
		t.Errorf("%s → %s: reply %q, want name=%s client=%s", from.Name, to.Name, r.Raw, to.Name, from.IP)
	}
}

// firstPods is the first pod of every node.
func firstPods(c *harness.Cluster) []*harness.Pod {
	var out []*harness.Pod
	for _, n := range c.Nodes {
		out = append(out, n.Pods[0])
	}
	return out
}

// testDatapath: pod ↔ pod on one node (a CNI pod added and deleted), pod ↔ pod across nodes
// (sources kept; where the datapath cannot reach, an unreachable error at once), pod →
// ClusterIP with its endpoints on the other nodes, full-size transfers, pod egress
// masqueraded to the node IP.
func testDatapath(t *testing.T, c *harness.Cluster, podMTU int) {
	pods := firstPods(c)
	t.Run("PodToPodOnOneNodeCNIAddDel", func(t *testing.T) { testPodToPodOnOneNode(t, c, podMTU) })
	t.Run("PodToPodAcrossNodes", func(t *testing.T) {
		for _, from := range pods {
			for _, to := range pods {
				switch {
				case from == to:
				case c.DatapathReaches(from.Node, to.Node):
					expectPodToPod(t, c, from, to)
				default:
					t0 := time.Now()
					_, err := c.Request(context.Background(), from.Name, harness.TCP, to.Addr(harness.EchoPort), requestTimeout)
					if !errors.Is(err, harness.ErrUnreachable) {
						t.Errorf("%s → %s (%s has no datapath to %s): %v, want %v", from.Name, to.Name, from.Node.Name, to.Node.Name, err, harness.ErrUnreachable)
						continue
					}
					t.Logf("%s → %s: unreachable in %v, as %s has no route to %s", from.Name, to.Name,
						time.Since(t0).Round(time.Millisecond), from.Node.Name, to.Node.PodCIDR)
				}
			}
		}
	})
	t.Run("PodToServiceOnOtherNodes", func(t *testing.T) {
		ctx := context.Background()
		client := pods[0]
		var eps []*harness.Pod
		for _, p := range pods[1:] {
			if c.DatapathReaches(client.Node, p.Node) {
				eps = append(eps, p)
			}
		}
		ns := "datapath-svc"
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		svc, err := c.CreateServiceWithEndpoints(ctx, ns, "echo", []corev1.Protocol{corev1.ProtocolTCP}, eps...)
		if err != nil {
			t.Fatal(err)
		}
		addr := clusterIPAddr(svc)
		took := harness.Eventually(t, programTimeout, func() error {
			_, err := c.Request(ctx, client.Name, harness.TCP, addr, requestTimeout)
			return err
		})
		seen := map[string]bool{}
		for i := 0; i < 50 && len(seen) < len(eps); i++ {
			r, err := c.Request(ctx, client.Name, harness.TCP, addr, requestTimeout)
			if err != nil {
				t.Fatalf("%s → %s: %v", client.Name, addr, err)
			}
			if !slices.ContainsFunc(eps, func(p *harness.Pod) bool { return p.Name == r.Name }) || r.Client.Addr() != client.IP {
				t.Fatalf("%s → %s: reply %q, want an endpoint of %v and client=%s", client.Name, addr, r.Raw, names(eps...), client.IP)
			}
			seen[r.Name] = true
		}
		if len(seen) != len(eps) {
			t.Errorf("%s → %s: 50 requests reached %v, want every endpoint of %v", client.Name, addr, seen, names(eps...))
		}
		t.Logf("%s → ClusterIP %s → %v on the other nodes (programmed in %v), source kept", client.Name, addr, names(eps...), took.Round(time.Millisecond))
	})
	t.Run("FullSizeTCPTransfer", func(t *testing.T) {
		ctx := context.Background()
		for _, p := range pods {
			if got, err := c.ConflistMTU(p.Node); err != nil || got != podMTU {
				t.Errorf("node %s conflist mtu %d (%v), want %d", p.Node.Name, got, err, podMTU)
			}
			if got, err := harness.LinkMTU(ctx, p.Name, "eth0"); err != nil || got != podMTU {
				t.Errorf("pod %s eth0 mtu %d (%v), want %d", p.Name, got, err, podMTU)
			}
		}
		// Node 1 with every node it reaches, both ways.
		for _, p := range pods[1:] {
			if !c.DatapathReaches(pods[0].Node, p.Node) {
				continue
			}
			for _, tc := range []struct{ from, to *harness.Pod }{{pods[0], p}, {p, pods[0]}} {
				took, err := harness.Transfer(ctx, tc.from, tc.to, transferSize, 20*time.Second)
				if err != nil {
					t.Fatalf("%s → %s, %d bytes: %v", tc.from.Name, tc.to.Name, transferSize, err)
				}
				t.Logf("%s → %s: %d MiB in %v", tc.from.Name, tc.to.Name, transferSize>>20, took.Round(time.Millisecond))
			}
		}
	})
	t.Run("EgressMasqueradedToNodeIP", func(t *testing.T) {
		addr, err := c.StartExternalEcho(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods {
			r := request(t, c, p.Name, addr)
			if r.Client.Addr() != p.Node.IP {
				t.Errorf("%s → external %s: seen from %s, want the node IP %s", p.Name, addr, r.Client.Addr(), p.Node.IP)
			}
		}
	})
}

// testPodToPodOnOneNode adds a second pod on node 1 with the CNI plugins (ADD through
// libcni): it gets an address of the node's podCIDR and the conflist's MTU, and the two pods
// reach each other through cni0, sources kept. Then CNI DEL: the veth goes from cni0,
// host-local releases the address and libcni drops its cached result.
func testPodToPodOnOneNode(t *testing.T, c *harness.Cluster, podMTU int) {
	ctx := context.Background()
	n := c.Nodes[0]
	p := n.Pods[0]
	ports := func() string {
		out, err := harness.Exec(ctx, n.Name, "ip", "-br", "link", "show", "master", "cni0")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	lease := func(q *harness.Pod) []string {
		files, err := filepath.Glob(filepath.Join(c.IPAMDir(n), "*", q.IP.String()))
		if err != nil {
			t.Fatal(err)
		}
		return files
	}
	before := ports()
	q, err := c.AddCNIPod(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	if !n.PodCIDR.Contains(q.IP) || q.IP == p.IP {
		t.Errorf("CNI pod %s got %s: want a free address of node %s's podCIDR %s (%s has %s)", q.Name, q.IP, n.Name, n.PodCIDR, p.Name, p.IP)
	}
	if got, err := harness.LinkMTU(ctx, q.Name, "eth0"); err != nil || got != podMTU {
		t.Errorf("CNI pod %s eth0 mtu %d (%v), want the conflist's %d", q.Name, got, err, podMTU)
	}
	cached, err := c.CNICachedResults(q)
	if err != nil || len(cached) != 1 || len(lease(q)) != 1 {
		t.Errorf("after ADD of %s: libcni cache %v (%v), host-local lease %v; want one of each", q.Name, cached, err, lease(q))
	}
	expectPodToPod(t, c, p, q)
	expectPodToPod(t, c, q, p)
	t.Logf("CNI pod %s (%s, mtu %d) ↔ %s on node %s through cni0", q.Name, q.IP, podMTU, p.Name, n.Name)

	if err := c.DelCNIPod(ctx, q); err != nil {
		t.Fatal(err)
	}
	if after := ports(); after != before {
		t.Errorf("after DEL of %s, cni0's ports are\n%s\nwant as before ADD:\n%s", q.Name, after, before)
	}
	if cached, err := c.CNICachedResults(q); err != nil || len(cached) != 0 || len(lease(q)) != 0 {
		t.Errorf("after DEL of %s: libcni cache %v (%v), host-local lease %v; want none", q.Name, cached, err, lease(q))
	}
}

// peerRoute is how a node's datapath should route a peer's pod subnet.
type peerRoute int

const (
	noRoute   peerRoute = iota // no route at all (host-gw to a routed peer)
	viaNodeIP                  // a plain route via the peer's node IP on eth0 (host-gw, direct routing)
	viaVXLAN                   // via the peer's VTEP address on kproxy.1, onlink, with an FDB entry to its node IP
)

// checkPeerRoutes checks every node's route to every peer's pod subnet, and, where the
// node has kproxy.1, that exactly the VXLAN peers have an FDB entry. No node may hold a
// blackhole route.
func checkPeerRoutes(t *testing.T, c *harness.Cluster, want func(n, p *harness.Node) peerRoute) {
	t.Helper()
	ctx := context.Background()
	for _, n := range c.Nodes {
		routes, err := c.DatapathRoutes(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		all, err := harness.Exec(ctx, n.Name, "ip", "route", "show", "table", "all")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(all, "blackhole") {
			t.Errorf("node %s has a blackhole route:\n%s", n.Name, all)
		}
		fdb := ""
		if c.Opts.Datapath == "vxlan" {
			if fdb, err = harness.Exec(ctx, n.Name, "bridge", "fdb", "show", "dev", "kproxy.1"); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range c.Nodes {
			if p == n {
				continue
			}
			dst := p.PodCIDR.String()
			var line string
			switch want(n, p) {
			case noRoute:
				if strings.Contains(all, dst) {
					t.Errorf("node %s routes %s (node %s, not on its subnet %s):\n%s", n.Name, dst, p.Name, n.Subnet, all)
				}
				continue
			case viaNodeIP:
				line = dst + " via " + p.IP.String() + " dev eth0"
			case viaVXLAN:
				line = dst + " via " + p.PodCIDR.Addr().String() + " dev kproxy.1 onlink"
			}
			if !slices.ContainsFunc(routes, func(r string) bool { return strings.HasPrefix(r, line) }) {
				t.Errorf("node %s datapath routes %q, want %q", n.Name, routes, line)
			}
			if hasFDB := strings.Contains(fdb, "dst "+p.IP.String()+" "); c.Opts.Datapath == "vxlan" && hasFDB != (want(n, p) == viaVXLAN) {
				t.Errorf("node %s: FDB entry to %s (node %s) present %v, want %v:\n%s", n.Name, p.IP, p.Name, hasFDB, !hasFDB, fdb)
			}
		}
		t.Logf("node %s: %q", n.Name, routes)
	}
}

// testRoutedPeerLoggedOnce: with host-gw, each node's kproxy logged every peer it cannot reach
// exactly once (with the reason), and never a peer it reaches, though every node synced again
// since (a node joined and left).
func testRoutedPeerLoggedOnce(t *testing.T, c *harness.Cluster) {
	const msg = `"Peer node gets no datapath"`
	for _, n := range c.Nodes {
		data, err := os.ReadFile(c.ProxyLog(n))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range c.Nodes {
			if p == n {
				continue
			}
			var lines []string
			for l := range strings.Lines(string(data)) {
				if strings.Contains(l, msg) && strings.Contains(l, `peer="`+p.Name+`"`) {
					lines = append(lines, strings.TrimSpace(l))
				}
			}
			want := 0
			if !c.DatapathReaches(n, p) {
				want = 1
			}
			if len(lines) != want {
				t.Errorf("node %s logged %d times that peer %s gets no datapath, want %d: %q", n.Name, len(lines), p.Name, want, lines)
				continue
			}
			if want == 1 {
				reason := fmt.Sprintf("node IP %s is not on this node's subnet %s", p.IP, n.Subnet)
				if !strings.Contains(lines[0], reason) {
					t.Errorf("node %s: %q, want the reason %q", n.Name, lines[0], reason)
				}
				t.Logf("node %s, once: %s", n.Name, lines[0])
			}
		}
	}
}

// testNodeJoinsAndLeaves adds a node on the fabric's subnet: every peer that can reach it gets
// a route and pods talk across; then removes it (its CNI pods get DEL): its routes, and over
// VXLAN its FDB entries, go from every peer.
func testNodeJoinsAndLeaves(t *testing.T, c *harness.Cluster) {
	t.Run("NodeJoinsAndLeaves", func(t *testing.T) {
		ctx := context.Background()
		t0 := time.Now()
		nn, err := c.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("node %s up (proxy healthy, pods attached) in %v", nn.Name, time.Since(t0).Round(time.Millisecond))
		if err := c.WaitDatapath(ctx); err != nil {
			t.Fatal(err)
		}
		pn := nn.Pods[0]
		expectPodToPod(t, c, c.Nodes[0].Pods[0], pn)
		for _, n := range c.Nodes {
			if n != nn && c.DatapathReaches(nn, n) {
				expectPodToPod(t, c, pn, n.Pods[0])
			}
		}
		t.Logf("node %s joined: its peers route to %s and pods reach each other, %v after it was added", nn.Name, nn.PodCIDR, time.Since(t0).Round(time.Millisecond))

		if err := c.RemoveNode(ctx, nn); err != nil {
			t.Fatal(err)
		}
		gone := harness.Eventually(t, 15*time.Second, func() error {
			for _, n := range c.Nodes {
				routes, err := c.DatapathRoutes(ctx, n)
				if err != nil {
					return err
				}
				if harness.HasDatapathRoute(routes, nn.PodCIDR.String()) {
					return fmt.Errorf("node %s still routes %s: %q", n.Name, nn.PodCIDR, routes)
				}
				if c.Opts.Datapath != "vxlan" {
					continue
				}
				out, err := harness.Exec(ctx, n.Name, "bridge", "fdb", "show", "dev", "kproxy.1")
				if err != nil {
					return err
				}
				if strings.Contains(out, "dst "+nn.IP.String()+" ") {
					return fmt.Errorf("node %s still has the FDB entry to %s:\n%s", n.Name, nn.IP, out)
				}
			}
			return nil
		})
		t.Logf("node %s left: its routes gone from every peer %v after the removal", nn.Name, gone.Round(time.Millisecond))
	})
}
