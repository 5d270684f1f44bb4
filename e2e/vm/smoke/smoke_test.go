//go:build vm

package smoke

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/netnsutil"
)

// Topology, from TESTING.md's address plan, all in namespaces of this test:
//
//	client 198.51.100.2 ── veth ── 198.51.100.1  node  100.64.1.1 ── veth ── 100.64.1.2:8080 be1
//	                                 kube-ipvs0: 100.100.0.10    100.64.2.1 ── veth ── 100.64.2.2:8080 be2
//
// IPVS (in node): TCP 100.100.0.10:80 rr -> 100.64.1.2:8080, 100.64.2.2:8080 (masq).
// No default routes anywhere: each side has a route to the other's subnet only.
const (
	vip      = "100.100.0.10"
	vipPort  = 80
	rsPort   = 8080
	clientIP = "198.51.100.2"
)

var backends = []struct{ name, nodeIP, ip string }{
	{"be1", "100.64.1.1", "100.64.1.2"},
	{"be2", "100.64.2.1", "100.64.2.2"},
}

func TestIPVSVirtualServer(t *testing.T) {
	requireVM(t)
	sfx := netnsutil.Suffix()
	node := nsName(t, "kps-node-"+sfx)
	client := nsName(t, "kps-client-"+sfx)

	// client <-> node
	sh(t, "ip", "-n", node, "link", "add", "kps-c0", "type", "veth", "peer", "name", "eth0", "netns", client)
	sh(t, "ip", "-n", node, "addr", "add", "198.51.100.1/24", "dev", "kps-c0")
	sh(t, "ip", "-n", node, "link", "set", "kps-c0", "up")
	sh(t, "ip", "-n", client, "addr", "add", clientIP+"/24", "dev", "eth0")
	sh(t, "ip", "-n", client, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", client, "route", "add", "100.100.0.0/16", "via", "198.51.100.1")
	// node <-> backends, each with a server that reports who it is and whom it saw
	for i, b := range backends {
		ns := nsName(t, "kps-"+b.name+"-"+sfx)
		dev := fmt.Sprintf("kps-b%d", i)
		sh(t, "ip", "-n", node, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
		sh(t, "ip", "-n", node, "addr", "add", b.nodeIP+"/24", "dev", dev)
		sh(t, "ip", "-n", node, "link", "set", dev, "up")
		sh(t, "ip", "-n", ns, "addr", "add", b.ip+"/24", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", ns, "route", "add", "198.51.100.0/24", "via", b.nodeIP)
		serve(t, ns, fmt.Sprintf("%s:%d", b.ip, rsPort), b.name)
	}
	sh(t, "ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	// kube-ipvs0: a dummy device, left down as kube-proxy leaves it, holding the VIP
	// so that IPVS sees the packets to it at LOCAL_IN.
	nlh := netlinkHandle(t, node)
	if err := nlh.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "kube-ipvs0"}}); err != nil {
		t.Fatalf("add dummy kube-ipvs0: %v", err)
	}
	dummy, err := nlh.LinkByName("kube-ipvs0")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(vip + "/32")
	if err := nlh.AddrAdd(dummy, addr); err != nil {
		t.Fatalf("add %s to kube-ipvs0: %v", vip, err)
	}

	// the virtual server, with moby/ipvs in the node namespace
	ih, err := ipvs.New("/run/netns/" + node)
	if err != nil {
		t.Fatalf("ipvs.New: %v", err)
	}
	defer ih.Close()
	svc := &ipvs.Service{AddressFamily: syscall.AF_INET, Protocol: syscall.IPPROTO_TCP,
		Address: net.ParseIP(vip).To4(), Port: vipPort, SchedName: ipvs.RoundRobin, Netmask: 0xffffffff}
	if err := ih.NewService(svc); err != nil {
		t.Fatalf("NewService: %v", err)
	}
	for _, b := range backends {
		d := &ipvs.Destination{AddressFamily: syscall.AF_INET, Address: net.ParseIP(b.ip).To4(),
			Port: rsPort, Weight: 1, ConnectionFlags: ipvs.ConnectionFlagMasq}
		if err := ih.NewDestination(svc, d); err != nil {
			t.Fatalf("NewDestination %s: %v", b.ip, err)
		}
	}

	t.Run("moby/ipvs reads it back", func(t *testing.T) {
		dsts, err := ih.GetDestinations(svc)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range dsts {
			got = append(got, fmt.Sprintf("%s:%d w%d fwd%d", d.Address, d.Port, d.Weight, d.ConnectionFlags&ipvs.ConnectionFlagFwdMask))
		}
		sort.Strings(got)
		want := []string{"100.64.1.2:8080 w1 fwd0", "100.64.2.2:8080 w1 fwd0"}
		if strings.Join(got, ";") != strings.Join(want, ";") {
			t.Errorf("destinations = %v, want %v", got, want)
		}
	})

	t.Run("ipvsadm -Ln shows the virtual server", func(t *testing.T) {
		out := sh(t, "ip", "netns", "exec", node, "ipvsadm", "-Ln")
		t.Logf("ipvsadm -Ln:\n%s", out)
		for _, want := range []string{
			"TCP  100.100.0.10:80 rr",
			"  -> 100.64.1.2:8080              Masq    1      0          0",
			"  -> 100.64.2.2:8080              Masq    1      0          0",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("ipvsadm -Ln lacks %q", want)
			}
		}
	})

	t.Run("TCP through the VIP reaches both backends, client address kept", func(t *testing.T) {
		seen := map[string]int{}
		for i := 0; i < 4; i++ {
			reply, err := fetch(client, fmt.Sprintf("%s:%d", vip, vipPort))
			if err != nil {
				t.Fatalf("fetch %d through %s:%d: %v", i, vip, vipPort, err)
			}
			t.Logf("fetch %d: %s", i, reply)
			seen[reply]++
		}
		for _, b := range backends {
			want := b.name + " from=" + clientIP
			if seen[want] != 2 {
				t.Errorf("%q seen %d times, want 2 (rr over 2); all: %v", want, seen[want], seen)
			}
		}
		out := sh(t, "ip", "netns", "exec", node, "ipvsadm", "-Lnc")
		if !strings.Contains(out, clientIP) || !strings.Contains(out, vip+":80") {
			t.Errorf("ipvsadm -Lnc shows no connection from %s to %s:80:\n%s", clientIP, vip, out)
		}
	})

	t.Run("a VIP without a virtual server refuses at once", func(t *testing.T) {
		addr2, _ := netlink.ParseAddr("100.100.0.11/32")
		if err := nlh.AddrAdd(dummy, addr2); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := fetch(client, "100.100.0.11:80")
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("fetch 100.100.0.11:80 = %v, want connection refused", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("refusal took %v", d)
		}
	})
}

func requireVM(t *testing.T) {
	t.Helper()
	if os.Getenv("KPROXY_IN_VM") != "1" {
		t.Skip("runs only inside the IPVS VM: see e2e/vm/README.md")
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		t.Fatalf("no IPVS in this kernel: %v", err)
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

func netlinkHandle(t *testing.T, ns string) *netlink.Handle {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Close() }()
	// Only NETLINK_ROUTE: with no family given, netlink opens NETLINK_XFRM too, which
	// fails ("protocol not supported") where xfrm_user is not loaded, as in this VM.
	nlh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nlh.Close)
	return nlh
}

// serve answers each connection with "<name> from=<client address>".
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
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			_, _ = fmt.Fprintf(c, "%s from=%s\n", name, host)
			_ = c.Close()
		}
	}()
}

// fetch connects from the namespace and returns the first line of the reply.
func fetch(ns, addr string) (string, error) {
	var c net.Conn
	if err := netnsutil.Do(netnsutil.Path(ns), func() (err error) { c, err = net.DialTimeout("tcp", addr, 5*time.Second); return err }); err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// nsName creates the named namespace (lo up, removed at the end) and returns the name.
func nsName(t *testing.T, name string) string {
	t.Helper()
	netnsutil.Create(t, name)
	return name
}
