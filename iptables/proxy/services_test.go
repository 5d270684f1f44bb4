package proxy

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

var (
	loopback   = netip.MustParseAddr("127.0.0.1")
	secondIP   = netip.MustParseAddr("192.0.2.99") // another local address of the node
	localAddrs = []netip.Addr{nodeIP, secondIP, loopback}
	remotePod  = netip.MustParseAddr("100.64.2.5")
)

// probe is one first packet and where it enters the node.
type probe struct {
	src, dst netip.Addr
	proto    iptables.Protocol
	port     int
	hook     iptables.Hook
	iface    string
}

func fromOutside(dst netip.Addr, port int) probe {
	return probe{src: externalIP, dst: dst, proto: iptables.ProtocolTCP, port: port, hook: iptables.HookPrerouting, iface: "eth0"}
}

func fromPod(dst netip.Addr, port int) probe {
	return probe{src: podIP, dst: dst, proto: iptables.ProtocolTCP, port: port, hook: iptables.HookPrerouting, iface: "veth1"}
}

func fromNode(dst netip.Addr, port int) probe {
	return probe{src: nodeIP, dst: dst, proto: iptables.ProtocolTCP, port: port, hook: iptables.HookOutput}
}

func (pr probe) from(src netip.Addr) probe { pr.src = src; return pr }

func (pr probe) proto_(p iptables.Protocol) probe { pr.proto = p; return pr }

func traceProbe(t *testing.T, f *iptables.Fake, pr probe) []iptables.Outcome {
	t.Helper()
	out, err := iptables.Trace(f, iptables.Packet{Src: pr.src, Dst: pr.dst, Protocol: pr.proto, DstPort: pr.port, InIface: pr.iface}, pr.hook, localAddrs)
	if err != nil {
		t.Fatalf("Trace: %v", err)
	}
	return out
}

var dropped = []iptables.Outcome{{Verdict: iptables.VerdictDrop}}

// localAndRemote is a service port's endpoints: one on this node, two on node-2.
func localAndRemote() []endpoints.Endpoint {
	return []endpoints.Endpoint{readyEP("100.64.1.10", 8080), remoteEP("100.64.2.10", 8080), remoteEP("100.64.2.11", 8080)}
}

var allDests = []string{"100.64.1.10:8080", "100.64.2.10:8080", "100.64.2.11:8080"}

type trafficCase struct {
	name  string
	cfg   *Config // nil: ClusterCIDR detection
	sp    *endpoints.ServicePort
	eps   []endpoints.Endpoint
	probe probe
	want  []iptables.Outcome
}

func runTrafficCases(t *testing.T, cases []trafficCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{ClusterCIDR: clusterCIDR, NodeIP: nodeIP}
			if tc.cfg != nil {
				cfg = *tc.cfg
			}
			f := iptables.NewFake(cfg.Family)
			p := NewProxier(f, cfg)
			if err := p.Apply(context.Background(), newWorld().add(tc.sp, tc.eps...).snapshot(), testNode, true); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if diff := cmp.Diff(tc.want, traceProbe(t, f, tc.probe)); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNodePortTraffic(t *testing.T) {
	np := func(opts ...spOpt) *endpoints.ServicePort {
		return svc(svc1Port, "100.100.0.10", append([]spOpt{nodePort(30080)}, opts...)...)
	}
	restricted := Config{ClusterCIDR: clusterCIDR, NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/32")},
		InterfaceAddrs: func() ([]netip.Addr, error) { return localAddrs, nil }}
	localhost := Config{ClusterCIDR: clusterCIDR, LocalhostNodePorts: true}
	runTrafficCases(t, []trafficCase{
		{name: "external client: every endpoint, masqueraded", sp: np(), eps: localAndRemote(), probe: fromOutside(nodeIP, 30080), want: accepted(true, allDests...)},
		{name: "on every local address", sp: np(), eps: localAndRemote(), probe: fromOutside(secondIP, 30080), want: accepted(true, allDests...)},
		{name: "from a pod: masqueraded too", sp: np(), eps: localAndRemote(), probe: fromPod(nodeIP, 30080), want: accepted(true, allDests...)},
		{name: "from the node", sp: np(), eps: localAndRemote(), probe: fromNode(nodeIP, 30080), want: accepted(true, allDests...)},
		{name: "not on localhost by default", sp: np(), eps: localAndRemote(), probe: fromNode(loopback, 30080).from(loopback), want: accepted(false, "")},
		{name: "on localhost when opted in", cfg: &localhost, sp: np(), eps: localAndRemote(), probe: fromNode(loopback, 30080).from(loopback), want: accepted(true, allDests...)},
		{name: "nodeport-addresses: on the listed address", cfg: &restricted, sp: np(), eps: localAndRemote(), probe: fromOutside(nodeIP, 30080), want: accepted(true, allDests...)},
		{name: "nodeport-addresses: not on another local address", cfg: &restricted, sp: np(), eps: localAndRemote(), probe: fromOutside(secondIP, 30080), want: accepted(false, "")},
		{name: "no endpoints: rejected", sp: np(), probe: fromOutside(nodeIP, 30080), want: rejected},
		{name: "no endpoints: rejected from the node", sp: np(), probe: fromNode(nodeIP, 30080), want: rejected},
		{name: "SCTP node port", sp: svc(portName("ns1", "svc1", "p80", v1.ProtocolSCTP), "100.100.0.10", nodePort(30080)),
			eps: localAndRemote(), probe: fromOutside(nodeIP, 30080).proto_(iptables.ProtocolSCTP), want: accepted(true, allDests...)},
		{name: "TCP node port does not take UDP", sp: np(), eps: localAndRemote(), probe: fromOutside(nodeIP, 30080).proto_(iptables.ProtocolUDP), want: accepted(false, "")},
		{
			name: "ETP Local: external client keeps its source, local endpoints only",
			sp:   np(etpLocal(30999)), eps: localAndRemote(), probe: fromOutside(nodeIP, 30080), want: accepted(false, "100.64.1.10:8080"),
		},
		{
			name: "ETP Local: pods short-circuit to every endpoint",
			sp:   np(etpLocal(30999)), eps: localAndRemote(), probe: fromPod(nodeIP, 30080), want: accepted(false, allDests...),
		},
		{
			name: "ETP Local: the node is masqueraded, every endpoint",
			sp:   np(etpLocal(30999)), eps: localAndRemote(), probe: fromNode(nodeIP, 30080), want: accepted(true, allDests...),
		},
		{
			name: "ETP Local without local endpoints: external traffic dropped",
			sp:   np(etpLocal(30999)), eps: localAndRemote()[1:], probe: fromOutside(nodeIP, 30080), want: dropped,
		},
		{
			name: "ETP Local without local endpoints: pods still short-circuit",
			sp:   np(etpLocal(30999)), eps: localAndRemote()[1:], probe: fromPod(nodeIP, 30080), want: accepted(false, allDests[1:]...),
		},
		{
			name: "health check node port accepted",
			sp:   np(etpLocal(30999)), eps: localAndRemote()[1:], probe: fromOutside(nodeIP, 30999), want: accepted(false, ""),
		},
	})
}

func TestExternalAddressTraffic(t *testing.T) {
	lb := func(opts ...spOpt) *endpoints.ServicePort {
		return svc(svc1Port, "100.100.0.10", append([]spOpt{nodePort(30080), lbIPs(lbIP.String())}, opts...)...)
	}
	ext := func(opts ...spOpt) *endpoints.ServicePort {
		return svc(svc1Port, "100.100.0.10", append([]spOpt{externalIPs(extIP.String())}, opts...)...)
	}
	runTrafficCases(t, []trafficCase{
		{name: "LB IP: external client, masqueraded", sp: lb(), eps: localAndRemote(), probe: fromOutside(lbIP, 80), want: accepted(true, allDests...)},
		{name: "LB IP: another port is not captured", sp: lb(), eps: localAndRemote(), probe: fromOutside(lbIP, 81), want: accepted(false, "")},
		{name: "LB IP: no endpoints rejected", sp: lb(), probe: fromOutside(lbIP, 80), want: rejected},
		{name: "LB IP: ETP Local keeps the source", sp: lb(etpLocal(30999)), eps: localAndRemote(), probe: fromOutside(lbIP, 80), want: accepted(false, "100.64.1.10:8080")},
		{name: "LB IP: ETP Local without local endpoints dropped", sp: lb(etpLocal(30999)), eps: localAndRemote()[1:], probe: fromOutside(lbIP, 80), want: dropped},
		{name: "LB IP: ETP Local, pod short-circuits", sp: lb(etpLocal(30999)), eps: localAndRemote(), probe: fromPod(lbIP, 80), want: accepted(false, allDests...)},
		{name: "externalIP: external client, masqueraded", sp: ext(), eps: localAndRemote(), probe: fromOutside(extIP, 80), want: accepted(true, allDests...)},
		{name: "externalIP: from the node", sp: ext(), eps: localAndRemote(), probe: fromNode(extIP, 80), want: accepted(true, allDests...)},
		{name: "externalIP: no endpoints rejected", sp: ext(), probe: fromOutside(extIP, 80), want: rejected},
		{name: "externalIP: ETP Local", sp: ext(etpLocal(30999)), eps: localAndRemote(), probe: fromOutside(extIP, 80), want: accepted(false, "100.64.1.10:8080")},
		{name: "externalIP: ETP Local without local endpoints dropped", sp: ext(etpLocal(30999)), eps: localAndRemote()[1:], probe: fromOutside(extIP, 80), want: dropped},
		{name: "ClusterIP of an ETP Local service uses every endpoint", sp: ext(etpLocal(30999)), eps: localAndRemote(), probe: fromPod(svc1IP, 80), want: accepted(false, allDests...)},
	})
}

func TestSourceRanges(t *testing.T) {
	fw := func(ranges ...string) *endpoints.ServicePort {
		return svc(svc1Port, "100.100.0.10", nodePort(30080), lbIPs(lbIP.String()), sourceRanges(ranges...))
	}
	runTrafficCases(t, []trafficCase{
		{name: "allowed source", sp: fw("198.51.100.0/28"), eps: localAndRemote(), probe: fromOutside(lbIP, 80).from(allowedIP), want: accepted(true, allDests...)},
		{name: "other source dropped", sp: fw("198.51.100.0/28"), eps: localAndRemote(), probe: fromOutside(lbIP, 80).from(deniedIP), want: dropped},
		{name: "node port is not filtered (upstream)", sp: fw("198.51.100.0/28"), eps: localAndRemote(), probe: fromOutside(nodeIP, 30080).from(deniedIP), want: accepted(true, allDests...)},
		{name: "range with the node IP lets the LB IP in", sp: fw("192.0.2.0/24"), eps: localAndRemote(), probe: fromOutside(lbIP, 80).from(lbIP), want: accepted(true, allDests...)},
		{name: "range without the node IP does not", sp: fw("198.51.100.0/28"), eps: localAndRemote(), probe: fromOutside(lbIP, 80).from(lbIP), want: dropped},
		{name: "no endpoints: rejected whatever the source", sp: fw("198.51.100.0/28"), probe: fromOutside(lbIP, 80).from(allowedIP), want: rejected},
	})
}

func TestSessionAffinityTraffic(t *testing.T) {
	runTrafficCases(t, []trafficCase{
		{name: "ClientIP: every endpoint possible on a first packet", sp: svc(svc1Port, "100.100.0.10", affinity(3*time.Hour)), eps: localAndRemote(), probe: fromPod(svc1IP, 80), want: accepted(false, allDests...)},
		{name: "ClientIP with ITP Local", sp: svc(svc1Port, "100.100.0.10", affinity(10*time.Second), itpLocal()), eps: localAndRemote(), probe: fromPod(svc1IP, 80), want: accepted(false, "100.64.1.10:8080")},
	})
}

func TestLocalDetectors(t *testing.T) {
	bridge := Config{LocalDetector: LocalDetector{BridgeInterface: "cni0"}}
	prefix := Config{LocalDetector: LocalDetector{InterfaceNamePrefix: "veth"}}
	nodeCIDR := Config{LocalDetector: LocalDetector{CIDR: netip.MustParsePrefix("100.64.1.0/24")}}
	onBridge := fromPod(svc1IP, 80)
	onBridge.iface = "cni0"
	cluster := svc(svc1Port, "100.100.0.10")
	lbLocal := svc(svc1Port, "100.100.0.10", nodePort(30080), lbIPs(lbIP.String()), etpLocal(30999))
	runTrafficCases(t, []trafficCase{
		{name: "bridge: pod on the bridge not masqueraded", cfg: &bridge, sp: cluster, eps: localAndRemote(), probe: onBridge, want: accepted(false, allDests...)},
		{name: "bridge: other interface masqueraded", cfg: &bridge, sp: cluster, eps: localAndRemote(), probe: fromOutside(svc1IP, 80), want: accepted(true, allDests...)},
		{name: "bridge: the node masqueraded", cfg: &bridge, sp: cluster, eps: localAndRemote(), probe: fromNode(svc1IP, 80), want: accepted(true, allDests...)},
		{name: "bridge: ETP Local short-circuit for pods", cfg: &bridge, sp: lbLocal, eps: localAndRemote(), probe: func() probe { p := onBridge; p.dst = lbIP; return p }(), want: accepted(false, allDests...)},
		{name: "prefix: veth pod not masqueraded", cfg: &prefix, sp: cluster, eps: localAndRemote(), probe: fromPod(svc1IP, 80), want: accepted(false, allDests...)},
		{name: "prefix: eth0 masqueraded", cfg: &prefix, sp: cluster, eps: localAndRemote(), probe: fromOutside(svc1IP, 80), want: accepted(true, allDests...)},
		{name: "node CIDR: this node's pod not masqueraded", cfg: &nodeCIDR, sp: cluster, eps: localAndRemote(), probe: fromPod(svc1IP, 80), want: accepted(false, allDests...)},
		{name: "node CIDR: another node's pod masqueraded", cfg: &nodeCIDR, sp: cluster, eps: localAndRemote(), probe: fromPod(svc1IP, 80).from(remotePod), want: accepted(true, allDests...)},
		{name: "no detector: external not masqueraded", cfg: &Config{}, sp: cluster, eps: localAndRemote(), probe: fromOutside(svc1IP, 80), want: accepted(false, allDests...)},
	})
}

func TestServiceCIDRReject(t *testing.T) {
	cfg := Config{ClusterCIDR: clusterCIDR, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}}
	runTrafficCases(t, []trafficCase{
		{name: "other port of a ClusterIP", cfg: &cfg, sp: svc(svc1Port, "100.100.0.10"), eps: localAndRemote(), probe: fromPod(svc1IP, 81), want: rejected},
		{name: "unallocated address", cfg: &cfg, sp: svc(svc1Port, "100.100.0.10"), eps: localAndRemote(), probe: fromPod(netip.MustParseAddr("100.100.9.9"), 80), want: rejected},
		{name: "service port still works", cfg: &cfg, sp: svc(svc1Port, "100.100.0.10"), eps: localAndRemote(), probe: fromPod(svc1IP, 80), want: accepted(false, allDests...)},
		{name: "pod to pod untouched", cfg: &cfg, sp: svc(svc1Port, "100.100.0.10"), eps: localAndRemote(), probe: fromPod(remotePod, 80), want: accepted(false, "")},
	})
}

func TestNoLocalEndpointCounts(t *testing.T) {
	w := newWorld().
		add(svc(portName("ns1", "a", "", v1.ProtocolTCP), "100.100.0.1", itpLocal()), remoteEP("100.64.2.1", 80)).
		add(svc(portName("ns1", "b", "", v1.ProtocolTCP), "100.100.0.2", nodePort(30001), etpLocal(30998)), remoteEP("100.64.2.2", 80)).
		add(svc(portName("ns1", "c", "", v1.ProtocolTCP), "100.100.0.3", nodePort(30002), etpLocal(30997), itpLocal()), remoteEP("100.64.2.3", 80)).
		add(svc(portName("ns1", "d", "", v1.ProtocolTCP), "100.100.0.4", nodePort(30003), etpLocal(30996)))
	h := newHarness(t, Config{ClusterCIDR: clusterCIDR})
	h.apply(w, true)
	got := h.proxy.LastRuleCount()
	if got.NoLocalEndpointsInternal != 2 || got.NoLocalEndpointsExternal != 2 {
		t.Errorf("no local endpoints internal=%d external=%d, want 2 and 2", got.NoLocalEndpointsInternal, got.NoLocalEndpointsExternal)
	}
}
