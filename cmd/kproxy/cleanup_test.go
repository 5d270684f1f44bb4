package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
	"github.com/kproxy/kproxy/proxier"
)

// foreignState is what other software on a node holds: kubelet's KUBE-FIREWALL and canary,
// a CNI's chains and jumps, a rule in a built-in chain that is not a jump to kproxy.
const foreignState = `*nat
:KUBE-KUBELET-CANARY - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
-A CNI-HOSTPORT-DNAT -p tcp -m tcp --dport 8443 -j DNAT --to-destination 100.64.1.9:443
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -s 100.64.0.0/16 ! -d 100.64.0.0/16 -j MASQUERADE
COMMIT
*filter
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:CNI-FORWARD - [0:0]
-A KUBE-FIREWALL -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A CNI-FORWARD -s 100.64.0.0/16 -j ACCEPT
-A INPUT -j KUBE-FIREWALL
-A OUTPUT -j KUBE-FIREWALL
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
COMMIT
`

// cleanupWorld is services of every kind, so that every per-service chain exists: ClusterIP,
// NodePort with externalTrafficPolicy Local, LoadBalancer with source ranges, one without
// endpoints.
func cleanupWorld(tr *endpoints.Tracker) {
	web := service("web", "100.100.0.10")
	tr.OnServiceAdd(web)
	tr.OnEndpointSliceAdd(slice("web", "web-1", "100.64.1.10", "100.64.2.10"))
	np := service("np", "100.100.0.11")
	np.Spec.Type = v1.ServiceTypeNodePort
	np.Spec.Ports[0].NodePort = 30080
	np.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	np.Spec.HealthCheckNodePort = 32000
	tr.OnServiceAdd(np)
	tr.OnEndpointSliceAdd(slice("np", "np-1", "100.64.1.11"))
	lb := service("lb", "100.100.0.12")
	lb.Spec.Type = v1.ServiceTypeLoadBalancer
	lb.Spec.Ports[0].NodePort = 30081
	lb.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/28"}
	lb.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "198.51.100.130"}}
	lb.Spec.SessionAffinity = v1.ServiceAffinityClientIP
	tr.OnServiceAdd(lb)
	tr.OnEndpointSliceAdd(slice("lb", "lb-1", "100.64.1.12"))
	tr.OnServiceAdd(service("empty", "100.100.0.13"))
}

// syncOnto runs one full sync of backend over cleanupWorld.
func syncOnto(t *testing.T, backend proxier.Backend) {
	t.Helper()
	tr := endpoints.NewTracker(endpoints.TrackerOptions{IPFamily: v1.IPv4Protocol})
	rec := proxier.NewReconciler(tr, backend, proxier.NewMetrics().For("IPv4"),
		proxier.NewHealth(time.Minute, []string{"IPv4"}, nil), proxier.ReconcilerOptions{})
	rec.SetNode(endpoints.NodeInfo{Name: "node1"})
	cleanupWorld(tr)
	if err := rec.Sync(context.Background()); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

// TestCleanupLeavesOnlyForeignChains programs the iptables mode over the Fake on top of
// foreign state, runs the cleanup, and expects exactly the foreign state back; a second
// cleanup changes nothing. (The IPVS mode's rules use the set match, which the Fake rejects:
// its case is in cleanup_netns_test.go, on the kernel.)
func TestCleanupLeavesOnlyForeignChains(t *testing.T) {
	ctx := context.Background()
	clusterCIDR := netip.MustParsePrefix("100.64.0.0/16")
	for _, tc := range []struct {
		name    string
		backend func(ipt iptables.Interface) proxier.Backend
	}{
		{"iptables", func(ipt iptables.Interface) proxier.Backend {
			return iptproxy.NewProxier(ipt, iptproxy.Config{Family: iptables.IPv4, ClusterCIDR: clusterCIDR,
				MasqueradeBit: 14, NodeIP: netip.MustParseAddr("192.0.2.11"),
				ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}})
		}},
		{"iptables, localhost NodePorts (KUBE-FIREWALL is kubelet's too: kept)", func(ipt iptables.Interface) proxier.Backend {
			return iptproxy.NewProxier(ipt, iptproxy.Config{Family: iptables.IPv4, ClusterCIDR: clusterCIDR,
				MasqueradeBit: 14, LocalhostNodePorts: true})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := iptables.NewFake(iptables.IPv4)
			if err := fake.Restore(ctx, []byte(foreignState)); err != nil {
				t.Fatal(err)
			}
			want := fake.Dump()
			syncOnto(t, tc.backend(fake))
			if before := fake.Dump(); !strings.Contains(before, ":KUBE-SERVICES") || !strings.Contains(before, ":KUBE-MARK-MASQ") {
				t.Fatalf("the mode programmed no KUBE-SERVICES/KUBE-MARK-MASQ: the test proves nothing:\n%s", before)
			}
			ipts := map[iptables.Family]iptables.Interface{iptables.IPv4: fake}
			if err := cleanup(ctx, ipts); err != nil {
				t.Fatalf("cleanup: %v", err)
			}
			if diff := cmp.Diff(want, fake.Dump()); diff != "" {
				t.Errorf("after cleanup (-foreign state only +got):\n%s", diff)
			}
			n := fake.RestoreCount()
			if err := cleanup(ctx, ipts); err != nil {
				t.Fatalf("second cleanup: %v", err)
			}
			if fake.RestoreCount() != n {
				t.Errorf("a second cleanup wrote:\n%s", fake.LastRestore())
			}
		})
	}
}

func TestComputeCleanup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		table iptables.Table
		saved map[iptables.Chain][]string
		want  cleanupPlan
	}{
		{
			name:  "nothing of ours",
			table: iptables.TableNAT,
			saved: map[iptables.Chain][]string{"PREROUTING": {"-j CNI-X"}, "CNI-X": nil, "KUBE-KUBELET-CANARY": nil},
			want:  cleanupPlan{},
		},
		{
			name:  "ours, with jumps from built-in chains and a comment holding -j",
			table: iptables.TableNAT,
			saved: map[iptables.Chain][]string{
				"PREROUTING":      {`-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`, "-j CNI-X"},
				"OUTPUT":          {`-m comment --comment "-j KUBE-SERVICES" -j ACCEPT`},
				"KUBE-SERVICES":   {"-d 100.100.0.10/32 -j KUBE-SVC-AAAA"},
				"KUBE-SVC-AAAA":   {"-j KUBE-SEP-BBBB"},
				"KUBE-SEP-BBBB":   {"-j KUBE-MARK-MASQ"},
				"KUBE-MARK-MASQ":  nil,
				"KPROXY-POSTROUT": nil,
				"CNI-X":           nil,
			},
			want: cleanupPlan{
				Jumps:   []string{`-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
				Deleted: []iptables.Chain{"KPROXY-POSTROUT", "KUBE-MARK-MASQ", "KUBE-SEP-BBBB", "KUBE-SERVICES", "KUBE-SVC-AAAA"},
			},
		},
		{
			name:  "a foreign chain jumps to one of ours: it and what it leads to stay",
			table: iptables.TableNAT,
			saved: map[iptables.Chain][]string{
				"POSTROUTING":   {"-j KUBE-POSTROUTING", "-j CNI-X"},
				"CNI-X":         {"-s 100.64.0.0/16 -g KUBE-SVC-AAAA"},
				"KUBE-SVC-AAAA": {"-j KUBE-SEP-BBBB"},
				"KUBE-SEP-BBBB": {"-j KUBE-MARK-MASQ"},
				"KUBE-MARK-MASQ": {
					"-j MARK --set-xmark 0x4000/0x4000",
				},
				"KUBE-POSTROUTING": {"-j MASQUERADE"},
			},
			want: cleanupPlan{
				Jumps:   []string{"-D POSTROUTING -j KUBE-POSTROUTING"},
				Deleted: []iptables.Chain{"KUBE-POSTROUTING"},
				Kept:    []iptables.Chain{"KUBE-MARK-MASQ", "KUBE-SEP-BBBB", "KUBE-SVC-AAAA"},
			},
		},
		{
			name:  "per-service prefixes are nat only; KUBE-FIREWALL is not ours",
			table: iptables.TableFilter,
			saved: map[iptables.Chain][]string{
				"INPUT":         {"-j KUBE-FIREWALL", "-j KUBE-PROXY-FIREWALL", "-j KUBE-SVC-AAAA"},
				"KUBE-FIREWALL": nil, "KUBE-PROXY-FIREWALL": nil, "KUBE-SVC-AAAA": nil,
				"KUBE-IPVS-FILTER": nil,
			},
			want: cleanupPlan{
				Jumps:   []string{"-D INPUT -j KUBE-PROXY-FIREWALL"},
				Deleted: []iptables.Chain{"KUBE-IPVS-FILTER", "KUBE-PROXY-FIREWALL"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, computeCleanup(tc.table, tc.saved)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestCleanupFlag(t *testing.T) {
	cfg, _, err := parseConfig([]string{"--cleanup"}, nil)
	if err != nil || !cfg.Cleanup {
		t.Errorf("--cleanup: Cleanup = %v, err %v", cfg.Cleanup, err)
	}
	if cfg, _, _ := parseConfig(nil, nil); cfg.Cleanup {
		t.Error("Cleanup is on without --cleanup")
	}
}
