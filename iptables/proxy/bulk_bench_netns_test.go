//go:build netns

package proxy

import (
	"context"
	"flag"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/kproxy/kproxy/iptables"
)

var (
	bulkStep  = flag.Int("bulk-step", 128, "services added per partial sync in BenchmarkBulkGrowthKernel")
	bulkBatch = flag.Int("bulk-batch", 0, "Config.BatchServices in BenchmarkBulkGrowthKernel (0: the default)")
	bulkPer   = flag.Int("bulk-chains-per-service", 0, "natChainsPerBatchService in BenchmarkBulkGrowthKernel (0: as built)")
	bulkFixed = flag.Bool("bulk-fixed-batch", false, "BenchmarkBulkGrowthKernel: the batch does not grow with the table (as before Config.batchFor)")
)

// BenchmarkBulkGrowthKernel is the sync pattern of kpbench's bulk create without the
// apiserver: from empty tables, -bench-services services × 5 endpoints arrive -bulk-step at a
// time (kpbench's loader at 10,000 services brings ~130 per 1 s minimum sync period), one
// partial sync each, against the real iptables-restore in a fresh network namespace, with the
// nf_tables generation as kproxy runs on iptables-nft. It reports the CPU of the proxier
// (self) and of iptables-restore (children) over the whole growth:
//
//	go test -tags netns -run '^$' -bench BulkGrowthKernel -benchtime 1x ./iptables/proxy/
func BenchmarkBulkGrowthKernel(b *testing.B) {
	ctx := context.Background()
	n, step := *benchServices, *bulkStep
	all := benchWorld(n)
	if *bulkPer > 0 {
		defer func(v int) { natChainsPerBatchService = v }(natChainsPerBatchService)
		natChainsPerBatchService = *bulkPer
	}
	if *bulkFixed {
		defer func(v int) { natChainsPerBatchService = v }(natChainsPerBatchService)
		natChainsPerBatchService = 1 << 30
	}
	for b.Loop() {
		runner := iptables.New(iptables.Options{NetNSPath: newNetNSPath(b)})
		kernel := &counting{Interface: runner}
		p := NewProxier(kernel, bulkConfig(runner))
		if err := p.Apply(ctx, newWorld().changedSnapshot(), testNode, true); err != nil {
			b.Fatal(err)
		}
		self0, children0 := cpuTimes()
		start := time.Now()
		syncs := growSyncs(b, p, all, step)
		self1, children1 := cpuTimes()
		b.ReportMetric(time.Since(start).Seconds(), "wall-s")
		b.ReportMetric((self1 - self0).Seconds(), "self-cpu-s")
		b.ReportMetric((children1 - children0).Seconds(), "restore-cpu-s")
		b.ReportMetric(float64(syncs), "syncs")
		b.ReportMetric(float64(kernel.restores), "restores")
	}
}

// bulkConfig is the configuration of the kernel benchmarks here: kproxy on iptables-nft with
// the nf_tables generation and the benchmark world's service range, -bulk-batch services
// per restore at least.
func bulkConfig(runner *iptables.Runner) Config {
	return Config{ClusterCIDR: clusterCIDR, Generation: runner.Generation, BatchServices: *bulkBatch,
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("100.100.0.0/16")}}
}

// cpuTimes is the user + system CPU of this process and of its waited-for children.
func cpuTimes() (self, children time.Duration) {
	var s, c syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &s)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &c)
	tv := func(r *syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return tv(&s), tv(&c)
}

// BenchmarkColdSyncKernel is kproxy's first sync of -bench-services services × 5 endpoints
// into empty tables (a cold start), -bulk-batch services per restore:
//
//	go test -tags netns -run '^$' -bench ColdSyncKernel -benchtime 1x ./iptables/proxy/
func BenchmarkColdSyncKernel(b *testing.B) {
	ctx := context.Background()
	w := benchWorld(*benchServices)
	for b.Loop() {
		b.StopTimer()
		runner := iptables.New(iptables.Options{NetNSPath: newNetNSPath(b)})
		kernel := &counting{Interface: runner}
		p := NewProxier(kernel, bulkConfig(runner))
		self0, children0 := cpuTimes()
		b.StartTimer()
		if err := p.Apply(ctx, w.changedSnapshot(), testNode, true); err != nil {
			b.Fatal(err)
		}
		self1, children1 := cpuTimes()
		b.ReportMetric((self1 - self0).Seconds(), "self-cpu-s")
		b.ReportMetric((children1 - children0).Seconds(), "restore-cpu-s")
		b.ReportMetric(float64(kernel.restores), "restores")
	}
}
