package ipvs

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
)

// Addresses of the externalTrafficPolicy tests (TESTING.md's plan): node-1 is 192.0.2.11
// with pods in 100.64.1.0/24 behind cni0; the external client comes in on eth0.
var (
	lbIP       = netip.MustParseAddr("198.51.100.10")
	extIP      = netip.MustParseAddr("203.0.113.7")
	podIP      = netip.MustParseAddr("100.64.1.9")
	localEPIP  = netip.MustParseAddr("100.64.1.3")
	externalIP = netip.MustParseAddr("198.51.100.2")
)

// etpService is a LoadBalancer service with an externalIP and a node port.
func etpService(local bool, ranges ...string) *endpoints.ServicePort {
	sp := servicePort(portName("default", "lb", "https", v1.ProtocolTCP), "100.100.0.30", 443)
	sp.NodePort = 30443
	sp.LoadBalancerIPs = []netip.Addr{lbIP}
	sp.ExternalIPs = []netip.Addr{extIP}
	sp.ExternalPolicyLocal = local
	for _, r := range ranges {
		sp.LoadBalancerSourceRanges = append(sp.LoadBalancerSourceRanges, netip.MustParsePrefix(r))
	}
	return sp
}

func fromOutside(dst netip.Addr, port uint16) tracePacket {
	return tracePacket{src: externalIP, dst: dst, proto: v1.ProtocolTCP, dport: port, in: "eth0"}
}

func fromPod(src, dst netip.Addr, port uint16) tracePacket {
	return tracePacket{src: src, dst: dst, proto: v1.ProtocolTCP, dport: port, in: "cni0"}
}

// fromNode: the node picks the destination itself as the source of a packet to a
// kube-ipvs0 address (its local route), and its node IP for its node IP.
func fromNode(dst netip.Addr, port uint16) tracePacket {
	return tracePacket{src: dst, dst: dst, proto: v1.ProtocolTCP, dport: port}
}

// TestExternalTrafficPolicyLocalTrace: with externalTrafficPolicy=Local, traffic from
// outside to a node port, load-balancer IP or externalIP reaches only local endpoints,
// unmasqueraded; traffic from pods and from the node itself reaches every endpoint (the
// short-circuit through the ClusterIP), which upstream's IPVS mode gets wrong (kubernetes
// #71596, #93456, #75262). loadBalancerSourceRanges still apply to the short-circuit.
func TestExternalTrafficPolicyLocalTrace(t *testing.T) {
	remote := []endpoints.Endpoint{remoteEP("100.64.2.3", 8443), remoteEP("100.64.3.3", 8443)}
	mixed := []endpoints.Endpoint{readyEP("100.64.1.3", 8443), remoteEP("100.64.2.3", 8443)}
	const (
		rsLocal, rsRemote2, rsRemote3 = "100.64.1.3:8443", "100.64.2.3:8443", "100.64.3.3:8443"
	)
	tests := []struct {
		name string
		svc  *endpoints.ServicePort
		eps  []endpoints.Endpoint
		pkt  tracePacket
		want []string
	}{
		// no local endpoint
		{"outside to LB IP, no local endpoint: refused", etpService(true), remote, fromOutside(lbIP, 443), []string{"REJECT"}},
		{"outside to externalIP, no local endpoint: refused", etpService(true), remote, fromOutside(extIP, 443), []string{"REJECT"}},
		{"outside to node port, no local endpoint: refused", etpService(true), remote, fromOutside(nodeIP, 30443), []string{"REJECT"}},
		{"pod to LB IP, no local endpoint: every endpoint, source kept", etpService(true), remote, fromPod(podIP, lbIP, 443), []string{rsRemote2, rsRemote3}},
		{"pod to externalIP, no local endpoint: every endpoint", etpService(true), remote, fromPod(podIP, extIP, 443), []string{rsRemote2, rsRemote3}},
		{"pod to node port, no local endpoint: every endpoint", etpService(true), remote, fromPod(podIP, nodeIP, 30443), []string{rsRemote2, rsRemote3}},
		{"node to LB IP, no local endpoint: every endpoint, masqueraded", etpService(true), remote, fromNode(lbIP, 443), []string{rsRemote2 + " masq", rsRemote3 + " masq"}},
		{"node to externalIP, no local endpoint: every endpoint, masqueraded", etpService(true), remote, fromNode(extIP, 443), []string{rsRemote2 + " masq", rsRemote3 + " masq"}},
		{"node to node port, no local endpoint: every endpoint, masqueraded", etpService(true), remote, fromNode(nodeIP, 30443), []string{rsRemote2 + " masq", rsRemote3 + " masq"}},
		// a local endpoint
		{"outside to LB IP: the local endpoint, client IP kept", etpService(true), mixed, fromOutside(lbIP, 443), []string{rsLocal}},
		{"outside to externalIP: the local endpoint, client IP kept", etpService(true), mixed, fromOutside(extIP, 443), []string{rsLocal}},
		{"outside to node port: the local endpoint, client IP kept", etpService(true), mixed, fromOutside(nodeIP, 30443), []string{rsLocal}},
		{"pod to LB IP: every endpoint", etpService(true), mixed, fromPod(podIP, lbIP, 443), []string{rsLocal, rsRemote2}},
		{"the endpoint to its own LB IP: hairpin masquerade", etpService(true), mixed, fromPod(localEPIP, lbIP, 443), []string{rsLocal + " masq", rsRemote2}},
		// externalTrafficPolicy=Cluster is upstream's: everything masqueraded, every endpoint
		{"cluster policy, outside to LB IP", etpService(false), mixed, fromOutside(lbIP, 443), []string{rsLocal + " masq", rsRemote2 + " masq"}},
		{"cluster policy, outside to node port", etpService(false), mixed, fromOutside(nodeIP, 30443), []string{rsLocal + " masq", rsRemote2 + " masq"}},
		{"cluster policy, pod to LB IP", etpService(false), mixed, fromPod(podIP, lbIP, 443), []string{rsLocal + " masq", rsRemote2 + " masq"}},
		// loadBalancerSourceRanges: the short-circuit does not open the firewall
		{"source ranges without the pod: pod to LB IP dropped", etpService(true, "198.51.100.0/24"), remote, fromPod(podIP, lbIP, 443), []string{"DROP"}},
		{"source ranges with the pod CIDR: pod to LB IP, every endpoint", etpService(true, "198.51.100.0/24", "100.64.0.0/16"), remote, fromPod(podIP, lbIP, 443), []string{rsRemote2, rsRemote3}},
		{"source ranges without the node: node to LB IP dropped", etpService(true, "198.51.100.0/24"), mixed, fromNode(lbIP, 443), []string{"DROP"}},
		{"source ranges with the node: node to LB IP, every endpoint", etpService(true, "192.0.2.0/24"), remote, fromNode(lbIP, 443), []string{rsRemote2 + " masq", rsRemote3 + " masq"}},
		{"source ranges: outside client allowed, local endpoint", etpService(true, "198.51.100.0/24"), mixed, fromOutside(lbIP, 443), []string{rsLocal}},
		{"source ranges: outside client allowed, pod CIDR not: pod to externalIP unaffected", etpService(true, "198.51.100.0/24"), remote, fromPod(podIP, extIP, 443), []string{rsRemote2, rsRemote3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			plan := ComputePlan(newWorld().svc(tc.svc, tc.eps...).input(cfg))
			got := newTraceEnv(t, plan, cfg, nodeIP).trace(tc.pkt)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tc.pkt, diff)
			}
		})
	}
}

// TestShortcutWithoutLocalDetector: with no way to tell pod traffic (no --cluster-cidr),
// pod traffic is external traffic, as upstream; the node still reaches every endpoint.
func TestShortcutWithoutLocalDetector(t *testing.T) {
	cfg := testConfig()
	cfg.ClusterCIDR = netip.Prefix{}
	remote := []endpoints.Endpoint{remoteEP("100.64.2.3", 8443)}
	plan := ComputePlan(newWorld().svc(etpService(true), remote...).input(cfg))
	env := newTraceEnv(t, plan, cfg, nodeIP)
	if got := env.trace(fromPod(podIP, lbIP, 443)); !cmp.Equal(got, []string{"REJECT"}) {
		t.Errorf("pod to LB IP = %v, want [REJECT]", got)
	}
	if got := env.trace(fromNode(lbIP, 443)); !cmp.Equal(got, []string{"100.64.2.3:8443 masq"}) {
		t.Errorf("node to LB IP = %v", got)
	}
}

// TestShortcutDNATRules: the rules the short-circuit writes, as iptables-save prints them
// (the lines below were read back from iptables 1.8.9, nf_tables).
func TestShortcutDNATRules(t *testing.T) {
	cfg := testConfig()
	plan := ComputePlan(newWorld().svc(etpService(true, "198.51.100.0/24"), remoteEP("100.64.2.3", 8443)).input(cfg))
	var got []string
	for _, c := range plan.Chains {
		if c.Chain != chainExtShortcut && c.Chain != chainExtToClusterIP {
			continue
		}
		for _, r := range c.Rules {
			got = append(got, "-A "+string(c.Chain)+" "+canonicalRule(cfg.Family, c.Table, r))
		}
	}
	want := []string{
		`-A KPROXY-EXT-SHORTCUT -m comment --comment "kproxy: loadBalancerSourceRanges still apply" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -m set ! --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -m set ! --match-set KUBE-LOAD-BALANCER-SOURCE-IP dst,dst,src -j RETURN`,
		`-A KPROXY-EXT-SHORTCUT -s 198.51.100.10/32 -d 198.51.100.10/32 -p tcp -m tcp --dport 443 -m comment --comment "kproxy: loadBalancerSourceRanges still apply" -j RETURN`,
		`-A KPROXY-EXT-SHORTCUT -s 100.64.0.0/16 -m comment --comment "kproxy: pod traffic to externalTrafficPolicy=Local addresses uses every endpoint" -j KPROXY-EXT-TO-CLUSTERIP`,
		`-A KPROXY-EXT-SHORTCUT -m comment --comment "kproxy: node traffic to externalTrafficPolicy=Local addresses uses every endpoint" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`,
		`-A KPROXY-EXT-SHORTCUT -m addrtype --src-type LOCAL -j KPROXY-EXT-TO-CLUSTERIP`,
		`-A KPROXY-EXT-TO-CLUSTERIP -d 192.0.2.11/32 -p tcp -m tcp --dport 30443 -m comment --comment "default/lb:https" -j DNAT --to-destination 100.100.0.30:443`,
		`-A KPROXY-EXT-TO-CLUSTERIP -d 198.51.100.10/32 -p tcp -m tcp --dport 443 -m comment --comment "default/lb:https" -j DNAT --to-destination 100.100.0.30:443`,
		`-A KPROXY-EXT-TO-CLUSTERIP -d 203.0.113.7/32 -p tcp -m tcp --dport 443 -m comment --comment "default/lb:https" -j DNAT --to-destination 100.100.0.30:443`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("short-circuit rules (-want +got):\n%s", diff)
	}
}

// TestNoShortcutForClusterPolicy: externalTrafficPolicy=Cluster writes no short-circuit.
func TestNoShortcutForClusterPolicy(t *testing.T) {
	plan := ComputePlan(newWorld().svc(etpService(false), remoteEP("100.64.2.3", 8443)).input(testConfig()))
	for _, c := range plan.Chains {
		if (c.Chain == chainExtShortcut || c.Chain == chainExtToClusterIP) && len(c.Rules) > 0 {
			t.Errorf("%s has rules: %v", c.Chain, c.Rules)
		}
		for _, r := range c.Rules {
			if slices.Contains(r, string(chainExtShortcut)) {
				t.Errorf("%s jumps to the short-circuit: %v", c.Chain, r)
			}
		}
	}
}
