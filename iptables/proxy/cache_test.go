package proxy

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// churn is a world that changes at random the way the tracker hands out changes: a changed
// service port or endpoint list is a new value, an unchanged one keeps its pointer, and every
// touched service is in Changed.
type churn struct {
	rnd     *rand.Rand
	w       *world
	changed map[types.NamespacedName]struct{}
	nextIP  int
	// large lets an endpoint list now and then be long enough to cross the large-cluster
	// threshold.
	large bool
}

func newChurn(seed uint64) *churn {
	return &churn{rnd: rand.New(rand.NewPCG(seed, seed*7+1)), w: newWorld(), changed: map[types.NamespacedName]struct{}{}}
}

var churnProtocols = []v1.Protocol{v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP}

// service names come from a small set so that services are deleted and recreated.
func (c *churn) serviceName() types.NamespacedName {
	return types.NamespacedName{Namespace: fmt.Sprintf("ns%d", c.rnd.IntN(3)), Name: fmt.Sprintf("svc%d", c.rnd.IntN(12))}
}

func (c *churn) ports(nn types.NamespacedName) []endpoints.ServicePortName {
	var out []endpoints.ServicePortName
	for name := range c.w.services {
		if name.NamespacedName == nn {
			out = append(out, name)
		}
	}
	slices.SortFunc(out, compareServicePorts)
	return out
}

func (c *churn) pick() (types.NamespacedName, bool) {
	names := map[types.NamespacedName]bool{}
	for name := range c.w.services {
		names[name.NamespacedName] = true
	}
	if len(names) == 0 {
		return types.NamespacedName{}, false
	}
	sorted := slices.SortedFunc(maps.Keys(names), func(a, b types.NamespacedName) int {
		return compareServicePorts(endpoints.ServicePortName{NamespacedName: a}, endpoints.ServicePortName{NamespacedName: b})
	})
	return sorted[c.rnd.IntN(len(sorted))], true
}

// randomPort is a service port of nn with random features; the ClusterIP is the service's.
func (c *churn) randomPort(nn types.NamespacedName, portName string, clusterIP netip.Addr) *endpoints.ServicePort {
	r := c.rnd
	proto := churnProtocols[r.IntN(len(churnProtocols))]
	sp := &endpoints.ServicePort{Name: endpoints.ServicePortName{NamespacedName: nn, Port: portName, Protocol: proto},
		ClusterIP: clusterIP, Port: int32(80 + r.IntN(3)), Protocol: proto}
	if r.IntN(3) == 0 {
		sp.NodePort = int32(30000 + r.IntN(500))
	}
	if r.IntN(5) == 0 {
		sp.ExternalIPs = []netip.Addr{netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + r.IntN(20))})}
	}
	if r.IntN(4) == 0 {
		sp.LoadBalancerIPs = []netip.Addr{netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + r.IntN(50))})}
		if r.IntN(2) == 0 {
			sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/28"), netip.MustParsePrefix("192.0.2.0/24")}
		}
	}
	if sp.ExternallyAccessible() && r.IntN(3) == 0 {
		sp.ExternalPolicyLocal, sp.HealthCheckNodePort = true, int32(32000+r.IntN(100))
	}
	if r.IntN(5) == 0 {
		sp.InternalPolicyLocal = true
	}
	if r.IntN(5) == 0 {
		sp.SessionAffinityTimeout = time.Duration(1+r.IntN(3)) * time.Hour
	}
	return sp
}

// randomEndpoints is a fresh endpoint list: ready, terminating, not ready, local or remote,
// sometimes with zone hints, sometimes long enough to cross the large-cluster threshold.
func (c *churn) randomEndpoints(port int32) []endpoints.Endpoint {
	r := c.rnd
	n := r.IntN(5)
	if c.large && r.IntN(6) == 0 {
		n = 990 + r.IntN(30)
	}
	var eps []endpoints.Endpoint
	for range n {
		c.nextIP++
		ep := endpoints.Endpoint{IP: netip.AddrFrom4([4]byte{100, 64, byte(c.nextIP / 250 % 250), byte(1 + c.nextIP%250)}),
			Port: port + 8000, Ready: true, Serving: true, NodeName: []string{"node-1", "node-2"}[r.IntN(2)]}
		switch r.IntN(6) {
		case 0:
			ep.Ready, ep.Terminating = false, true
		case 1:
			ep.Ready, ep.Serving = false, false
		case 2:
			ep.Hints = &endpoints.Hints{Zones: []string{[]string{"zone-a", "zone-b"}[r.IntN(2)]}}
		}
		eps = append(eps, ep)
	}
	slices.SortFunc(eps, func(a, b endpoints.Endpoint) int { return a.IP.Compare(b.IP) })
	return eps
}

// step makes 1 to 4 random changes.
func (c *churn) step() {
	clear(c.changed)
	for range 1 + c.rnd.IntN(4) {
		c.change()
	}
}

func (c *churn) change() {
	nn, ok := c.pick()
	op := c.rnd.IntN(7)
	if !ok || len(c.w.services) < 3 {
		op = 0
	}
	switch op {
	case 0: // add a service (or replace one), one to three ports
		nn = c.serviceName()
		for _, name := range c.ports(nn) {
			delete(c.w.services, name)
			delete(c.w.endpoints, name)
		}
		ip := netip.AddrFrom4([4]byte{100, 100, byte(c.rnd.IntN(2)), byte(1 + c.rnd.IntN(30))})
		for i := range 1 + c.rnd.IntN(3) {
			c.setPort(c.randomPort(nn, fmt.Sprintf("p%d", i), ip))
		}
	case 1: // delete a service
		for _, name := range c.ports(nn) {
			delete(c.w.services, name)
			delete(c.w.endpoints, name)
		}
	case 2, 3: // new endpoints for one port
		ports := c.ports(nn)
		name := ports[c.rnd.IntN(len(ports))]
		c.setEndpoints(name, c.randomEndpoints(c.w.services[name].Port))
	case 4: // one port changes its features
		ports := c.ports(nn)
		old := c.w.services[ports[c.rnd.IntN(len(ports))]]
		sp := c.randomPort(nn, old.Name.Port, old.ClusterIP)
		sp.Name.Protocol, sp.Protocol = old.Name.Protocol, old.Protocol
		c.w.services[sp.Name] = sp
	case 5: // a port more or less
		ports := c.ports(nn)
		if len(ports) > 1 && c.rnd.IntN(2) == 0 {
			delete(c.w.services, ports[0])
			delete(c.w.endpoints, ports[0])
		} else {
			c.setPort(c.randomPort(nn, fmt.Sprintf("p%d", 3+c.rnd.IntN(3)), c.w.services[ports[0]].ClusterIP))
		}
	case 6: // the whole service moves to another ClusterIP
		ip := netip.AddrFrom4([4]byte{100, 100, 2, byte(1 + c.rnd.IntN(30))})
		for _, name := range c.ports(nn) {
			sp := *c.w.services[name]
			sp.ClusterIP = ip
			c.w.services[name] = &sp
		}
	}
	c.changed[nn] = struct{}{}
}

func (c *churn) setPort(sp *endpoints.ServicePort) {
	c.w.services[sp.Name] = sp
	c.setEndpoints(sp.Name, c.randomEndpoints(sp.Port))
}

func (c *churn) setEndpoints(name endpoints.ServicePortName, eps []endpoints.Endpoint) {
	if len(eps) == 0 {
		delete(c.w.endpoints, name)
		return
	}
	c.w.endpoints[name] = eps
}

// snapshot is the tracker's Checkout: copies of the maps, values shared.
func (c *churn) snapshot() endpoints.Snapshot {
	return endpoints.Snapshot{Services: maps.Clone(c.w.services), Endpoints: maps.Clone(c.w.endpoints), Changed: maps.Clone(c.changed)}
}

func cloneState(s chainState) chainState {
	out := chainState{}
	for t, chains := range s {
		out[t] = maps.Clone(chains)
	}
	return out
}

// churnConfigs are the configurations the random sequences run under.
func churnConfigs() []Config {
	return []Config{
		{ClusterCIDR: clusterCIDR, NodeIP: nodeIP},
		{ClusterCIDR: clusterCIDR, NodeIP: nodeIP, BatchServices: 2},
		{ClusterCIDR: clusterCIDR, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}, MasqueradeAll: true},
		{LocalDetector: LocalDetector{BridgeInterface: "cni0"}, LocalhostNodePorts: true, BatchServices: 3,
			NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
			InterfaceAddrs:    func() ([]netip.Addr, error) { return []netip.Addr{nodeIP, netip.MustParseAddr("192.0.2.12")}, nil }},
	}
}

// positionalEdit matches a restore that edits an owned chain by rule position (the base-chain
// jumps are inserted into built-in chains at position 1).
var positionalEdit = regexp.MustCompile(`(?m)^-(D KUBE-[A-Z-]+ [0-9]+$|I KUBE-[A-Z-]+ [0-9]+ )`)

// TestPartialSyncMatchesScratch runs random change sequences through one proxier doing
// partial syncs and checks after every sync that (1) its cached rules are byte for byte
// what Render gives from scratch, (2) it wrote exactly the restores the full comparison of
// a from-scratch render with what it knew would write, and (3) the tables hold what a new
// proxier's full sync of the same snapshot writes into empty tables.
//
// The sequences with endpoint lists long enough to cross the large-cluster threshold (1,000
// endpoints) are slower, so fewer.
func TestPartialSyncMatchesScratch(t *testing.T) {
	sequences, large := 100, 6
	if testing.Short() || raceEnabled {
		sequences, large = 20, 2
	}
	ctx := context.Background()
	flips := 0
	defer func() {
		if flips == 0 {
			t.Error("large-cluster mode never flipped in a partial sync: the generator needs tuning")
		}
	}()
	edits := 0
	defer func() {
		if edits == 0 {
			t.Error("no partial sync edited a chain in place: the sequences with the generation need tuning")
		}
	}()
	for seq := range sequences + large {
		cfg := churnConfigs()[seq%len(churnConfigs())]
		steps := 30
		if seq >= sequences {
			steps = 15
		}
		// Every other sequence runs with the nf_tables generation, so that partial syncs edit
		// the shared chains in place (planWrite), from their first line on.
		edit := seq%2 == 1
		t.Run(fmt.Sprintf("seq%d", seq), func(t *testing.T) {
			c := newChurn(uint64(seq) + 1)
			c.large = seq >= sequences
			rec := &recording{Fake: iptables.NewFake(cfg.Family)}
			if edit {
				cfg.Generation = rec.Generation
				defer func(n int) { minEditLines = n }(minEditLines)
				minEditLines = 1
			}
			p := NewProxier(rec, cfg)
			node := testNode
			c.step()
			if err := p.Apply(ctx, c.snapshot(), node, true); err != nil {
				t.Fatal(err)
			}
			for step := range steps {
				c.step()
				if c.rnd.IntN(15) == 0 { // the reconciler makes this a full sync; the proxier copes either way
					node.Zone = []string{"zone-a", "zone-b"}[c.rnd.IntN(2)]
				}
				snap := c.snapshot()
				known := cloneState(p.known)
				in := Input{Services: snap.Services, Endpoints: snap.Endpoints, Node: node, Config: cfg}
				if len(cfg.NodePortAddresses) > 0 {
					in.NodePortIPs, _ = p.nodePortIPs()
				}
				scratch := renderCanonical(in)
				rec.payloads = nil
				wasLarge := p.LastRuleCount().LargeCluster
				if err := p.Apply(ctx, snap, node, false); err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				if p.LastRuleCount().LargeCluster != wasLarge {
					flips++
				}
				checkCache(t, step, p, in, scratch)
				want := planWrite(known, (&Proxier{known: known}).inKernelOrder(scratch.NAT), scratch.Filter, staleChains(known, stateOf(scratch)), cfg.batchFor(len(known[iptables.TableNAT])), edit)
				var wantPayloads []string
				for _, tx := range want.restores {
					wantPayloads = append(wantPayloads, string(tx.Bytes()))
				}
				if diff := cmp.Diff(wantPayloads, rec.payloads); diff != "" {
					t.Fatalf("step %d: restores differ from the full comparison's (-full +partial):\n%s", step, diff)
				}
				for _, p := range rec.payloads {
					if positionalEdit.MatchString(p) {
						edits++
					}
				}
				fresh := iptables.NewFake(cfg.Family)
				freshCfg := cfg
				freshCfg.Generation = nil
				if err := NewProxier(fresh, freshCfg).Apply(ctx, snap, node, true); err != nil {
					t.Fatalf("step %d: fresh proxier: %v", step, err)
				}
				if diff := cmp.Diff(sortedServices(fresh.Dump()), sortedServices(rec.Dump())); diff != "" {
					t.Fatalf("step %d: tables differ from a fresh full sync's (-fresh +partial):\n%s", step, diff)
				}
				// A restart finds the tables as it wants them, in whatever order the partial
				// syncs left nat KUBE-SERVICES.
				rec.payloads = nil
				if err := NewProxier(rec, freshCfg).Apply(ctx, snap, node, true); err != nil || len(rec.payloads) > 0 {
					t.Fatalf("step %d: a restarted proxier's full sync: %v, wrote %d restores:\n%s", step, err, len(rec.payloads), strings.Join(rec.payloads, "----\n"))
				}
			}
		})
	}
}

// checkCache compares the proxier's cached rules with a from-scratch render: what their
// restores leave in a Fake (the cache writes the chains it keeps as lines only as
// iptables-save printed them), the canonical lines and the counts.
func checkCache(t *testing.T, step int, p *Proxier, in Input, scratch Rules) {
	t.Helper()
	r := newRenderer(in.Config, countEndpoints(in) > largeClusterEndpoints)
	cached, counts := p.cache.rules(r, in.NodePortIPs, true)
	restored := func(rules Rules) string {
		t.Helper()
		f := iptables.NewFake(in.Config.Family)
		if err := f.Restore(context.Background(), rules.Transaction().Bytes()); err != nil {
			t.Fatalf("step %d: restore: %v", step, err)
		}
		return f.Dump()
	}
	if diff := cmp.Diff(restored(Render(in)), restored(cached)); diff != "" {
		t.Fatalf("step %d: cached rules restore differently from Render's (-render +cached):\n%s", step, diff)
	}
	if diff := cmp.Diff(stateOf(scratch), stateOf(cached)); diff != "" {
		t.Fatalf("step %d: cached canonical rules differ (-scratch +cached):\n%s", step, diff)
	}
	var want RuleCounts
	for _, c := range scratch.NAT {
		want.NATRules += len(c.lines)
	}
	for _, c := range scratch.Filter {
		want.FilterRules += len(c.lines)
	}
	want.NATChains, want.FilterChains = len(scratch.NAT), len(scratch.Filter)
	want.NoLocalEndpointsInternal, want.NoLocalEndpointsExternal = scratch.NoLocalEndpointsInternal, scratch.NoLocalEndpointsExternal
	want.LargeCluster = scratch.LargeCluster
	if counts != want || p.LastRuleCount() != want {
		t.Fatalf("step %d: counts %+v (last sync %+v), want %+v", step, counts, p.LastRuleCount(), want)
	}
	if cached.ServicePorts != scratch.ServicePorts || cached.Endpoints != scratch.Endpoints {
		t.Fatalf("step %d: %d service ports, %d endpoints; want %d, %d", step, cached.ServicePorts, cached.Endpoints,
			scratch.ServicePorts, scratch.Endpoints)
	}
}

// A partial sync renders only the ports of the changed services.
func TestPartialSyncRendersOnlyChanged(t *testing.T) {
	ctx := context.Background()
	w := benchWorld(50)
	p := NewProxier(iptables.NewFake(iptables.IPv4), Config{ClusterCIDR: clusterCIDR})
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	name := portName("ns1", "svc00001", "http", v1.ProtocolTCP)
	w.endpoints[name] = w.endpoints[name][:3]
	changes, _ := p.cache.update(Input{Services: w.services, Endpoints: w.endpoints, Node: testNode, Config: p.cfg},
		changedOne(w, name).Changed)
	if len(changes) != 1 || changes[0].name != name {
		t.Errorf("rendered %d ports, want only %s", len(changes), name)
	}
	// A value replaced without being reported is rendered again all the same.
	other := portName("ns2", "svc00002", "http", v1.ProtocolTCP)
	sp := *w.services[other]
	w.services[other] = &sp
	changes, _ = p.cache.update(Input{Services: w.services, Endpoints: w.endpoints, Node: testNode, Config: p.cfg}, nil)
	if len(changes) != 1 || changes[0].name != other {
		t.Errorf("rendered %d ports, want only %s", len(changes), other)
	}
}

// When large-cluster mode flips in a partial sync, every port is rendered again, and the
// chains of an endpoint removed in the same sync are deleted.
func TestLargeClusterFlipInPartialSync(t *testing.T) {
	ctx := context.Background()
	f := iptables.NewFake(iptables.IPv4)
	p := NewProxier(f, Config{ClusterCIDR: clusterCIDR})
	w := benchWorld(199) // 995 endpoints
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	name := portName("ns1", "svc00001", "http", v1.ProtocolTCP)
	gone := endpointChainName(name, "tcp", w.endpoints[name][0])
	eps := slices.Clone(w.endpoints[name][1:])
	for i := range 10 {
		eps = append(eps, readyEP(fmt.Sprintf("100.64.250.%d", i+1), 8080))
	}
	w.endpoints[name] = eps // 1004 endpoints: large-cluster mode
	if err := p.Apply(ctx, changedOne(w, name), testNode, false); err != nil {
		t.Fatal(err)
	}
	if !p.LastRuleCount().LargeCluster {
		t.Fatal("not in large-cluster mode")
	}
	fresh := iptables.NewFake(iptables.IPv4)
	if err := NewProxier(fresh, Config{ClusterCIDR: clusterCIDR}).Apply(ctx, w.snapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fresh.Dump(), f.Dump()); diff != "" {
		t.Errorf("after the flip (-fresh +partial):\n%s", diff)
	}
	for _, c := range userChains(t, f, "KUBE-SEP-") {
		if c == gone {
			t.Errorf("chain %s of the removed endpoint is still there", gone)
		}
	}
}

// Service CIDRs set while running (the ServiceCIDR objects) take effect at the next sync,
// partial too, and leave the kernel as a proxier started with them would; taking them away
// brings back the per-ClusterIP rejects, also of the services rendered while there were
// CIDRs (each step changes another service).
func TestSetServiceCIDRsInPartialSync(t *testing.T) {
	ctx := context.Background()
	f := iptables.NewFake(iptables.IPv4)
	p := NewProxier(f, Config{ClusterCIDR: clusterCIDR})
	w := benchWorld(20)
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		t.Fatal(err)
	}
	cidrs := []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}
	for step, set := range [][]netip.Prefix{cidrs, {}, cidrs, {}} {
		name := portName(fmt.Sprintf("ns%d", step+1), fmt.Sprintf("svc%05d", step+1), "http", v1.ProtocolTCP)
		p.SetServiceCIDRs(set)
		w.endpoints[name] = w.endpoints[name][:len(w.endpoints[name])-1]
		if err := p.Apply(ctx, changedOne(w, name), testNode, false); err != nil {
			t.Fatal(err)
		}
		fresh := iptables.NewFake(iptables.IPv4)
		if err := NewProxier(fresh, Config{ClusterCIDR: clusterCIDR, ServiceCIDRs: set}).Apply(ctx, w.snapshot(), testNode, true); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(fresh.Dump(), f.Dump()); diff != "" {
			t.Errorf("step %d, service CIDRs %v (-fresh +partial):\n%s", step, set, diff)
		}
		rejects := strings.Count(f.Dump(), "-j REJECT")
		if want := map[int]int{0: 1, 1: 20, 2: 1, 3: 20}[step]; rejects != want {
			t.Errorf("step %d: %d REJECT rules, want %d", step, rejects, want)
		}
	}
}

// resort keeps the cache's ports in name order through batches of every size: a few inserted
// in place, many sorted again, with removals.
func TestResortKeepsNameOrder(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	c := newPortCache()
	proto := []v1.Protocol{v1.ProtocolTCP, v1.ProtocolUDP}
	for step := range 200 {
		removed := 0
		for name := range c.ports {
			if rnd.IntN(8) == 0 {
				delete(c.ports, name)
				removed++
			}
		}
		var added []*cachedPort
		for range rnd.IntN([]int{3, 70, 400}[step%3]) {
			name := portName(fmt.Sprintf("ns%d", rnd.IntN(5)), fmt.Sprintf("svc%d", rnd.IntN(3000)), fmt.Sprintf("p%d", rnd.IntN(3)), proto[rnd.IntN(2)])
			if _, ok := c.ports[name]; !ok {
				e := &cachedPort{name: name}
				c.ports[name] = e
				added = append(added, e)
			}
		}
		c.resort(added, removed)
		want := slices.SortedFunc(maps.Keys(c.ports), compareServicePorts)
		got := make([]endpoints.ServicePortName, 0, len(c.sorted))
		for _, e := range c.sorted {
			got = append(got, e.name)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("step %d (%d added, %d removed): sorted holds %d ports, not the map's %d in name order", step, len(added), removed, len(got), len(want))
		}
	}
}
