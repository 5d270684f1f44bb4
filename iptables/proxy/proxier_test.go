package proxy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/iptables"
)

var (
	podIP      = netip.MustParseAddr("100.64.1.5")
	externalIP = netip.MustParseAddr("198.51.100.7")
	svc1IP     = netip.MustParseAddr("100.100.0.10")
)

// harness is a Proxier over a Fake, with the node's local addresses for the tracer.
type harness struct {
	t     *testing.T
	fake  *iptables.Fake
	proxy *Proxier
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	f := iptables.NewFake(cfg.Family)
	return &harness{t: t, fake: f, proxy: NewProxier(f, cfg)}
}

// apply syncs w; a partial sync reports every service of w as changed (an idle sync, with
// nothing changed, is applyIdle).
func (h *harness) apply(w *world, full bool) {
	h.t.Helper()
	snap := w.snapshot()
	if !full {
		snap = w.changedSnapshot()
	}
	if err := h.proxy.Apply(context.Background(), snap, testNode, full); err != nil {
		h.t.Fatalf("Apply: %v", err)
	}
}

// trace sends the first packet of a connection to dst:port and returns the outcomes.
func (h *harness) trace(src, dst netip.Addr, proto iptables.Protocol, port int, hook iptables.Hook) []iptables.Outcome {
	h.t.Helper()
	out, err := iptables.Trace(h.fake, iptables.Packet{Src: src, Dst: dst, Protocol: proto, DstPort: port}, hook, []netip.Addr{nodeIP})
	if err != nil {
		h.t.Fatalf("Trace: %v", err)
	}
	return out
}

func accepted(masq bool, dests ...string) []iptables.Outcome {
	var out []iptables.Outcome
	for _, d := range dests {
		out = append(out, iptables.Outcome{DNAT: d, Masquerade: masq, Verdict: iptables.VerdictAccept})
	}
	return out
}

func threeEndpoints() *world {
	return newWorld().add(servicePort(svc1Port, "100.100.0.10", 80),
		readyEP("100.64.1.10", 8080), readyEP("100.64.1.11", 8080), readyEP("100.64.2.10", 8080))
}

var rejected = []iptables.Outcome{{Verdict: iptables.VerdictReject}}

var threeDests = []string{"100.64.1.10:8080", "100.64.1.11:8080", "100.64.2.10:8080"}

func TestClusterIPTraffic(t *testing.T) {
	withCIDR := Config{ClusterCIDR: clusterCIDR}
	cases := []struct {
		name  string
		cfg   Config
		world *world
		src   netip.Addr
		proto iptables.Protocol
		port  int
		hook  iptables.Hook
		want  []iptables.Outcome
	}{
		{"pod reaches every endpoint, source kept", withCIDR, threeEndpoints(), podIP, iptables.ProtocolTCP, 80, iptables.HookPrerouting, accepted(false, threeDests...)},
		{"node is masqueraded", withCIDR, threeEndpoints(), nodeIP, iptables.ProtocolTCP, 80, iptables.HookOutput, accepted(true, threeDests...)},
		{"external client is masqueraded", withCIDR, threeEndpoints(), externalIP, iptables.ProtocolTCP, 80, iptables.HookPrerouting, accepted(true, threeDests...)},
		{
			name: "hairpin: a pod reaching itself is masqueraded, other endpoints not",
			cfg:  withCIDR, world: threeEndpoints(), src: netip.MustParseAddr("100.64.1.11"),
			proto: iptables.ProtocolTCP, port: 80, hook: iptables.HookPrerouting,
			want: []iptables.Outcome{
				{DNAT: "100.64.1.10:8080", Verdict: iptables.VerdictAccept},
				{DNAT: "100.64.1.11:8080", Masquerade: true, Verdict: iptables.VerdictAccept},
				{DNAT: "100.64.2.10:8080", Verdict: iptables.VerdictAccept},
			},
		},
		{"masquerade-all masquerades pods", Config{ClusterCIDR: clusterCIDR, MasqueradeAll: true}, threeEndpoints(), podIP, iptables.ProtocolTCP, 80, iptables.HookPrerouting, accepted(true, threeDests...)},
		{"masquerade-all without a cluster CIDR", Config{MasqueradeAll: true}, threeEndpoints(), podIP, iptables.ProtocolTCP, 80, iptables.HookPrerouting, accepted(true, threeDests...)},
		{"no cluster CIDR: the node is not masqueraded", Config{}, threeEndpoints(), nodeIP, iptables.ProtocolTCP, 80, iptables.HookOutput, accepted(false, threeDests...)},
		{"no cluster CIDR: hairpin still is", Config{}, oneService(), netip.MustParseAddr("100.64.1.10"), iptables.ProtocolTCP, 80, iptables.HookPrerouting, accepted(true, "100.64.1.10:8080")},
		{"a port the service does not have is rejected", withCIDR, threeEndpoints(), podIP, iptables.ProtocolTCP, 81, iptables.HookPrerouting, rejected},
		{"another protocol on the service port is rejected", withCIDR, threeEndpoints(), podIP, iptables.ProtocolUDP, 80, iptables.HookPrerouting, rejected},
		{"a port the service does not have is rejected from the node", withCIDR, threeEndpoints(), nodeIP, iptables.ProtocolTCP, 81, iptables.HookOutput, rejected},
		{
			name: "no endpoints: rejected from a pod",
			cfg:  withCIDR, world: newWorld().add(servicePort(svc1Port, "100.100.0.10", 80), notReadyEP("100.64.1.10", 8080)),
			src: podIP, proto: iptables.ProtocolTCP, port: 80, hook: iptables.HookPrerouting,
			want: []iptables.Outcome{{Verdict: iptables.VerdictReject}},
		},
		{
			name: "no endpoints: rejected from the node",
			cfg:  withCIDR, world: newWorld().add(servicePort(svc1Port, "100.100.0.10", 80)),
			src: nodeIP, proto: iptables.ProtocolTCP, port: 80, hook: iptables.HookOutput,
			want: []iptables.Outcome{{Verdict: iptables.VerdictReject}},
		},
		{
			name: "internalTrafficPolicy Local: only this node's endpoints",
			cfg:  withCIDR, world: newWorld().add(localOnly(servicePort(svc1Port, "100.100.0.10", 80)),
				readyEP("100.64.1.10", 8080), remoteEP("100.64.2.10", 8080)),
			src: podIP, proto: iptables.ProtocolTCP, port: 80, hook: iptables.HookPrerouting,
			want: accepted(false, "100.64.1.10:8080"),
		},
		{
			name: "internalTrafficPolicy Local without a local endpoint: dropped, not rejected",
			cfg:  withCIDR, world: newWorld().add(localOnly(servicePort(svc1Port, "100.100.0.10", 80)), remoteEP("100.64.2.10", 8080)),
			src: podIP, proto: iptables.ProtocolTCP, port: 80, hook: iptables.HookPrerouting,
			want: []iptables.Outcome{{Verdict: iptables.VerdictDrop}},
		},
		{
			name: "zone hints narrow the endpoints to the node's zone",
			cfg:  withCIDR, world: newWorld().add(servicePort(svc1Port, "100.100.0.10", 80),
				zoneEP("100.64.2.10", 8080, "zone-a"), zoneEP("100.64.3.10", 8080, "zone-b")),
			src: podIP, proto: iptables.ProtocolTCP, port: 80, hook: iptables.HookPrerouting,
			want: accepted(false, "100.64.2.10:8080"),
		},
		{
			name: "only terminating endpoints: the serving ones are used",
			cfg:  withCIDR, world: newWorld().add(servicePort(svc1Port, "100.100.0.10", 80),
				terminatingEP("100.64.1.10", 8080, true), terminatingEP("100.64.1.11", 8080, false)),
			src: podIP, proto: iptables.ProtocolTCP, port: 80, hook: iptables.HookPrerouting,
			want: accepted(false, "100.64.1.10:8080"),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			h.apply(tc.world, true)
			got := h.trace(tc.src, svc1IP, tc.proto, tc.port, tc.hook)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
		})
	}
}

// The same port number over UDP and TCP reaches each protocol's own endpoints.
func TestMultiportTwoProtocols(t *testing.T) {
	h := newHarness(t, Config{ClusterCIDR: clusterCIDR})
	dnsIP := netip.MustParseAddr("100.100.0.53")
	h.apply(newWorld().
		add(servicePort(dnsUDP, "100.100.0.53", 53), readyEP("100.64.1.20", 5353)).
		add(servicePort(dnsTCP, "100.100.0.53", 53), readyEP("100.64.1.21", 5353)).
		add(servicePort(metrics, "100.100.0.53", 9153), readyEP("100.64.1.20", 9153)), true)
	for _, c := range []struct {
		proto iptables.Protocol
		port  int
		want  string
	}{
		{iptables.ProtocolUDP, 53, "100.64.1.20:5353"},
		{iptables.ProtocolTCP, 53, "100.64.1.21:5353"},
		{iptables.ProtocolTCP, 9153, "100.64.1.20:9153"},
		{iptables.ProtocolUDP, 9153, ""},
	} {
		got := h.trace(podIP, dnsIP, c.proto, c.port, iptables.HookPrerouting)
		want := accepted(false, c.want)
		if c.want == "" {
			want = rejected
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s %d (-want +got):\n%s", c.proto, c.port, diff)
		}
	}
}

// userChains returns the nat chains with prefix in the fake.
func userChains(t *testing.T, f *iptables.Fake, prefix string) []iptables.Chain {
	t.Helper()
	data, err := f.Save(context.Background(), iptables.TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := iptables.ParseSave(data, iptables.TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	var out []iptables.Chain
	for c := range chains {
		if strings.HasPrefix(string(c), prefix) {
			out = append(out, c)
		}
	}
	return sortedChains(out)
}

func sortedChains(cs []iptables.Chain) []iptables.Chain {
	for i := range cs {
		for j := i + 1; j < len(cs); j++ {
			if cs[j] < cs[i] {
				cs[i], cs[j] = cs[j], cs[i]
			}
		}
	}
	return cs
}

func TestEndpointAndServiceRemoval(t *testing.T) {
	for _, full := range []bool{false, true} {
		name := "partial"
		if full {
			name = "full"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, Config{ClusterCIDR: clusterCIDR})
			h.apply(threeEndpoints(), true)
			if got := len(userChains(t, h.fake, "KUBE-SEP-")); got != 3 {
				t.Fatalf("%d KUBE-SEP chains after the first sync, want 3", got)
			}
			removed := endpointChainName(svc1Port, "tcp", readyEP("100.64.1.11", 8080))

			h.apply(newWorld().add(servicePort(svc1Port, "100.100.0.10", 80),
				readyEP("100.64.1.10", 8080), readyEP("100.64.2.10", 8080)), full)
			if got := userChains(t, h.fake, "KUBE-SEP-"); len(got) != 2 || contains(got, removed) {
				t.Errorf("KUBE-SEP chains after removing 100.64.1.11 = %v, want 2 without %s", got, removed)
			}
			got := h.trace(podIP, svc1IP, iptables.ProtocolTCP, 80, iptables.HookPrerouting)
			if diff := cmp.Diff(accepted(false, "100.64.1.10:8080", "100.64.2.10:8080"), got); diff != "" {
				t.Errorf("after endpoint removal (-want +got):\n%s", diff)
			}

			h.apply(newWorld(), full)
			if got := append(userChains(t, h.fake, "KUBE-SVC-"), userChains(t, h.fake, "KUBE-SEP-")...); len(got) != 0 {
				t.Errorf("per-service chains after deleting the service: %v", got)
			}
			got = h.trace(podIP, svc1IP, iptables.ProtocolTCP, 80, iptables.HookPrerouting)
			if diff := cmp.Diff(accepted(false, ""), got); diff != "" {
				t.Errorf("after service removal (-want +got):\n%s", diff)
			}
		})
	}
}

// A sync with nothing changed writes nothing, partial or full, and a restarted proxier's
// first (full) sync writes nothing either.
func TestNoChangeWritesNothing(t *testing.T) {
	h := newHarness(t, Config{ClusterCIDR: clusterCIDR})
	h.apply(threeEndpoints(), true)
	dump, restores := h.fake.Dump(), h.fake.RestoreCount()
	if restores != 1 {
		t.Fatalf("first sync did %d restores, want 1", restores)
	}
	h.apply(threeEndpoints(), false)
	h.apply(threeEndpoints(), true)
	restarted := NewProxier(h.fake, Config{ClusterCIDR: clusterCIDR})
	if err := restarted.Apply(context.Background(), threeEndpoints().snapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(dump, h.fake.Dump()); diff != "" {
		t.Errorf("Dump changed (-first +now):\n%s", diff)
	}
	if got := h.fake.RestoreCount(); got != restores {
		t.Errorf("%d restores after three syncs with no change, want none", got-restores)
	}
}

// A change to one service rewrites that service's chains and KUBE-SERVICES only when needed.
func TestPartialSyncWritesOnlyChangedChains(t *testing.T) {
	h := newHarness(t, Config{ClusterCIDR: clusterCIDR})
	w := threeEndpoints().add(servicePort(dnsUDP, "100.100.0.53", 53), readyEP("100.64.1.20", 53))
	h.apply(w, true)
	w.add(servicePort(dnsUDP, "100.100.0.53", 53), readyEP("100.64.1.20", 53), readyEP("100.64.1.21", 53))
	h.apply(w, false)
	payload := string(h.fake.LastRestore())
	svcChain := serviceChainName(dnsUDP, "udp")
	newSEP := endpointChainName(dnsUDP, "udp", readyEP("100.64.1.21", 53))
	wantDecls := ":" + string(svcChain) + " - [0:0]\n:" + string(newSEP) + " - [0:0]\n"
	if !strings.HasPrefix(payload, "*nat\n"+wantDecls+"-A ") {
		t.Errorf("partial sync payload declares more than the changed service's chains:\n%s", payload)
	}
	got := h.trace(podIP, netip.MustParseAddr("100.100.0.53"), iptables.ProtocolUDP, 53, iptables.HookPrerouting)
	if diff := cmp.Diff(accepted(false, "100.64.1.20:53", "100.64.1.21:53"), got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// The proxier deletes stale per-service chains (its own and upstream kube-proxy's) and leaves
// every chain it does not own alone.
func TestOwnsOnlyItsChains(t *testing.T) {
	h := newHarness(t, Config{ClusterCIDR: clusterCIDR})
	foreign := `*nat
:DOCKER - [0:0]
:KUBE-FOO - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-SVC-OLDOLDOLDOLDOLDO - [0:0]
:KUBE-SEP-OLDOLDOLDOLDOLDO - [0:0]
:KUBE-EXT-OLDOLDOLDOLDOLDO - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER -d 192.0.2.11/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 172.17.0.2:443
-A KUBE-FOO -j RETURN
-A KUBE-NODEPORTS -p tcp -m tcp --dport 30080 -j KUBE-EXT-OLDOLDOLDOLDOLDO
-A KUBE-EXT-OLDOLDOLDOLDOLDO -j KUBE-SVC-OLDOLDOLDOLDOLDO
-A KUBE-SVC-OLDOLDOLDOLDOLDO -j KUBE-SEP-OLDOLDOLDOLDOLDO
-A KUBE-SEP-OLDOLDOLDOLDOLDO -p tcp -j DNAT --to-destination 100.64.9.9:80
COMMIT
*filter
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
`
	if err := h.fake.Restore(context.Background(), []byte(foreign)); err != nil {
		t.Fatal(err)
	}
	h.apply(oneService(), true)
	dump := h.fake.Dump()
	for _, want := range []string{
		"-A DOCKER -d 192.0.2.11/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 172.17.0.2:443\n",
		"-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n",
		"-A KUBE-FOO -j RETURN\n",
		"-A DOCKER-USER -m mark --mark 0x4000/0x4000 -j ACCEPT\n",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("foreign rule %q is gone", want)
		}
	}
	if strings.Contains(dump, "OLDOLD") {
		t.Errorf("stale per-service chains are left:\n%s", dump)
	}
	got := h.trace(externalIP, nodeIP, iptables.ProtocolTCP, 8443, iptables.HookPrerouting)
	if diff := cmp.Diff([]iptables.Outcome{{DNAT: "172.17.0.2:443", Verdict: iptables.VerdictAccept}}, got); diff != "" {
		t.Errorf("foreign DNAT (-want +got):\n%s", diff)
	}
}

// Someone flushes and deletes all nat and filter chains: the next (partial) sync notices the
// missing canary and puts everything back.
func TestRecoversFromFlush(t *testing.T) {
	h := newHarness(t, Config{ClusterCIDR: clusterCIDR})
	h.apply(threeEndpoints(), true)
	want := h.fake.Dump()
	flush := "*nat\n-F\n"
	for _, c := range userChains(t, h.fake, "KUBE-") {
		flush += "-X " + string(c) + "\n"
	}
	flush += "COMMIT\n*filter\n-F\n-X KUBE-SERVICES\n-X KUBE-PROXY-CANARY\nCOMMIT\n"
	if err := h.fake.Restore(context.Background(), []byte(flush)); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if got := h.trace(podIP, svc1IP, iptables.ProtocolTCP, 80, iptables.HookPrerouting); len(got) != 1 || got[0].DNAT != "" {
		t.Fatalf("after the flush the service still works: %v", got)
	}
	h.apply(threeEndpoints(), false)
	if diff := cmp.Diff(want, h.fake.Dump()); diff != "" {
		t.Errorf("state after recovery (-want +got):\n%s", diff)
	}
	if st := h.proxy.Stats(); st.RestoreFailures != 0 {
		t.Errorf("the partial restore into flushed tables counted as a failure: %+v", st)
	}
}

// callLog records the order of the kernel calls.
type callLog struct {
	*iptables.Fake
	calls []string
}

func (c *callLog) Restore(ctx context.Context, data []byte) error {
	c.calls = append(c.calls, "restore")
	return c.Fake.Restore(ctx, data)
}

func (c *callLog) EnsureChain(ctx context.Context, table iptables.Table, chain iptables.Chain) (bool, error) {
	c.calls = append(c.calls, "ensure "+string(chain))
	return c.Fake.EnsureChain(ctx, table, chain)
}

// A partial sync runs its restore first and checks the canaries after: the check is not on
// the path from a change to the kernel.
func TestPartialSyncChecksCanariesAfterRestore(t *testing.T) {
	log := &callLog{Fake: iptables.NewFake(iptables.IPv4)}
	p := NewProxier(log, Config{ClusterCIDR: clusterCIDR})
	ctx := context.Background()
	if err := p.Apply(ctx, oneService().changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	log.calls = nil
	if err := p.Apply(ctx, threeEndpoints().changedSnapshot(), testNode, false); err != nil {
		t.Fatal(err)
	}
	want := []string{"restore", "ensure KUBE-PROXY-CANARY", "ensure KUBE-PROXY-CANARY"}
	if diff := cmp.Diff(want, log.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// failingRestore makes the next Restore fail without touching the fake.
type failingRestore struct {
	*iptables.Fake
	fail bool
}

func (f *failingRestore) Restore(ctx context.Context, data []byte) error {
	if f.fail {
		f.fail = false
		return &iptables.RestoreError{Line: 1, Msg: "injected"}
	}
	return f.Fake.Restore(ctx, data)
}

// A failed restore is returned; the next sync, even if asked to be partial, rereads the kernel
// and writes everything that is missing.
func TestRestoreFailure(t *testing.T) {
	ipt := &failingRestore{Fake: iptables.NewFake(iptables.IPv4)}
	p := NewProxier(ipt, Config{ClusterCIDR: clusterCIDR})
	ctx := context.Background()
	if err := p.Apply(ctx, oneService().snapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	ipt.fail = true
	err := p.Apply(ctx, threeEndpoints().snapshot(), testNode, false)
	var re *iptables.RestoreError
	if !errors.As(err, &re) {
		t.Fatalf("Apply with a failing restore: err = %v, want a *RestoreError", err)
	}
	if err := p.Apply(ctx, threeEndpoints().snapshot(), testNode, false); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, fake: ipt.Fake}
	got := h.trace(podIP, svc1IP, iptables.ProtocolTCP, 80, iptables.HookPrerouting)
	if diff := cmp.Diff(accepted(false, threeDests...), got); diff != "" {
		t.Errorf("after recovery (-want +got):\n%s", diff)
	}
}

// The base-chain jumps are there once, at the top, however many full syncs ran.
func TestBaseJumps(t *testing.T) {
	h := newHarness(t, Config{ClusterCIDR: clusterCIDR})
	ctx := context.Background()
	if _, err := h.fake.EnsureRule(ctx, iptables.Append, iptables.TableNAT, iptables.ChainPrerouting, "-s", "10.0.0.0/8", "-j", "RETURN"); err != nil {
		t.Fatal(err)
	}
	h.apply(oneService(), true)
	h.apply(oneService(), true)
	data, err := h.fake.Save(ctx, iptables.TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := iptables.ParseSave(data, iptables.TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	want := map[iptables.Chain][]string{
		iptables.ChainPrerouting:  {`-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`, "-s 10.0.0.0/8 -j RETURN"},
		iptables.ChainOutput:      {`-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
		iptables.ChainPostrouting: {`-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`},
	}
	for c, rules := range want {
		if diff := cmp.Diff(rules, chains[c]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c, diff)
		}
	}
}

func TestModeAndCounts(t *testing.T) {
	h := newHarness(t, Config{ClusterCIDR: clusterCIDR})
	if h.proxy.Mode() != "iptables" {
		t.Errorf("Mode() = %q", h.proxy.Mode())
	}
	h.apply(threeEndpoints().add(servicePort(portName("ns1", "empty", "", v1.ProtocolTCP), "100.100.0.30", 80)), true)
	// nat: KUBE-SERVICES 2, KUBE-NODEPORTS 0, KUBE-MARK-MASQ 1, KUBE-POSTROUTING 3,
	// KUBE-SVC 1+3, 3 KUBE-SEP × 2; filter: KUBE-SERVICES 1 no-endpoints + 2 other-ports
	// rejects, KUBE-FORWARD 3, and the empty KUBE-EXTERNAL-SERVICES, KUBE-NODEPORTS,
	// KUBE-PROXY-FIREWALL.
	want := RuleCounts{NATRules: 16, NATChains: 8, FilterRules: 6, FilterChains: 5}
	if diff := cmp.Diff(want, h.proxy.LastRuleCount()); diff != "" {
		t.Errorf("LastRuleCount (-want +got):\n%s", diff)
	}
}
