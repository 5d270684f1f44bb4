package proxy

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
}

func renderCases() []renderCase {
	withCIDR := Config{ClusterCIDR: clusterCIDR}
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
			rules := Render(Input{Services: tc.world.services, Endpoints: tc.world.endpoints, Node: testNode, Config: tc.cfg})
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

// entryChains are reached from built-in chains (or, for KUBE-MARK-MASQ, are kube-proxy's
// public interface), so nothing in the rendered rules needs to jump to them.
var entryChains = map[iptables.Table][]iptables.Chain{
	iptables.TableNAT:    {iptables.ChainKubeServices, iptables.ChainKubePostrouting, iptables.ChainKubeMarkMasq},
	iptables.TableFilter: {iptables.ChainKubeServices},
}

// TestRenderConsistency checks every golden case: each rule is one iptables accepts, each jump
// goes to a chain that is rendered, each rendered chain is used, and a Fake accepts the whole
// restore.
func TestRenderConsistency(t *testing.T) {
	for _, tc := range renderCases() {
		t.Run(tc.name, func(t *testing.T) {
			rules := Render(Input{Services: tc.world.services, Endpoints: tc.world.endpoints, Node: testNode, Config: tc.cfg})
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
		if !used[c.Chain] && !contains(entryChains[table], c.Chain) {
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
