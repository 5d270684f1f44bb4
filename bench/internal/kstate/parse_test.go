package kstate

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseIPTablesSave(t *testing.T) {
	out := `*nat
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m comment --comment "dp/target cluster IP" -m tcp --dport 80 -j KUBE-SVC-ABC
-A KUBE-SEP-XYZ -p tcp -m comment --comment dp/target -m tcp -j DNAT --to-destination 100.64.1.12:7790
-A OTHER -d 100.100.0.11/32 -j KUBE-SVC-DEF
-A OTHER -j DNAT --to-destination 100.64.1.13:7790
`
	want := State{
		VIPs:      map[string]bool{"100.100.0.10": true},
		Endpoints: map[string]bool{"100.64.1.12:7790": true},
	}
	if d := cmp.Diff(want, ParseIPTablesSave(out)); d != "" {
		t.Errorf("ParseIPTablesSave (-want +got):\n%s", d)
	}
}

func TestParseIPTablesVIPs(t *testing.T) {
	out := `-N KUBE-SERVICES
-A KUBE-SERVICES -d 100.100.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-A
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-B
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
`
	want := State{VIPs: map[string]bool{"100.100.0.1": true, "100.100.0.10": true}}
	if d := cmp.Diff(want, ParseIPTablesVIPs(out)); d != "" {
		t.Errorf("ParseIPTablesVIPs (-want +got):\n%s", d)
	}
}

// kube-proxy's nftables mode writes a Service's endpoints in two forms: several endpoints as
// the elements of a numgen map, a single endpoint as a plain dnat in its endpoint chain. Both
// must read as programmed.
func TestParseNFT(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want State
	}{{
		name: "several endpoints: numgen map",
		out: `table ip kube-proxy {
	map service-ips {
		elements = { 100.100.0.20 . tcp . 80 : goto service-DEF-bg/svc-00001/tcp/ }
	}
	chain service-DEF-bg/svc-00001/tcp/ {
		meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 100.64.10.1 . 8080, 1 : 100.64.10.2 . 8080 }
	}
}`,
		want: State{
			VIPs:      map[string]bool{"100.100.0.20": true},
			Endpoints: map[string]bool{"100.64.10.1:8080": true, "100.64.10.2:8080": true},
		},
	}, {
		name: "single endpoint: dnat to, no map",
		out: `table ip kube-proxy {
	map service-ips {
		elements = { 100.100.0.10 . tcp . 80 : goto service-ABC-dp/target/tcp/ }
	}
	chain endpoint-X-dp/target/tcp/__100.64.1.12/7790 {
		ip saddr 100.64.1.12 jump mark-for-masquerade
		meta l4proto tcp dnat to 100.64.1.12:7790
	}
}`,
		want: State{
			VIPs:      map[string]bool{"100.100.0.10": true},
			Endpoints: map[string]bool{"100.64.1.12:7790": true},
		},
	}, {
		name: "both in one table",
		out: `table ip kube-proxy {
	map service-ips {
		elements = { 100.100.0.10 . tcp . 80 : goto service-ABC-dp/target/tcp/,
			     100.100.0.20 . tcp . 80 : goto service-DEF-bg/svc-00001/tcp/ }
	}
	chain endpoint-X {
		meta l4proto tcp dnat to 100.64.1.12:7790
	}
	map endpoints { elements = { 0 : 100.64.10.1 . 8080 } }
}`,
		want: State{
			VIPs:      map[string]bool{"100.100.0.10": true, "100.100.0.20": true},
			Endpoints: map[string]bool{"100.64.1.12:7790": true, "100.64.10.1:8080": true},
		},
	}, {
		name: "empty table",
		out:  "",
		want: State{VIPs: map[string]bool{}, Endpoints: map[string]bool{}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, ParseNFT(tc.out)); d != "" {
				t.Errorf("ParseNFT (-want +got):\n%s", d)
			}
		})
	}
}

func TestParseNFTVIPs(t *testing.T) {
	out := `table ip kube-proxy {
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 100.100.0.10 . tcp . 80 : goto service-ABC-dp/target/tcp/ }
	}
}`
	want := State{VIPs: map[string]bool{"100.100.0.10": true}}
	if d := cmp.Diff(want, ParseNFTVIPs(out)); d != "" {
		t.Errorf("ParseNFTVIPs (-want +got):\n%s", d)
	}
}

func TestMissing(t *testing.T) {
	st := State{
		VIPs:      map[string]bool{"100.100.0.10": true},
		Endpoints: map[string]bool{"100.64.1.12:7790": true},
	}
	for _, tc := range []struct {
		name      string
		vips, eps []string
		want      int
	}{
		{name: "all there", vips: []string{"100.100.0.10"}, eps: []string{"100.64.1.12:7790"}, want: 0},
		{name: "one VIP and one endpoint missing", vips: []string{"100.100.0.10", "100.100.0.12"},
			eps: []string{"100.64.1.12:7790", "100.64.10.1:8080"}, want: 2},
		{name: "nothing wanted", want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Missing(st, tc.vips, tc.eps); got != tc.want {
				t.Errorf("Missing = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestPositionIn(t *testing.T) {
	out := `-N KUBE-SERVICES
-A KUBE-SERVICES -d 100.100.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-A
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-B
-A KUBE-SERVICES -d 100.100.0.100/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-C
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
`
	for _, tc := range []struct{ vip, want string }{
		{"100.100.0.10", "2/4"}, {"100.100.0.100", "3/4"}, {"100.100.0.1", "1/4"}, {"100.100.0.2", "-/4"},
	} {
		t.Run(tc.vip, func(t *testing.T) {
			if got := PositionIn(out, tc.vip); got != tc.want {
				t.Errorf("PositionIn(%s) = %s, want %s", tc.vip, got, tc.want)
			}
		})
	}
}
