package proxy

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

type renderCase struct {
	name  string // golden file testdata/<name>.golden
	world *world
	cfg   Config
	// nodePortIPs are the node addresses inside cfg.NodePortAddresses.
	nodePortIPs []netip.Addr
}

func (tc renderCase) input() Input {
	return Input{Services: tc.world.services, Endpoints: tc.world.endpoints, Node: testNode, Config: tc.cfg, NodePortIPs: tc.nodePortIPs}
}

func renderCases() []renderCase {
	withCIDR := Config{ClusterCIDR: clusterCIDR}
	withNode := Config{ClusterCIDR: clusterCIDR, NodeIP: nodeIP}
	return []renderCase{
		{name: "one-endpoint", world: oneService(), cfg: withCIDR},
		{
			name: "multi-endpoint",
			world: newWorld().add(servicePort(svc1Port, "100.100.0.10", 80),
				readyEP("100.64.1.10", 8080), readyEP("100.64.1.11", 8080), readyEP("100.64.2.10", 8080),
				notReadyEP("100.64.2.11", 8080), terminatingEP("100.64.2.12", 8080, true)),
			cfg: withCIDR,
		},
		{
			name: "multiport-two-protocols",
			world: newWorld().
				add(servicePort(dnsUDP, "100.100.0.53", 53), readyEP("100.64.1.20", 53), readyEP("100.64.2.20", 53)).
				add(servicePort(dnsTCP, "100.100.0.53", 53), readyEP("100.64.1.20", 53), readyEP("100.64.2.20", 53)).
				add(servicePort(metrics, "100.100.0.53", 9153), readyEP("100.64.1.20", 9153)),
			cfg: withCIDR,
		},
		{
			name:  "masquerade-all",
			world: oneService(),
			cfg:   Config{ClusterCIDR: clusterCIDR, MasqueradeAll: true, MasqueradeBit: 16, MasqueradeRandomFully: true},
		},
		{name: "no-cluster-cidr", world: oneService()},
		{
			name: "no-endpoints",
			world: newWorld().
				add(servicePort(svc1Port, "100.100.0.10", 80)).
				add(servicePort(portName("ns1", "svc2", "", v1.ProtocolUDP), "100.100.0.11", 5353),
					terminatingEP("100.64.1.12", 5353, false)).
				add(servicePort(portName("ns1", "svc3", "http", v1.ProtocolSCTP), "100.100.0.12", 8080),
					terminatingEP("100.64.1.13", 8080, true), terminatingEP("100.64.1.14", 8080, false)).
				add(localOnly(servicePort(portName("ns1", "svc4", "p80", v1.ProtocolTCP), "100.100.0.13", 80)),
					remoteEP("100.64.2.13", 80)),
			cfg: withCIDR,
		},
		{
			name: "ipv6",
			world: newWorld().
				add(servicePort(svc1Port, "2001:db8:2::10", 80), readyEP("2001:db8:1::10", 8080), readyEP("2001:db8:1::11", 8080)).
				add(servicePort(portName("ns1", "v4only", "p80", v1.ProtocolTCP), "100.100.0.20", 80), readyEP("100.64.1.10", 80)),
			cfg: Config{Family: iptables.IPv6, ClusterCIDR: netip.MustParsePrefix("2001:db8:1::/48")},
		},
		{
			name: "ipv6-nodeport-lb-etp-local",
			world: newWorld().add(svc(svc1Port, "2001:db8:2::10", nodePort(30080), lbIPs("2001:db8:4::50", "198.51.100.50"),
				etpLocal(30999), sourceRanges("2001:db8:5::/64", "198.51.100.0/28")),
				readyEP("2001:db8:1::10", 8080), remoteEP("2001:db8:1:2::10", 8080)),
			cfg: Config{Family: iptables.IPv6, ClusterCIDR: netip.MustParsePrefix("2001:db8:1::/48"),
				ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("2001:db8:2::/112"), netip.MustParsePrefix("100.100.0.0/16")}},
		},
		{
			name: "nodeport-lb-etp-local",
			world: newWorld().add(svc(svc1Port, "100.100.0.10", nodePort(30080), lbIPs("198.51.100.50"), etpLocal(30999)),
				readyEP("100.64.1.10", 8080), remoteEP("100.64.2.10", 8080)),
			cfg: withNode,
		},
		{
			name: "nodeport-lb-externalip-etp-cluster",
			world: newWorld().add(svc(svc1Port, "100.100.0.10", nodePort(30080), lbIPs("198.51.100.50", "198.51.100.51"), externalIPs("203.0.113.10")),
				readyEP("100.64.1.10", 8080), remoteEP("100.64.2.10", 8080)),
			cfg: withNode,
		},
		{
			name: "external-no-endpoints",
			world: newWorld().
				add(svc(svc1Port, "100.100.0.10", nodePort(30080), lbIPs("198.51.100.50"), externalIPs("203.0.113.10"))).
				add(svc(portName("ns1", "local", "p80", v1.ProtocolUDP), "100.100.0.11", nodePort(30081), lbIPs("198.51.100.51"),
					externalIPs("203.0.113.11"), etpLocal(30998)), remoteEP("100.64.2.11", 53)),
			cfg: withNode,
		},
		{
			name: "source-ranges",
			world: newWorld().add(svc(svc1Port, "100.100.0.10", nodePort(30080), lbIPs("198.51.100.50"),
				sourceRanges("198.51.100.0/28", "192.0.2.0/24")), readyEP("100.64.1.10", 8080)),
			cfg: withNode,
		},
		{
			name: "session-affinity",
			world: newWorld().add(svc(svc1Port, "100.100.0.10", affinity(10800*time.Second), nodePort(30080)),
				readyEP("100.64.1.10", 8080), remoteEP("100.64.2.10", 8080)),
			cfg: withNode,
		},
		{
			name: "itp-local",
			world: newWorld().add(svc(svc1Port, "100.100.0.10", itpLocal()), readyEP("100.64.1.10", 8080), remoteEP("100.64.2.10", 8080)).
				add(svc(portName("ns1", "both", "p80", v1.ProtocolTCP), "100.100.0.11", itpLocal(), nodePort(30081)),
					readyEP("100.64.1.11", 8080), remoteEP("100.64.2.11", 8080)),
			cfg: withNode,
		},
		{
			name:  "detect-local-bridge",
			world: newWorld().add(svc(svc1Port, "100.100.0.10", nodePort(30080), etpLocal(30999)), readyEP("100.64.1.10", 8080)),
			cfg:   Config{LocalDetector: LocalDetector{BridgeInterface: "cni0"}},
		},
		{
			name:  "detect-local-interface-prefix",
			world: oneService(),
			cfg:   Config{LocalDetector: LocalDetector{InterfaceNamePrefix: "veth"}, ConntrackTCPBeLiberal: true},
		},
		{
			name:        "nodeport-addresses",
			world:       newWorld().add(svc(svc1Port, "100.100.0.10", nodePort(30080)), readyEP("100.64.1.10", 8080)),
			cfg:         Config{ClusterCIDR: clusterCIDR, NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("127.0.0.0/8")}},
			nodePortIPs: []netip.Addr{netip.MustParseAddr("192.0.2.99"), nodeIP, netip.MustParseAddr("127.0.0.1")},
		},
		{
			name:  "localhost-nodeports",
			world: newWorld().add(svc(svc1Port, "100.100.0.10", nodePort(30080)), readyEP("100.64.1.10", 8080)),
			cfg:   Config{ClusterCIDR: clusterCIDR, LocalhostNodePorts: true},
		},
		{
			name:  "service-cidrs",
			world: oneService().add(servicePort(portName("ns1", "empty", "", v1.ProtocolTCP), "100.100.0.30", 80)),
			cfg:   Config{ClusterCIDR: clusterCIDR, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}},
		},
	}
}

func notReadyEP(ip string, port int32) endpoints.Endpoint {
	ep := readyEP(ip, port)
	ep.Ready, ep.Serving = false, false
	return ep
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range renderCases() {
		t.Run(tc.name, func(t *testing.T) {
			rules := Render(tc.input())
			got := string(rules.Transaction().Bytes())
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s (-want +got; go test -update rewrites it):\n%s", path, diff)
			}
		})
	}
}

// entryChains are reached from built-in chains (the base jumps) or, for KUBE-MARK-MASQ, are
// kube-proxy's public interface, so nothing in the rendered rules needs to jump to them.
func entryChains(table iptables.Table) []iptables.Chain {
	out := []iptables.Chain{iptables.ChainKubeMarkMasq}
	for _, j := range append(slices.Clone(baseJumps), localnetJumps...) {
		if j.table == table {
			out = append(out, j.to)
		}
	}
	return out
}

// TestRenderConsistency checks every golden case: each rule is one iptables accepts, each jump
// goes to a chain that is rendered, each rendered chain is used, and a Fake accepts the whole
// restore.
func TestRenderConsistency(t *testing.T) {
	for _, tc := range renderCases() {
		t.Run(tc.name, func(t *testing.T) {
			rules := Render(tc.input())
			for table, chains := range rules.byTable() {
				checkChains(t, tc.cfg.Family, table, chains)
			}
			f := iptables.NewFake(tc.cfg.Family)
			if err := f.Restore(t.Context(), rules.Transaction().Bytes()); err != nil {
				t.Errorf("fake rejects the rendered rules: %v", err)
			}
		})
	}
}

func checkChains(t *testing.T, fam iptables.Family, table iptables.Table, chains []ChainRules) {
	t.Helper()
	declared, used := map[iptables.Chain]bool{}, map[iptables.Chain]bool{}
	for _, c := range chains {
		if declared[c.Chain] {
			t.Errorf("%s: chain %s rendered twice", table, c.Chain)
		}
		declared[c.Chain] = true
	}
	for _, c := range chains {
		for _, r := range c.Rules {
			if _, err := iptables.CanonicalRule(fam, table, r...); err != nil {
				t.Errorf("%s %s: rule %q: %v", table, c.Chain, r, err)
			}
			target := ruleTarget(r)
			switch {
			case target == "" || isBuiltinTarget(target):
			case !declared[iptables.Chain(target)]:
				t.Errorf("%s %s: rule %q jumps to %s, which is not rendered", table, c.Chain, r, target)
			default:
				used[iptables.Chain(target)] = true
			}
		}
	}
	for _, c := range chains {
		if !used[c.Chain] && !contains(entryChains(table), c.Chain) {
			t.Errorf("%s: chain %s is rendered but nothing jumps to it", table, c.Chain)
		}
	}
}

func ruleTarget(r iptables.Rule) string {
	for i := 0; i+1 < len(r); i++ {
		if r[i] == "-j" || r[i] == "-g" {
			return r[i+1]
		}
	}
	return ""
}

func isBuiltinTarget(s string) bool {
	return strings.ToUpper(s) == s && !strings.HasPrefix(s, "KUBE-")
}

func contains(list []iptables.Chain, c iptables.Chain) bool {
	for _, x := range list {
		if x == c {
			return true
		}
	}
	return false
}
