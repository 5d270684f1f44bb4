package ipvs

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

type planCase struct {
	name  string // golden file testdata/<name>.golden
	cfg   func(*Config)
	world func() *world
}

func planCases() []planCase {
	return []planCase{
		{name: "clusterip", world: func() *world {
			return newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080), remoteEP("100.64.2.2", 8080))
		}},
		{name: "no-endpoints", world: func() *world { return newWorld().svc(webTCP()) }},
		{name: "nodeport-tcp-udp-sctp", cfg: func(c *Config) { c.NodeIPs = addrs("192.0.2.11", "192.0.2.12") }, world: func() *world {
			w := newWorld()
			for i, proto := range []v1.Protocol{v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP} {
				sp := servicePort(portName("default", "np", "p", proto), "100.100.0.20", 53)
				sp.NodePort = int32(30053 + i)
				w.svc(sp, readyEP("100.64.1.5", 5353))
			}
			return w
		}},
		{name: "lb-etp-local-source-ranges", world: func() *world {
			sp := servicePort(portName("default", "lb", "", v1.ProtocolTCP), "100.100.0.30", 443)
			sp.NodePort = 30443
			sp.LoadBalancerIPs = addrs("198.51.100.10")
			sp.ExternalIPs = addrs("203.0.113.7")
			sp.ExternalPolicyLocal = true
			sp.HealthCheckNodePort = 32000
			sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
			return newWorld().svc(sp, readyEP("100.64.1.3", 8443), remoteEP("100.64.2.3", 8443))
		}},
		{name: "lb-etp-cluster-node-allowed", world: func() *world {
			sp := servicePort(portName("default", "lb2", "", v1.ProtocolTCP), "100.100.0.31", 80)
			sp.LoadBalancerIPs = addrs("198.51.100.11")
			sp.ExternalIPs = addrs("203.0.113.8", "192.0.2.11") // the second is the node's own
			sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
			return newWorld().svc(sp, remoteEP("100.64.2.4", 80))
		}},
		{name: "affinity-mh-masquerade-all", cfg: func(c *Config) { c.Scheduler = "mh"; c.MasqueradeAll = true }, world: func() *world {
			return newWorld().svc(affinity(webTCP()), readyEP("100.64.1.2", 8080))
		}},
		{name: "no-local-detector", cfg: func(c *Config) { c.ClusterCIDR = netip.Prefix{}; c.MasqueradeBit = 15 }, world: func() *world {
			return newWorld().svc(webTCP(), remoteEP("100.64.2.2", 8080))
		}},
		{name: "itp-local-terminating-fallback", world: func() *world {
			itp := servicePort(portName("default", "itp", "", v1.ProtocolTCP), "100.100.0.40", 80)
			itp.InternalPolicyLocal = true
			term := servicePort(portName("default", "term", "", v1.ProtocolUDP), "100.100.0.41", 53)
			return newWorld().
				svc(itp, readyEP("100.64.1.7", 80), remoteEP("100.64.2.7", 80)).
				svc(term, terminatingEP("100.64.2.8", 53), endpoints.Endpoint{IP: netip.MustParseAddr("100.64.2.9"), Port: 53, NodeName: "node-2"})
		}},
		{name: "etp-local-udp-sctp-bridge-detector", cfg: func(c *Config) {
			c.LocalDetector = LocalDetector{BridgeInterface: "cni0"}
		}, world: func() *world {
			w := newWorld()
			for i, proto := range []v1.Protocol{v1.ProtocolUDP, v1.ProtocolSCTP} {
				sp := servicePort(portName("default", "etp", "p", proto), "100.100.0.50", 53)
				sp.NodePort = int32(30153 + i)
				sp.ExternalIPs = addrs("203.0.113.9")
				sp.ExternalPolicyLocal = true
				w.svc(sp, remoteEP("100.64.2.5", 5353))
			}
			return w
		}},
		{name: "ipv6-etp-local", cfg: func(c *Config) {
			c.Family = iptables.IPv6
			c.ClusterCIDR = netip.MustParsePrefix("2001:db8:1::/48")
			c.NodeIPs = addrs("2001:db8:3::11")
		}, world: func() *world {
			sp := servicePort(portName("default", "v6", "", v1.ProtocolTCP), "2001:db8:2::10", 80)
			sp.LoadBalancerIPs = addrs("2001:db8:4::1")
			sp.ExternalPolicyLocal = true
			return newWorld().svc(sp, endpoints.Endpoint{IP: netip.MustParseAddr("2001:db8:1::2"), Port: 8080, Ready: true, Serving: true, NodeName: "node-2"})
		}},
		{name: "ipv6", cfg: func(c *Config) {
			c.Family = iptables.IPv6
			c.ClusterCIDR = netip.MustParsePrefix("2001:db8:1::/48")
			c.NodeIPs = addrs("2001:db8:3::11")
		}, world: func() *world {
			sp := servicePort(portName("default", "v6", "", v1.ProtocolTCP), "2001:db8:2::10", 80)
			sp.NodePort = 30080
			sp.LoadBalancerIPs = addrs("2001:db8:4::1")
			sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("2001:db8:5::/64")}
			return newWorld().svc(sp, endpoints.Endpoint{IP: netip.MustParseAddr("2001:db8:1::2"), Port: 8080, Ready: true, Serving: true, NodeName: "node-1"})
		}},
	}
}

func TestComputePlanGolden(t *testing.T) {
	for _, tc := range planCases() {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			got := ComputePlan(tc.world().input(cfg)).Dump()
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
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
