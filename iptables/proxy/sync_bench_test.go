package proxy

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/internal/memstat"
	"github.com/kproxy/kproxy/iptables"
)

// benchWorld is n ClusterIP services with 5 endpoints each (kube-proxy's scale-test shape),
// every 10th also a NodePort.
func benchWorld(n int) *world {
	w := newWorld()
	for i := range n {
		name := portName(fmt.Sprintf("ns%d", i%50), fmt.Sprintf("svc%05d", i), "http", v1.ProtocolTCP)
		opts := []spOpt{}
		if i%10 == 0 {
			opts = append(opts, nodePort(int32(30000+i/10)))
		}
		sp := svc(name, netip.AddrFrom4([4]byte{100, 100, byte(i / 250), byte(1 + i%250)}).String(), opts...)
		var eps []endpoints.Endpoint
		for e := range 5 {
			k := i*5 + e
			ep := readyEP(netip.AddrFrom4([4]byte{100, 64, byte(k / 250 % 256), byte(1 + k%250)}).String(), 8080)
			ep.NodeName = fmt.Sprintf("node-%d", e)
			eps = append(eps, ep)
		}
		w.add(sp, eps...)
	}
	return w
}

func changedOne(w *world, name endpoints.ServicePortName) endpoints.Snapshot {
	snap := w.snapshot()
	snap.Changed = map[types.NamespacedName]struct{}{name.NamespacedName: {}}
	return snap
}

// nullKernel accepts every restore and remembers nothing: it isolates the proxier's own cost
// (render, canonicalise, compare, build the restore text) from iptables-restore's.
type nullKernel struct{ restores, bytes int }

func (k *nullKernel) Restore(_ context.Context, data []byte) error {
	k.restores++
	k.bytes += len(data)
	return nil
}

func (k *nullKernel) Save(_ context.Context, table iptables.Table) ([]byte, error) {
	return []byte("*" + string(table) + "\nCOMMIT\n"), nil
}

func (k *nullKernel) HasChain(context.Context, iptables.Table, iptables.Chain) (bool, error) {
	return true, nil
}

func (k *nullKernel) EnsureChain(context.Context, iptables.Table, iptables.Chain) (bool, error) {
	return true, nil
}

func (k *nullKernel) EnsureRule(context.Context, iptables.RulePosition, iptables.Table, iptables.Chain, ...string) (bool, error) {
	return true, nil
}

// BenchmarkPartialSync is the proxier's CPU cost of one partial sync (one service's endpoint
// changed) at 1,000 and 10,000 services × 5 endpoints, without the kernel:
//
//	go test -run '^$' -bench PartialSync -benchmem ./iptables/proxy/
func BenchmarkPartialSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ctx := context.Background()
			w := benchWorld(n)
			k := &nullKernel{}
			p := NewProxier(k, Config{ClusterCIDR: clusterCIDR})
			if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
				b.Fatal(err)
			}
			name := portName("ns1", "svc00001", "http", v1.ProtocolTCP)
			full := w.endpoints[name]
			flip := false
			k.restores, k.bytes = 0, 0
			for b.Loop() {
				flip = !flip
				w.endpoints[name] = full
				if flip {
					w.endpoints[name] = full[:4]
				}
				if err := p.Apply(ctx, changedOne(w, name), testNode, false); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(k.bytes)/float64(b.N), "restore-bytes/op")
		})
	}
}

// BenchmarkFullRender is Render alone over the whole state, for comparison.
func BenchmarkFullRender(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			w := benchWorld(n)
			in := Input{Services: w.services, Endpoints: w.endpoints, Node: testNode, Config: Config{ClusterCIDR: clusterCIDR}}
			for b.Loop() {
				_ = Render(in)
			}
		})
	}
}

// BenchmarkFullSync is the proxier's CPU cost of a full sync into empty tables (a cold start)
// at 1,000 and 10,000 services × 5 endpoints, without the kernel.
func BenchmarkFullSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			ctx := context.Background()
			w := benchWorld(n)
			snap := w.changedSnapshot()
			for b.Loop() {
				if err := NewProxier(&nullKernel{}, Config{ClusterCIDR: clusterCIDR}).Apply(ctx, snap, testNode, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBulkGrowth is the proxier's own CPU over the syncs of a bulk create, without the
// kernel: from nothing to 10,000 services × 5 endpoints, 128 services per partial sync (see
// BenchmarkBulkGrowthKernel for the same against iptables-restore).
//
//	go test -run '^$' -bench BulkGrowth$ -benchmem ./iptables/proxy/
func BenchmarkBulkGrowth(b *testing.B) {
	all := benchWorld(10000)
	for b.Loop() {
		p := NewProxier(&nullKernel{}, Config{ClusterCIDR: clusterCIDR, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}})
		if err := p.Apply(context.Background(), newWorld().changedSnapshot(), testNode, true); err != nil {
			b.Fatal(err)
		}
		growSyncs(b, p, all, 128)
	}
}

// growSyncs brings p, which synced no services, to all, step services per partial sync, and
// returns the number of partial syncs.
func growSyncs(b *testing.B, p *Proxier, all *world, step int) int {
	ctx := context.Background()
	names := slices.Collect(maps.Keys(all.services))
	w := newWorld()
	syncs := 0
	for i := 0; i < len(names); i += step {
		snap := w.snapshot()
		snap.Changed = map[types.NamespacedName]struct{}{}
		for _, name := range names[i:min(i+step, len(names))] {
			w.add(all.services[name], all.endpoints[name]...)
			snap.Changed[name.NamespacedName] = struct{}{}
		}
		if err := p.Apply(ctx, snap, testNode, false); err != nil {
			b.Fatal(err)
		}
		syncs++
	}
	return syncs
}

// BenchmarkRetainedState is the memory a proxier keeps between syncs (the render cache and
// the known kernel state) at 10,000 services × 5 endpoints, with a service CIDR as a cluster
// with ServiceCIDR objects has: the live heap a full sync adds, after a collection.
//
//	go test -run '^$' -bench RetainedState -benchtime 3x ./iptables/proxy/
func BenchmarkRetainedState(b *testing.B) {
	ctx := context.Background()
	w := benchWorld(10000)
	snap := w.changedSnapshot()
	cfg := Config{ClusterCIDR: clusterCIDR, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}}
	var retained float64
	for b.Loop() {
		before := memstat.LiveHeap()
		p := NewProxier(&nullKernel{}, cfg)
		if err := p.Apply(ctx, snap, testNode, true); err != nil {
			b.Fatal(err)
		}
		retained = float64(memstat.LiveHeap()-before) / (1 << 20)
		runtime.KeepAlive(p)
	}
	b.ReportMetric(retained, "retained-MiB")
}

// BenchmarkSyncPeakHeap is the most a sync holds at once, beyond what was live before it
// (memstat.PeakLive with the collector's target at 10%), at 10,000 services × 5 endpoints:
// a cold start into empty tables, a restart into tables that already hold every rule, and
// the periodic verification of a proxier whose rules are in place. The kernel is the
// iptables.Fake, whose Save text is as long as iptables-save's.
//
//	go test -run '^$' -bench SyncPeakHeap -benchtime 3x ./iptables/proxy/
func BenchmarkSyncPeakHeap(b *testing.B) {
	ctx := context.Background()
	w := benchWorld(10000)
	snap := w.changedSnapshot()
	cfg := Config{ClusterCIDR: clusterCIDR, ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}}
	filled := iptables.NewFake(iptables.IPv4)
	if err := NewProxier(filled, cfg).Apply(ctx, snap, testNode, true); err != nil {
		b.Fatal(err)
	}
	synced := NewProxier(filled, cfg)
	if err := synced.Apply(ctx, snap, testNode, true); err != nil {
		b.Fatal(err)
	}
	idle := w.snapshot()
	cases := []struct {
		name string
		sync func() error
	}{
		{"cold", func() error { return NewProxier(&nullKernel{}, cfg).Apply(ctx, snap, testNode, true) }},
		{"restart", func() error { return NewProxier(filled, cfg).Apply(ctx, snap, testNode, true) }},
		{"verify", func() error { return synced.Apply(ctx, idle, testNode, false) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var peak uint64
			for b.Loop() {
				var err error
				peak = memstat.PeakLive(10, func() { err = c.sync() })
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-live-MiB")
		})
	}
}
