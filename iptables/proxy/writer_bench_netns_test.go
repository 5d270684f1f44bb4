//go:build netns

package proxy

import (
	"context"
	"flag"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/iptables"
)

var benchServices = flag.Int("bench-services", 10000, "services in BenchmarkWriterKernel")

// BenchmarkWriterKernel measures the iptables writer against the real iptables-restore and
// iptables-save in a fresh network namespace, at -bench-services services × 5 endpoints:
//
//	go test -tags netns -run '^$' -bench WriterKernel -benchtime 3x ./iptables/proxy/
func BenchmarkWriterKernel(b *testing.B) {
	ctx := context.Background()
	n := *benchServices
	w := benchWorld(n)
	runner := iptables.New(iptables.Options{NetNSPath: newNetNSPath(b)})
	kernel := &counting{Interface: runner}
	cfg := Config{ClusterCIDR: clusterCIDR}
	p := NewProxier(kernel, cfg)

	start := time.Now()
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		b.Fatal(err)
	}
	counts := p.LastRuleCount()
	b.Logf("first sync (empty tables, %d services, %d nat chains, %d nat rules): %v in %d restores",
		n, counts.NATChains, counts.NATRules, time.Since(start), kernel.restores)

	name := portName("ns1", "svc00001", "http", v1.ProtocolTCP)
	flip := false
	b.Run("partial-one-service", func(b *testing.B) {
		for b.Loop() {
			flip = !flip
			eps := w.endpoints[name][:5]
			if flip {
				eps = eps[:4]
			}
			w.endpoints[name] = eps
			if err := p.Apply(ctx, changedOne(w, name), testNode, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A service that comes and goes changes nat KUBE-SERVICES (and, without service CIDRs,
	// filter KUBE-SERVICES): what every partial sync of a bulk create or delete pays. Without
	// the nf_tables generation the proxier writes both chains whole; with it (as kproxy runs
	// on iptables-nft) it edits them in place.
	gcfg := cfg
	gcfg.Generation = runner.Generation
	pg := NewProxier(kernel, gcfg)
	if err := pg.Apply(ctx, w.snapshot(), testNode, true); err != nil {
		b.Fatal(err)
	}
	extra := portName("ns1", "svc-extra", "http", v1.ProtocolTCP)
	addOrRemove := func(b *testing.B, p *Proxier) {
		step := func() {
			flip = !flip
			if flip {
				w.add(svc(extra, "100.100.200.1"), readyEP("100.64.200.1", 8080))
			} else {
				delete(w.services, extra)
				delete(w.endpoints, extra)
			}
			if err := p.Apply(ctx, changedOne(w, extra), testNode, false); err != nil {
				b.Fatal(err)
			}
		}
		step() // untimed: the other proxier's writes moved the generation
		for b.Loop() {
			step()
		}
	}
	b.Run("partial-add-or-remove-service-rewrite", func(b *testing.B) { addOrRemove(b, p) })
	b.Run("partial-add-or-remove-service-edit", func(b *testing.B) { addOrRemove(b, pg) })
	b.Run("partial-one-service-generation", func(b *testing.B) {
		for b.Loop() {
			flip = !flip
			eps := w.endpoints[name][:5]
			if flip {
				eps = eps[:4]
			}
			w.endpoints[name] = eps
			if err := pg.Apply(ctx, changedOne(w, name), testNode, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("idle-verify", func(b *testing.B) {
		for b.Loop() {
			if err := p.Apply(ctx, w.snapshot(), testNode, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("idle-quiet-generation-unchanged", func(b *testing.B) {
		gcfg := cfg
		gcfg.Generation = runner.Generation
		pq := NewProxier(kernel, gcfg)
		if err := pq.Apply(ctx, w.snapshot(), testNode, true); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := pq.Apply(ctx, w.snapshot(), testNode, false); err != nil {
				b.Fatal(err)
			}
		}
		if st := pq.Stats(); st.Quiet == 0 || st.Verifications > 0 {
			b.Fatalf("stats %+v: want quiet syncs only", st)
		}
	})
	b.Run("idle-verify-repair-one-rule", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			if err := kernel.Restore(ctx, []byte("*nat\n-D KUBE-SERVICES 1\nCOMMIT\n")); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := p.Apply(ctx, w.snapshot(), testNode, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("restart-full-no-change", func(b *testing.B) {
		for b.Loop() {
			if err := NewProxier(kernel, cfg).Apply(ctx, w.snapshot(), testNode, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("iptables-save-nat", func(b *testing.B) {
		for b.Loop() {
			if _, err := kernel.Save(ctx, iptables.TableNAT); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("render-and-compare-only", func(b *testing.B) {
		for b.Loop() {
			rules := renderCanonical(Input{Services: w.services, Endpoints: w.endpoints, Node: testNode, Config: cfg})
			desired := stateOf(rules)
			_ = planWrite(p.known, rules.NAT, rules.Filter, staleChains(p.known, desired), cfg.batchServices(), true)
		}
	})
}
