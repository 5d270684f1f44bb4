//go:build netns

package datapath

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kproxy/kproxy/iptables"
)

// FindUnderlay finds the interface holding the node IP, with its prefix and MTU, and a named
// interface's address; it fails clearly otherwise.
func TestFindUnderlayInNamespace(t *testing.T) {
	tp := newTopo(t, 1450)
	run(t, "ip", "-n", tp.node(1), "link", "set", "eth0", "mtu", "1400")
	h, err := NewHandle(tp.nsPath(tp.node(1)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Close() }()
	want := Underlay{Interface: "eth0", Prefix: netip.MustParsePrefix("192.0.2.11/24"), MTU: 1400}
	for _, tc := range []struct {
		ifname string
		ip     string
	}{{"", "192.0.2.11"}, {"eth0", "192.0.2.11"}, {"eth0", "192.0.2.99"}} {
		got, err := h.FindUnderlay(tc.ifname, netip.MustParseAddr(tc.ip))
		if err != nil || got != want {
			t.Errorf("FindUnderlay(%q, %s) = %+v, %v; want %+v", tc.ifname, tc.ip, got, err, want)
		}
	}
	if got, err := h.FindUnderlay("", netip.MustParseAddr("192.0.2.99")); err == nil {
		t.Errorf("FindUnderlay of an IP no interface holds = %+v, want an error", got)
	}
	if got, err := h.FindUnderlay("nosuch0", netip.MustParseAddr("192.0.2.11")); err == nil {
		t.Errorf("FindUnderlay(nosuch0) = %+v, want an error", got)
	}
}

// The agent in a real namespace: VXLAN device and peer entries over netlink, the underlay's
// MTU less 50, and the masquerade chain through real iptables-restore.
func TestAgentInNamespace(t *testing.T) {
	tp := newTopo(t, 1450)
	client := fake.NewClientset()
	for i, n := range tp.nodes {
		obj := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}
		obj.Spec.PodCIDRs = []string{n.PodCIDRs[0].String()}
		obj.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: n.IP.String()}}
		if i > 0 {
			obj.Annotations = map[string]string{AnnotationVTEPMAC: n.VTEPMAC.String()}
		}
		if _, err := client.CoreV1().Nodes().Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ipt := iptables.New(iptables.Options{NetNSPath: tp.nsPath(tp.node(1))})
	a, err := NewAgent(AgentOptions{Client: client, NodeName: "n1", NetNSPath: tp.nsPath(tp.node(1)),
		Config:   Config{Backend: BackendVXLAN, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16")}},
		IPTables: ipt, SyncPeriod: time.Minute, CNIConfDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	eventually(t, "ready", a.Ready)
	routes := run(t, "ip", "-n", tp.node(1), "route", "show", "proto", "107")
	for _, want := range []string{"100.64.2.0/24 via 100.64.2.0 dev kproxy.1 onlink", "100.64.3.0/24 via 100.64.3.0 dev kproxy.1 onlink"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes of n1:\n%s\nwant %q", routes, want)
		}
	}
	if link := run(t, "ip", "-n", tp.node(1), "link", "show", "kproxy.1"); !strings.Contains(link, "mtu 1450") {
		t.Errorf("kproxy.1: %s, want mtu 1450", link)
	}
	nat := run(t, "ip", "netns", "exec", tp.node(1), "iptables-save", "-t", "nat")
	for _, want := range []string{"-A POSTROUTING -m comment --comment \"kproxy datapath egress masquerade\" -j KPROXY-POSTROUTING",
		"-A KPROXY-POSTROUTING -s 100.64.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"pod egress leaves as the node\" -j MASQUERADE --random-fully"} {
		if !strings.Contains(nat, want) {
			t.Errorf("nat of n1:\n%s\nwant %q", nat, want)
		}
	}
}
