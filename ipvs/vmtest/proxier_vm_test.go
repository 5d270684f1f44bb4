//go:build vm

package vmtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/internal/netnsutil"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	"github.com/kproxy/kproxy/ipvs"
)

// Topology (TESTING.md's plan), all in namespaces of this test:
//
//	client 198.51.100.2 ── veth ── 198.51.100.1 node 100.64.1.1 ── veth ── 100.64.1.2:8080 be1
//	                                                100.64.2.1 ── veth ── 100.64.2.2:8080 be2
const (
	vip      = "100.100.0.10"
	clientIP = "198.51.100.2"
	nodeIP   = "198.51.100.1"
)

var backends = []struct{ name, nodeIP, ip string }{
	{"be1", "100.64.1.1", "100.64.1.2"},
	{"be2", "100.64.2.1", "100.64.2.2"},
}

func TestProxierInVM(t *testing.T) {
	requireVM(t)
	ctx := context.Background()
	sfx := netnsutil.Suffix()
	node := nsName(t, "kpv-node-"+sfx)
	client := nsName(t, "kpv-client-"+sfx)
	sh(t, "ip", "-n", node, "link", "add", "kpv-c0", "type", "veth", "peer", "name", "eth0", "netns", client)
	sh(t, "ip", "-n", node, "addr", "add", nodeIP+"/24", "dev", "kpv-c0")
	sh(t, "ip", "-n", node, "link", "set", "kpv-c0", "up")
	sh(t, "ip", "-n", client, "addr", "add", clientIP+"/24", "dev", "eth0")
	sh(t, "ip", "-n", client, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", client, "route", "add", "100.100.0.0/16", "via", nodeIP)
	for i, b := range backends {
		ns := nsName(t, "kpv-"+b.name+"-"+sfx)
		dev := fmt.Sprintf("kpv-b%d", i)
		sh(t, "ip", "-n", node, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
		sh(t, "ip", "-n", node, "addr", "add", b.nodeIP+"/24", "dev", dev)
		sh(t, "ip", "-n", node, "link", "set", dev, "up")
		sh(t, "ip", "-n", ns, "addr", "add", b.ip+"/24", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "route", "add", "198.51.100.0/24", "via", b.nodeIP)
		serve(t, ns, b.ip+":8080", b.name)
	}
	// What the daemon sets at start (upstream's sysctls for IPVS mode).
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.ipv4.vs.conntrack=1", "net.ipv4.vs.expire_nodest_conn=1",
		"net.ipv4.vs.expire_quiescent_template=1"} {
		sh(t, "ip", "netns", "exec", node, "sysctl", "-qw", s)
	}

	nsPath := "/run/netns/" + node
	k, sets := openKernel(t, nsPath)
	w := ipvs.Writers{IPVS: k, Links: k, IPSet: sets, IPTables: iptables.New(iptables.Options{NetNSPath: nsPath})}
	cfg := ipvs.Config{
		ClusterCIDR: netip.MustParsePrefix("100.64.0.0/16"), NodeIPs: []netip.Addr{netip.MustParseAddr(nodeIP)},
		NodeIP: netip.MustParseAddr(nodeIP), ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")},
	}
	p, err := ipvs.NewProxier(w, cfg)
	if err != nil {
		t.Fatal(err)
	}
	nodeInfo := endpoints.NodeInfo{Name: "node-1"}
	world := newCluster()
	apply := func(t *testing.T, p *ipvs.Proxier, full bool) ipvs.SyncStats {
		t.Helper()
		start := time.Now()
		if err := p.Apply(ctx, world.snapshot(), nodeInfo, full); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		t.Logf("Apply(full=%v) took %v: %+v", full, time.Since(start), p.LastSync())
		return p.LastSync()
	}
	apply(t, p, true)

	t.Run("ipvsadm -Ln shows the services", func(t *testing.T) {
		out := sh(t, "ip", "netns", "exec", node, "ipvsadm", "-Ln")
		t.Logf("ipvsadm -Ln:\n%s", out)
		for _, want := range []string{
			"TCP  100.100.0.10:80 rr",
			"  -> 100.64.1.2:8080              Masq    1      0          0",
			"  -> 100.64.2.2:8080              Masq    1      0          0",
			"TCP  100.100.0.11:80 rr", "TCP  198.51.100.1:30080 rr", "TCP  203.0.113.7:80 rr",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("ipvsadm -Ln lacks %q", want)
			}
		}
		addrs := sh(t, "ip", "-n", node, "-o", "addr", "show", "dev", "kube-ipvs0")
		for _, want := range []string{"100.100.0.10/32", "100.100.0.11/32", "203.0.113.7/32", "198.51.100.10/32"} {
			if !strings.Contains(addrs, want) {
				t.Errorf("kube-ipvs0 lacks %s:\n%s", want, addrs)
			}
		}
		if link := sh(t, "ip", "-n", node, "link", "show", "kube-ipvs0"); !strings.Contains(link, "NOARP") || strings.Contains(link, ",UP") {
			t.Errorf("kube-ipvs0 should be NOARP and down:\n%s", link)
		}
	})

	t.Run("TCP through the VIP reaches both backends, masqueraded", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 4; i++ {
			reply, err := fetch(client, vip+":80")
			if err != nil {
				t.Fatalf("fetch %d: %v\n%s", i, err, dump(t, node))
			}
			name, from, _ := strings.Cut(reply, " from=")
			seen[name] = true
			if from == clientIP {
				t.Errorf("%s saw the client address %s: not masqueraded (KUBE-MARK-MASQ, vs.conntrack)", name, from)
			}
		}
		if !seen["be1"] || !seen["be2"] {
			t.Errorf("backends seen %v, want both", seen)
		}
	})

	t.Run("no endpoints and a non-service port are refused at once", func(t *testing.T) {
		for _, addr := range []string{"100.100.0.11:80", vip + ":81"} {
			start := time.Now()
			_, err := fetch(client, addr)
			if err == nil || !strings.Contains(err.Error(), "refused") {
				t.Errorf("fetch %s = %v, want connection refused", addr, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refusal of %s took %v", addr, d)
			}
		}
	})

	t.Run("restart with nothing changed writes nothing", func(t *testing.T) {
		p2, err := ipvs.NewProxier(w, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if st := apply(t, p2, true); st.Writes() != 0 {
			t.Errorf("restart wrote %d objects: %+v\n%s", st.Writes(), st, sh(t, "ip", "netns", "exec", node, "iptables-save"))
		}
		p = p2
	})

	t.Run("removed endpoint drains at weight 0, then goes", func(t *testing.T) {
		held, name := hold(t, client, vip+":80")
		var gone string
		for _, b := range backends {
			if b.name == name {
				gone = b.ip
			}
		}
		world.removeEndpoint(gone)
		apply(t, p, false)
		out := sh(t, "ip", "netns", "exec", node, "ipvsadm", "-Ln", "-t", vip+":80")
		t.Logf("after removal:\n%s", out)
		if !strings.Contains(out, "-> "+gone+":8080              Masq    0      1") {
			t.Fatalf("removed %s should be at weight 0 with its connection", gone)
		}
		// reset the connection: the IPVS entry goes to CLOSE (10 s), then nothing is left
		_ = held.(*net.TCPConn).SetLinger(0)
		_ = held.Close()
		deadline := time.Now().Add(40 * time.Second)
		for {
			apply(t, p, false)
			out = sh(t, "ip", "netns", "exec", node, "ipvsadm", "-Ln", "-t", vip+":80")
			if !strings.Contains(out, gone+":8080") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still there:\n%s", gone, out)
			}
			time.Sleep(2 * time.Second)
		}
		t.Logf("drained:\n%s", out)
		if reply, err := fetch(client, vip+":80"); err != nil || strings.HasPrefix(reply, name) {
			t.Errorf("after draining: %q, %v", reply, err)
		}
	})
}

// cluster is the services the test applies.
type cluster struct {
	services  endpoints.ServiceMap
	endpoints endpoints.EndpointsMap
}

func spn(name string) endpoints.ServicePortName {
	return endpoints.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: name}, Protocol: v1.ProtocolTCP}
}

func newCluster() *cluster {
	c := &cluster{services: endpoints.ServiceMap{}, endpoints: endpoints.EndpointsMap{}}
	web := &endpoints.ServicePort{Name: spn("web"), ClusterIP: netip.MustParseAddr(vip), Port: 80, Protocol: v1.ProtocolTCP}
	c.services[web.Name] = web
	for _, b := range backends {
		c.endpoints[web.Name] = append(c.endpoints[web.Name], endpoints.Endpoint{IP: netip.MustParseAddr(b.ip), Port: 8080,
			Ready: true, Serving: true, NodeName: "node-2"})
	}
	empty := &endpoints.ServicePort{Name: spn("empty"), ClusterIP: netip.MustParseAddr("100.100.0.11"), Port: 80, Protocol: v1.ProtocolTCP}
	c.services[empty.Name] = empty
	// rules coverage: node port, externalIP (physdev match), LB with source ranges that
	// exclude the node (ipvs match in KUBE-IPVS-OUT-FILTER)
	lb := &endpoints.ServicePort{Name: spn("lb"), ClusterIP: netip.MustParseAddr("100.100.0.12"), Port: 80, Protocol: v1.ProtocolTCP,
		NodePort: 30080, ExternalIPs: []netip.Addr{netip.MustParseAddr("203.0.113.7")},
		LoadBalancerIPs:          []netip.Addr{netip.MustParseAddr("198.51.100.10")},
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	c.services[lb.Name] = lb
	c.endpoints[lb.Name] = c.endpoints[web.Name]
	return c
}

func (c *cluster) removeEndpoint(ip string) {
	var keep []endpoints.Endpoint
	for _, ep := range c.endpoints[spn("web")] {
		if ep.IP.String() != ip {
			keep = append(keep, ep)
		}
	}
	c.endpoints[spn("web")] = keep
}

func (c *cluster) snapshot() endpoints.Snapshot {
	changed := map[types.NamespacedName]struct{}{}
	for n := range c.services {
		changed[n.NamespacedName] = struct{}{}
	}
	return endpoints.Snapshot{Services: c.services, Endpoints: c.endpoints, Changed: changed}
}

func dump(t *testing.T, node string) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"ipvsadm", "-Ln"}, {"iptables-save"}, {"ipset", "list"}} {
		out, _ := exec.Command("ip", append([]string{"netns", "exec", node}, args...)...).CombinedOutput()
		fmt.Fprintf(&b, "$ %s\n%s\n", strings.Join(args, " "), out)
	}
	return b.String()
}

func requireVM(t *testing.T) {
	t.Helper()
	if os.Getenv("KPROXY_IN_VM") != "1" {
		t.Skip("runs only inside the IPVS VM: see e2e/vm/README.md")
	}
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// serve answers each connection with "<name> from=<client address>" and keeps it open
// until the client closes it.
func serve(t *testing.T, ns, addr, name string) {
	t.Helper()
	var l net.Listener
	if err := netnsutil.Do(netnsutil.Path(ns), func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				_, _ = fmt.Fprintf(c, "%s from=%s\n", name, host)
				_, _ = bufio.NewReader(c).ReadString('\n') // until EOF or reset
			}()
		}
	}()
}

func dial(ns, addr string) (net.Conn, string, error) {
	var c net.Conn
	if err := netnsutil.Do(netnsutil.Path(ns), func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		return nil, "", err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		_ = c.Close()
		return nil, "", err
	}
	_ = c.SetDeadline(time.Time{})
	return c, strings.TrimSpace(line), nil
}

// fetch connects from the namespace and returns the first line of the reply. It ends the
// connection with a reset, so that IPVS forgets it within 10 s (CLOSE state) rather than
// 2 minutes (TIME_WAIT): graceful termination waits for it.
func fetch(ns, addr string) (string, error) {
	c, line, err := dial(ns, addr)
	if err != nil {
		return "", err
	}
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.Close()
	return line, nil
}

// hold opens a connection and keeps it; it returns the backend's name.
func hold(t *testing.T, ns, addr string) (net.Conn, string) {
	t.Helper()
	c, line, err := dial(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	name, _, _ := strings.Cut(line, " ")
	return c, name
}

// nsName creates the named namespace (lo up, removed at the end) and returns the name.
func nsName(t *testing.T, name string) string {
	t.Helper()
	netnsutil.Create(t, name)
	return name
}

// openKernel opens the IPVS/link and ipset handles of the namespace at nsPath, closed when the
// test ends.
func openKernel(t *testing.T, nsPath string) (*ipvs.Kernel, *ipset.Handle) {
	t.Helper()
	k, err := ipvs.NewKernel(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	sets, err := ipset.New(ipset.Options{NetNSPath: nsPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sets.Close)
	return k, sets
}
