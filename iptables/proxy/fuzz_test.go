package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/internal/apifuzz"
	"github.com/kproxy/kproxy/iptables"
)

// FuzzRenderRestore runs arbitrary Service and EndpointSlice objects (internal/apifuzz: the
// seed corpus of real and malformed objects, or byte programs) through the endpoints tracker
// and the iptables mode, under a configuration chosen by knobs, for each IP family, and
// checks, besides not panicking:
//
//   - Render is deterministic, every rule is one iptables accepts, every jump has its chain;
//   - Proxier.Apply's restore input is accepted by the iptables Fake (which validates like
//     the kernel's nf_tables backend), in one restore or in batches;
//   - a second sync with nothing changed, verifying or partial, writes nothing (the rendered
//     rules read back from the Fake's iptables-save are the same);
//   - the packet tracer sends a pod's connection to each service port's ClusterIP to exactly
//     the endpoints CategorizeEndpoints picks for it, or rejects/drops it when there are none;
//   - a sync of an empty state removes every per-service chain.
//
// Run it with: go test ./iptables/proxy -run '^$' -fuzz FuzzRenderRestore -fuzztime 60s
// -fuzzminimizetime 50x (the default minimizes each new input for up to a minute).
func FuzzRenderRestore(f *testing.F) {
	seeds, err := apifuzz.Seeds()
	if err != nil {
		f.Fatal(err)
	}
	for i, s := range seeds {
		f.Add(uint8(i*37), s.Data)
	}
	f.Fuzz(func(t *testing.T, knobs uint8, data []byte) {
		ops := apifuzz.Decode(data)
		for _, fam := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
			checkRenderRestore(t, fam, knobs, ops)
		}
	})
}

// fuzzNet is the addresses one family's fuzz run uses.
type fuzzNet struct {
	clusterCIDR, serviceCIDR netip.Prefix
	nodeIP, podIP            netip.Addr
}

var fuzzNets = map[iptables.Family]fuzzNet{
	iptables.IPv4: {netip.MustParsePrefix("100.64.0.0/16"), netip.MustParsePrefix("100.100.0.0/16"),
		netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("100.64.3.250")},
	iptables.IPv6: {netip.MustParsePrefix("2001:db8:1::/48"), netip.MustParsePrefix("2001:db8:2::/112"),
		netip.MustParseAddr("2001:db8:3::11"), netip.MustParseAddr("2001:db8:1:3::fa")},
}

// fuzzConfig picks a configuration from the knobs' bits.
func fuzzConfig(fam iptables.Family, knobs uint8) Config {
	n := fuzzNets[fam]
	cfg := Config{Family: fam, ClusterCIDR: n.clusterCIDR, NodeIP: n.nodeIP,
		MasqueradeAll: knobs&1 != 0, MasqueradeRandomFully: knobs&128 != 0}
	switch knobs >> 1 & 3 {
	case 1:
		cfg.LocalDetector = LocalDetector{CIDR: netip.PrefixFrom(n.podIP, 64-32*boolInt(fam == iptables.IPv4)).Masked()}
	case 2:
		cfg.LocalDetector = LocalDetector{BridgeInterface: "cni0"}
	case 3:
		cfg.LocalDetector = LocalDetector{InterfaceNamePrefix: "veth"}
	}
	if knobs&8 != 0 {
		cfg.NodePortAddresses = []netip.Prefix{netip.PrefixFrom(n.nodeIP, n.nodeIP.BitLen())}
		cfg.InterfaceAddrs = func() ([]netip.Addr, error) { return []netip.Addr{n.nodeIP}, nil }
	}
	if knobs&16 != 0 {
		cfg.ServiceCIDRs = []netip.Prefix{n.serviceCIDR}
	}
	cfg.LocalhostNodePorts = knobs&32 != 0
	if knobs&64 != 0 {
		cfg.BatchServices = 1 // every service in its own restore
	}
	return cfg
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func checkRenderRestore(t *testing.T, fam iptables.Family, knobs uint8, ops []apifuzz.Op) {
	t.Helper()
	ipFamily := v1.IPv4Protocol
	if fam == iptables.IPv6 {
		ipFamily = v1.IPv6Protocol
	}
	tracker := endpoints.NewTracker(endpoints.TrackerOptions{IPFamily: ipFamily})
	svcs, sls := apifuzz.Live(ops)
	for _, s := range svcs {
		tracker.OnServiceAdd(s)
	}
	for _, s := range sls {
		tracker.OnEndpointSliceAdd(s)
	}
	snap := tracker.Checkout()
	cfg := fuzzConfig(fam, knobs)
	node := endpoints.NodeInfo{Name: "node-a", Zone: "zone-a"}
	ctx := context.Background()

	in := Input{Services: snap.Services, Endpoints: snap.Endpoints, Node: node, Config: cfg}
	if len(cfg.NodePortAddresses) > 0 {
		in.NodePortIPs = []netip.Addr{fuzzNets[fam].nodeIP}
	}
	rules := Render(in)
	if again := Render(in); string(again.Transaction().Bytes()) != string(rules.Transaction().Bytes()) {
		t.Fatalf("%s: Render is not deterministic", fam)
	}
	for table, chains := range rules.byTable() {
		checkChains(t, fam, table, chains)
	}

	fake := iptables.NewFake(fam)
	p := NewProxier(fake, cfg)
	if err := p.Apply(ctx, snap, node, true); err != nil {
		t.Fatalf("%s (knobs %08b): the Fake rejects the first sync of %d service ports: %v", fam, knobs, len(snap.Services), err)
	}
	written := fake.RestoreCount()
	idle := endpoints.Snapshot{Services: snap.Services, Endpoints: snap.Endpoints}
	if err := p.Apply(ctx, idle, node, false); err != nil {
		t.Fatalf("%s: verifying sync: %v", fam, err)
	}
	changed := idle
	changed.Changed = map[types.NamespacedName]struct{}{}
	for name := range snap.Services {
		changed.Changed[name.NamespacedName] = struct{}{}
	}
	if err := p.Apply(ctx, changed, node, false); err != nil {
		t.Fatalf("%s: partial sync: %v", fam, err)
	}
	if n := fake.RestoreCount() - written; n != 0 {
		t.Errorf("%s (knobs %08b): %d restores after a sync with nothing changed; the last:\n%s", fam, knobs, n, fake.LastRestore())
	}

	checkTraces(t, fam, fake, snap, cfg, node)

	if err := p.Apply(ctx, endpoints.Snapshot{Changed: changed.Changed}, node, true); err != nil {
		t.Fatalf("%s: sync of an empty state: %v", fam, err)
	}
	for _, l := range strings.Split(fake.Dump(), "\n") {
		for _, prefix := range []string{":KUBE-SVC-", ":KUBE-SVL-", ":KUBE-SEP-", ":KUBE-EXT-", ":KUBE-FW-"} {
			if strings.HasPrefix(l, prefix) {
				t.Errorf("%s: chain left after a sync of an empty state: %s", fam, l)
			}
		}
	}
}

// tuple is one address a service port captures.
type tuple struct {
	addr  netip.Addr
	port  int32
	proto v1.Protocol
}

// checkTraces traces a pod's first packet to every service port's ClusterIP whose address,
// port and protocol no other service port also claims.
func checkTraces(t *testing.T, fam iptables.Family, fake *iptables.Fake, snap endpoints.Snapshot, cfg Config, node endpoints.NodeInfo) {
	t.Helper()
	claims := map[tuple]int{}
	for _, sp := range snap.Services {
		claims[tuple{sp.ClusterIP, sp.Port, sp.Protocol}]++
		for _, a := range slices.Concat(sp.ExternalIPs, sp.LoadBalancerIPs) {
			claims[tuple{a, sp.Port, sp.Protocol}]++
		}
	}
	n := fuzzNets[fam]
	traced := 0
	for _, name := range slices.SortedFunc(func(yield func(endpoints.ServicePortName) bool) {
		for k := range snap.Services {
			if !yield(k) {
				return
			}
		}
	}, func(a, b endpoints.ServicePortName) int {
		return strings.Compare(a.String()+string(a.Protocol), b.String()+string(b.Protocol))
	}) {
		sp := snap.Services[name]
		if claims[tuple{sp.ClusterIP, sp.Port, sp.Protocol}] != 1 || traced >= 20 {
			continue
		}
		traced++
		eps := endpoints.CategorizeEndpoints(snap.Endpoints[name], sp, node).Internal(sp)
		var want []string
		for _, ep := range eps {
			want = append(want, ep.String())
		}
		slices.Sort(want)
		want = slices.Compact(want)
		pkt := iptables.Packet{Src: n.podIP, Dst: sp.ClusterIP, Protocol: iptables.Protocol(strings.ToLower(string(sp.Protocol))),
			DstPort: int(sp.Port), InIface: "cni0"}
		out, err := iptables.Trace(fake, pkt, iptables.HookPrerouting, []netip.Addr{n.nodeIP})
		if err != nil {
			t.Fatalf("%s: trace %s → %s: %v", fam, n.podIP, name, err)
		}
		var got []string
		for _, o := range out {
			if o.DNAT == "" {
				if len(want) > 0 || o.Verdict == iptables.VerdictAccept {
					t.Errorf("%s: %s (%s:%d) with endpoints %v: outcome %+v", fam, name, sp.ClusterIP, sp.Port, want, o)
				}
				continue
			}
			if o.Verdict != iptables.VerdictAccept {
				t.Errorf("%s: %s: DNAT to %s then %s", fam, name, o.DNAT, o.Verdict)
			}
			got = append(got, o.DNAT)
		}
		slices.Sort(got)
		got = slices.Compact(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %s (%s:%d %s): traced to %v, want %v (config %+v)", fam, name, sp.ClusterIP, sp.Port, sp.Protocol, got, want, fmt.Sprintf("%+v", cfg.LocalDetector))
		}
	}
}
