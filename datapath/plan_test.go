package datapath

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

var cmpNetip = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func mac(s string) MAC {
	m, err := ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// node i: pods 100.64.i.0/24, IP 192.0.2.1i, MAC derived from the IP.
func testNode(i int, ip string) Node {
	a := addr(ip)
	return Node{Name: "n" + string(rune('0'+i)), PodCIDRs: []netip.Prefix{pfx("100.64." + string(rune('0'+i)) + ".0/24")},
		IP: a, VTEPMAC: VTEPMACFor(a)}
}

var (
	n1     = testNode(1, "192.0.2.11")
	n2     = testNode(2, "192.0.2.12")
	n3far  = testNode(3, "192.0.2.200") // outside self's underlay subnet 192.0.2.0/25
	self1  = Self{Node: n1, Underlay: pfx("192.0.2.11/25")}
	mac2   = mac("0e:6b:c0:00:02:0c")
	mac3   = mac("0e:6b:c0:00:02:c8")
	clus   = []netip.Prefix{pfx("100.64.0.0/16")}
	vxdev1 = &Device{Name: "kproxy.1", Kind: KindVXLAN, VNI: 1, Port: 8472, Local: addr("192.0.2.11"), MTU: 1450,
		MAC: mac("0e:6b:c0:00:02:0b"), Addrs: []netip.Prefix{pfx("100.64.1.0/32")}}
)

func vxRoute(c, vtep string) Route {
	return Route{Dst: pfx(c), Gw: addr(vtep), Dev: "kproxy.1", OnLink: true}
}

func TestComputePlan(t *testing.T) {
	v6node := Node{Name: "n6", PodCIDRs: []netip.Prefix{pfx("2001:db8:1:6::/64")}, IP: addr("2001:db8:3::6"), VTEPMAC: mac("0e:00:00:00:00:06")}
	dual := Node{Name: "n2", PodCIDRs: []netip.Prefix{pfx("100.64.2.0/24"), pfx("2001:db8:1:2::/64")}, IP: addr("192.0.2.12"), VTEPMAC: mac2}
	tests := []struct {
		name  string
		cfg   Config
		self  Self
		nodes []Node
		want  Plan // Masquerade not compared here
	}{{
		name: "vxlan: one route, one neighbour, one fdb per peer; self and peers sorted",
		cfg:  Config{Backend: BackendVXLAN, ClusterCIDRs: clus},
		self: self1, nodes: []Node{n3far, n1, n2},
		want: Plan{Device: vxdev1, PodMTU: 1450,
			Routes: []Route{vxRoute("100.64.2.0/24", "100.64.2.0"), vxRoute("100.64.3.0/24", "100.64.3.0")},
			Neighs: []Neigh{{Dev: "kproxy.1", IP: addr("100.64.2.0"), MAC: mac2}, {Dev: "kproxy.1", IP: addr("100.64.3.0"), MAC: mac3}},
			FDBs:   []FDB{{Dev: "kproxy.1", MAC: mac2, Dst: addr("192.0.2.12")}, {Dev: "kproxy.1", MAC: mac3, Dst: addr("192.0.2.200")}}},
	}, {
		name: "vxlan: VNI, port and MTU from config; device named after the VNI",
		cfg:  Config{Backend: BackendVXLAN, VNI: 7, Port: 4789, UnderlayMTU: 9000},
		self: self1, nodes: []Node{n2},
		want: Plan{Device: &Device{Name: "kproxy.7", Kind: KindVXLAN, VNI: 7, Port: 4789, Local: addr("192.0.2.11"), MTU: 8950,
			MAC: vxdev1.MAC, Addrs: vxdev1.Addrs}, PodMTU: 8950,
			Routes: []Route{{Dst: pfx("100.64.2.0/24"), Gw: addr("100.64.2.0"), Dev: "kproxy.7", OnLink: true}},
			Neighs: []Neigh{{Dev: "kproxy.7", IP: addr("100.64.2.0"), MAC: mac2}},
			FDBs:   []FDB{{Dev: "kproxy.7", MAC: mac2, Dst: addr("192.0.2.12")}}},
	}, {
		name: "vxlan direct routing: same subnet plain route, other subnet through vxlan",
		cfg:  Config{Backend: BackendVXLAN, DirectRouting: true},
		self: self1, nodes: []Node{n2, n3far},
		want: Plan{Device: vxdev1, PodMTU: 1450,
			Routes: []Route{{Dst: pfx("100.64.2.0/24"), Gw: addr("192.0.2.12")}, vxRoute("100.64.3.0/24", "100.64.3.0")},
			Neighs: []Neigh{{Dev: "kproxy.1", IP: addr("100.64.3.0"), MAC: mac3}},
			FDBs:   []FDB{{Dev: "kproxy.1", MAC: mac3, Dst: addr("192.0.2.200")}}},
	}, {
		name:  "vxlan dual-stack pods over an IPv4 underlay: a route and a neighbour per subnet, one fdb",
		cfg:   Config{Backend: BackendVXLAN},
		self:  Self{Node: Node{Name: "n1", PodCIDRs: []netip.Prefix{pfx("100.64.1.0/24"), pfx("2001:db8:1:1::/64")}, IP: addr("192.0.2.11")}},
		nodes: []Node{dual},
		want: Plan{Device: &Device{Name: "kproxy.1", Kind: KindVXLAN, VNI: 1, Port: 8472, Local: addr("192.0.2.11"), MTU: 1450,
			MAC: vxdev1.MAC, Addrs: []netip.Prefix{pfx("100.64.1.0/32"), pfx("2001:db8:1:1::/128")}}, PodMTU: 1450,
			Routes: []Route{vxRoute("100.64.2.0/24", "100.64.2.0"), {Dst: pfx("2001:db8:1:2::/64"), Gw: addr("2001:db8:1:2::"), Dev: "kproxy.1", OnLink: true}},
			Neighs: []Neigh{{Dev: "kproxy.1", IP: addr("100.64.2.0"), MAC: mac2}, {Dev: "kproxy.1", IP: addr("2001:db8:1:2::"), MAC: mac2}},
			FDBs:   []FDB{{Dev: "kproxy.1", MAC: mac2, Dst: addr("192.0.2.12")}}},
	}, {
		name:  "vxlan over an IPv6 underlay: MTU less 70",
		cfg:   Config{Backend: BackendVXLAN},
		self:  Self{Node: Node{Name: "n5", PodCIDRs: []netip.Prefix{pfx("2001:db8:1:5::/64")}, IP: addr("2001:db8:3::5")}},
		nodes: []Node{v6node},
		want: Plan{Device: &Device{Name: "kproxy.1", Kind: KindVXLAN, VNI: 1, Port: 8472, Local: addr("2001:db8:3::5"), MTU: 1430,
			MAC: VTEPMACFor(addr("2001:db8:3::5")), Addrs: []netip.Prefix{pfx("2001:db8:1:5::/128")}}, PodMTU: 1430,
			Routes: []Route{{Dst: pfx("2001:db8:1:6::/64"), Gw: addr("2001:db8:1:6::"), Dev: "kproxy.1", OnLink: true}},
			Neighs: []Neigh{{Dev: "kproxy.1", IP: addr("2001:db8:1:6::"), MAC: v6node.VTEPMAC}},
			FDBs:   []FDB{{Dev: "kproxy.1", MAC: v6node.VTEPMAC, Dst: addr("2001:db8:3::6")}}},
	}, {
		name: "vxlan: peers without podCIDR, IP or MAC, or with another node's subnet, IP or MAC are skipped",
		cfg:  Config{Backend: BackendVXLAN},
		self: self1, nodes: []Node{n2,
			{Name: "a-nocidr", IP: addr("192.0.2.20")},
			{Name: "b-noip", PodCIDRs: []netip.Prefix{pfx("100.64.20.0/24")}},
			{Name: "c-nomac", PodCIDRs: []netip.Prefix{pfx("100.64.21.0/24")}, IP: addr("192.0.2.21")},
			{Name: "d-mysubnet", PodCIDRs: []netip.Prefix{pfx("100.64.1.128/25")}, IP: addr("192.0.2.22"), VTEPMAC: mac("0e:00:00:00:00:22")},
			{Name: "x-sameip", PodCIDRs: []netip.Prefix{pfx("100.64.23.0/24")}, IP: addr("192.0.2.12"), VTEPMAC: mac("0e:00:00:00:00:23")},
			{Name: "y-samemac", PodCIDRs: []netip.Prefix{pfx("100.64.24.0/24")}, IP: addr("192.0.2.24"), VTEPMAC: mac2},
			{Name: "z-n2subnet", PodCIDRs: []netip.Prefix{pfx("100.64.2.0/23")}, IP: addr("192.0.2.25"), VTEPMAC: mac("0e:00:00:00:00:25")},
		},
		want: Plan{Device: vxdev1, PodMTU: 1450,
			Routes: []Route{vxRoute("100.64.2.0/24", "100.64.2.0")},
			Neighs: []Neigh{{Dev: "kproxy.1", IP: addr("100.64.2.0"), MAC: mac2}},
			FDBs:   []FDB{{Dev: "kproxy.1", MAC: mac2, Dst: addr("192.0.2.12")}},
			Skipped: []Skip{
				{Node: "a-nocidr", Reason: "no podCIDR"},
				{Node: "b-noip", Reason: "no node IP"},
				{Node: "c-nomac", Reason: "no kproxy.io/vtep-mac annotation"},
				{Node: "d-mysubnet", Reason: "podCIDR 100.64.1.128/25 overlaps node n1's 100.64.1.0/24"},
				{Node: "x-sameip", Reason: "node IP 192.0.2.12 is also node n2's"},
				{Node: "y-samemac", Reason: "VTEP MAC 0e:6b:c0:00:02:0c is also node n2's"},
				{Node: "z-n2subnet", Reason: "podCIDR 100.64.2.0/23 overlaps node n2's 100.64.2.0/24"},
			}},
	}, {
		name: "host-gw: route via node IP; a peer off the subnet is skipped with the reason",
		cfg:  Config{Backend: BackendHostGW},
		self: self1, nodes: []Node{n2, n3far},
		want: Plan{PodMTU: 1500,
			Routes:  []Route{{Dst: pfx("100.64.2.0/24"), Gw: addr("192.0.2.12")}},
			Skipped: []Skip{{Node: "n3", Reason: "node IP 192.0.2.200 is not on this node's subnet 192.0.2.0/25: host-gw needs one L2 subnet (use vxlan or vxlan with direct routing)"}}},
	}, {
		name: "host-gw: an IPv6 pod subnet cannot go via an IPv4 node IP",
		cfg:  Config{Backend: BackendHostGW},
		self: self1, nodes: []Node{dual},
		want: Plan{PodMTU: 1500,
			Routes:  []Route{{Dst: pfx("100.64.2.0/24"), Gw: addr("192.0.2.12")}},
			Skipped: []Skip{{Node: "n2", Reason: "podCIDR 2001:db8:1:2::/64 cannot be routed via node IP 192.0.2.12 of another family"}}},
	}, {
		name: "ipip: route via node IP onlink through the tunnel, any subnet; MTU less 20",
		cfg:  Config{Backend: BackendIPIP},
		self: self1, nodes: []Node{n2, n3far, v6node},
		want: Plan{Device: &Device{Name: "kproxy.ipip", Kind: KindIPIP, Local: addr("192.0.2.11"), MTU: 1480}, PodMTU: 1480,
			Routes: []Route{
				{Dst: pfx("100.64.2.0/24"), Gw: addr("192.0.2.12"), Dev: "kproxy.ipip", OnLink: true},
				{Dst: pfx("100.64.3.0/24"), Gw: addr("192.0.2.200"), Dev: "kproxy.ipip", OnLink: true},
			},
			Skipped: []Skip{{Node: "n6", Reason: "node IP 2001:db8:3::6: ipip needs IPv4"}}},
	}, {
		name: "none: nothing, full MTU",
		cfg:  Config{Backend: BackendNone},
		self: Self{Node: Node{Name: "n1"}}, nodes: []Node{n2},
		want: Plan{PodMTU: 1500},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ComputePlan(tc.cfg, tc.self, tc.nodes)
			if err != nil {
				t.Fatal(err)
			}
			got.Masquerade = Masquerade{}
			if d := cmp.Diff(tc.want, got, cmpNetip); d != "" {
				t.Errorf("plan (-want +got):\n%s", d)
			}
		})
	}
}

func TestComputePlanPeersJoinAndLeave(t *testing.T) {
	cfg := Config{Backend: BackendVXLAN}
	before, err := ComputePlan(cfg, self1, []Node{n1, n2})
	if err != nil {
		t.Fatal(err)
	}
	joined, err := ComputePlan(cfg, self1, []Node{n1, n2, n3far})
	if err != nil {
		t.Fatal(err)
	}
	if len(joined.Routes)-len(before.Routes) != 1 || len(joined.Neighs)-len(before.Neighs) != 1 || len(joined.FDBs)-len(before.FDBs) != 1 {
		t.Errorf("a joining peer adds one route, neighbour, fdb: before %+v after %+v", before, joined)
	}
	left, err := ComputePlan(cfg, self1, []Node{n1, n3far})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]Route{vxRoute("100.64.3.0/24", "100.64.3.0")}, left.Routes, cmpNetip); d != "" {
		t.Errorf("after n2 left (-want +got):\n%s", d)
	}
}

func TestComputePlanErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		self Self
		want string
	}{
		{"unknown backend", Config{Backend: "flannel"}, self1, `unknown datapath backend "flannel"`},
		{"direct routing without vxlan", Config{Backend: BackendHostGW, DirectRouting: true}, self1, "direct routing needs the vxlan backend"},
		{"no podCIDR", Config{Backend: BackendVXLAN}, Self{Node: Node{Name: "n1", IP: addr("192.0.2.11")}}, "node n1: node has no podCIDR"},
		{"no node IP", Config{Backend: BackendVXLAN}, Self{Node: Node{Name: "n1", PodCIDRs: n1.PodCIDRs}}, "node n1 has no node IP"},
		{"host-gw without underlay subnet", Config{Backend: BackendHostGW}, Self{Node: n1}, "underlay subnet invalid Prefix does not hold"},
		{"ipip over IPv6", Config{Backend: BackendIPIP}, Self{Node: Node{Name: "n1", PodCIDRs: n1.PodCIDRs, IP: addr("2001:db8:3::1")}}, "ipip needs an IPv4 node IP"},
		{"VNI out of range", Config{Backend: BackendVXLAN, VNI: 1 << 24}, self1, "vxlan VNI 16777216"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ComputePlan(tc.cfg, tc.self, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	_, err := ComputePlan(Config{Backend: BackendVXLAN}, Self{Node: Node{Name: "n1"}}, nil)
	if !errors.Is(err, ErrNoPodCIDR) {
		t.Errorf("error %v is not ErrNoPodCIDR", err)
	}
}

func TestMasquerade(t *testing.T) {
	p, err := ComputePlan(Config{Backend: BackendVXLAN, ClusterCIDRs: []netip.Prefix{pfx("100.64.0.0/16"), pfx("2001:db8:1::/48")}},
		self1, []Node{n2, {Name: "noip"}})
	if err != nil {
		t.Fatal(err)
	}
	render := func(rs []Rule) []string {
		var out []string
		for _, r := range rs {
			out = append(out, "-A "+r.Chain+" "+strings.Join(r.Args, " "))
		}
		return out
	}
	want4 := []string{
		`-A KPROXY-POSTROUTING -s 100.64.0.0/16 -d 100.64.0.0/16 -m comment --comment pod to pod keeps its source -j RETURN`,
		`-A KPROXY-POSTROUTING -s 100.64.0.0/16 -d 192.0.2.11/32 -m comment --comment pod to node keeps its source -j RETURN`,
		`-A KPROXY-POSTROUTING -s 100.64.0.0/16 -d 192.0.2.12/32 -m comment --comment pod to node keeps its source -j RETURN`,
		`-A KPROXY-POSTROUTING -s 100.64.0.0/16 ! -d 224.0.0.0/4 -m comment --comment pod egress leaves as the node -j MASQUERADE --random-fully`,
	}
	want6 := []string{
		`-A KPROXY-POSTROUTING -s 2001:db8:1::/48 -d 2001:db8:1::/48 -m comment --comment pod to pod keeps its source -j RETURN`,
		`-A KPROXY-POSTROUTING -s 2001:db8:1::/48 ! -d ff00::/8 -m comment --comment pod egress leaves as the node -j MASQUERADE --random-fully`,
	}
	if d := cmp.Diff(want4, render(p.Masquerade.V4), cmpNetip); d != "" {
		t.Errorf("v4 (-want +got):\n%s", d)
	}
	if d := cmp.Diff(want6, render(p.Masquerade.V6), cmpNetip); d != "" {
		t.Errorf("v6 (-want +got):\n%s", d)
	}
	if got := render([]Rule{JumpRule()})[0]; got != "-A POSTROUTING -m comment --comment kproxy datapath egress masquerade -j KPROXY-POSTROUTING" {
		t.Errorf("jump rule %s", got)
	}
}

func TestVTEPMACFor(t *testing.T) {
	if got := VTEPMACFor(addr("192.0.2.11")).String(); got != "0e:6b:c0:00:02:0b" {
		t.Errorf("v4 MAC %s", got)
	}
	m := VTEPMACFor(addr("2001:db8:3::5"))
	if m[0] != 0x0e || m == VTEPMACFor(addr("2001:db8:3::6")) {
		t.Errorf("v6 MAC %s not locally administered unicast or not distinct", m)
	}
}
