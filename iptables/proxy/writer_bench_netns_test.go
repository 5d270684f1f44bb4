//go:build netns

package proxy

import (
	"context"
	"flag"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
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

	// Partial syncs by a proxier without the nf_tables generation (p: shared chains written
	// whole, canary check after each) and by one with it, as kproxy runs on iptables-nft (pg:
	// shared chains edited in place while the generation is unmoved). A service that comes
	// and goes changes nat KUBE-SERVICES (and, without service CIDRs, filter KUBE-SERVICES):
	// what every partial sync of a bulk create or delete pays.
	gcfg := cfg
	gcfg.Generation = runner.Generation
	pg := NewProxier(kernel, gcfg)
	if err := pg.Apply(ctx, w.snapshot(), testNode, true); err != nil {
		b.Fatal(err)
	}
	name := portName("ns1", "svc00001", "http", v1.ProtocolTCP)
	extra := portName("ns1", "svc-extra", "http", v1.ProtocolTCP)
	flip := false
	oneEndpoint := func() endpoints.ServicePortName {
		flip = !flip
		eps := w.endpoints[name][:5]
		if flip {
			eps = eps[:4]
		}
		w.endpoints[name] = eps
		return name
	}
	addOrRemove := func() endpoints.ServicePortName {
		if _, ok := w.services[extra]; ok {
			delete(w.services, extra)
			delete(w.endpoints, extra)
		} else {
			w.add(svc(extra, "100.100.200.1"), readyEP("100.64.200.1", 8080))
		}
		return extra
	}
	partial := func(p *Proxier, change func() endpoints.ServicePortName) func(b *testing.B) {
		return func(b *testing.B) {
			step := func() {
				if err := p.Apply(ctx, changedOne(w, change()), testNode, false); err != nil {
					b.Fatal(err)
				}
			}
			step() // untimed: the other proxier's writes moved the generation
			for b.Loop() {
				step()
			}
		}
	}
	b.Run("partial-one-service", partial(p, oneEndpoint))
	b.Run("partial-one-service-generation", partial(pg, oneEndpoint))
	b.Run("partial-add-or-remove-service-rewrite", partial(p, addOrRemove))
	b.Run("partial-add-or-remove-service-edit", partial(pg, addOrRemove))
	delete(w.services, extra) // the idle benchmarks start from the kernel as p knows it
	delete(w.endpoints, extra)
	if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
		b.Fatal(err)
	}
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
