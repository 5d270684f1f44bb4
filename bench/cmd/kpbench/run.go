package main

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/kproxy/kproxy/e2e/harness"
)

// phase measures one phase of one proxy process: CPU seconds and peak RSS from its start to
// its end (the proxy process may be a new one: then it is measured from its own start).
type phase struct {
	pid int
	cpu cpuTimes
}

// beginPhase resets the peak RSS and reads the CPU times of the running proxy.
func beginPhase(pid int) (phase, error) {
	if err := resetPeakRSS(pid); err != nil {
		return phase{}, err
	}
	c, err := readCPU(pid)
	return phase{pid: pid, cpu: c}, err
}

// endPhase records <name>.cpu_s, <name>.cpu_children_s and <name>.rss_mb.
func (p phase) end(rr *runResult, name string) error {
	c, err := readCPU(p.pid)
	if err != nil {
		return err
	}
	rss, err := peakRSSMB(p.pid)
	if err != nil {
		return err
	}
	d := c.sub(p.cpu)
	rr.Figures[name+".cpu_s"] = round(d.Self+d.Children, 2)
	rr.Figures[name+".cpu_children_s"] = round(d.Children, 2)
	rr.Figures[name+".rss_mb"] = round(rss, 1)
	return nil
}

func runOne(cfg config, p proxyCfg) *runResult {
	rr := &runResult{Proxy: p.Name, Figures: map[string]float64{}}
	if err := runPhases(cfg, p, rr); err != nil {
		rr.Error = err.Error()
	}
	t0 := time.Now()
	rep, err := harness.Cleanup(prefix)
	rr.Figures["sandbox.cleanup_s"] = round(time.Since(t0).Seconds(), 2)
	if err != nil {
		logf("  cleanup: %v (%v)", err, rep)
	}
	return rr
}

func runPhases(cfg config, p proxyCfg, rr *runResult) error {
	ctx := context.Background()
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := harness.Start(sctx, harness.Options{
		Prefix: prefix, Nodes: 1, PodsPerNode: 0, Proxy: p.Proxy, ProxyBin: cfg.KProxyBin,
		ProxyArgs: p.Args, K8sBin: cfg.K8sBin, EchoBin: cfg.EchoBin,
		Logf: func(string, ...any) {},
	})
	cancel()
	if c != nil {
		defer c.Close()
	}
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	rr.Figures["sandbox.start_s"] = round(time.Since(t0).Seconds(), 2)
	node := c.Nodes[0].Name
	cs, err := fastClient(c.RESTConfig, cfg.Workers)
	if err != nil {
		return err
	}
	if err := c.EnsureNamespace(ctx, benchNS); err != nil {
		return err
	}
	ps := &pollStats{}
	defer func() { rr.Figures["poll.mean_ms"] = round(ps.meanMs(), 1); rr.Figures["poll.count"] = float64(ps.N) }()
	pid, err := proxyPid(c.State, node)
	if err != nil {
		return err
	}
	capped := func(name string) { rr.Capped = append(rr.Capped, name) }

	// 1. Bulk create.
	ph, err := beginPhase(pid)
	if err != nil {
		return err
	}
	tLoad := time.Now()
	var svcs []*benchService
	loadDone := make(chan error, 1)
	var tLoaded time.Time
	go func() {
		var err error
		svcs, err = load(ctx, cs, cfg.N, cfg.E, cfg.Workers)
		tLoaded = time.Now()
		loadDone <- err
	}()
	// The expected set is known only once the Services have their ClusterIPs: poll the
	// endpoint count until the load is written, then the full condition.
	var loadErr error
	loaded := false
	res, err := pollUntil(ctx, node, p.Kernel, cfg.BulkGap, cfg.Cap, ps, func(st state) bool {
		if !loaded {
			select {
			case loadErr = <-loadDone:
				loaded = true
			default:
				return false
			}
		}
		if loadErr != nil {
			return true
		}
		return programmed(st, svcs) == cfg.N
	})
	if err != nil {
		return fmt.Errorf("bulk create poll: %w", err)
	}
	if loadErr != nil {
		return fmt.Errorf("bulk create: %w", loadErr)
	}
	rr.Figures["bulk.api_s"] = round(tLoaded.Sub(tLoad).Seconds(), 2)
	if res.Capped {
		capped("bulk.programmed_s")
		return fmt.Errorf("bulk create: not programmed within %v", cfg.Cap)
	}
	rr.Figures["bulk.programmed_s"] = round(res.At.Sub(tLoad).Seconds(), 2)
	rr.Figures["bulk.after_api_s"] = round(res.At.Sub(tLoaded).Seconds(), 2)
	logf("  bulk create: API %.2fs, programmed %.2fs", rr.Figures["bulk.api_s"], rr.Figures["bulk.programmed_s"])
	time.Sleep(cfg.Settle)
	if err := ph.end(rr, "bulk"); err != nil {
		return err
	}

	// 2a. Restart with the rules present.
	before, err := takeSnapshot(ctx, node, p.Kernel)
	if err != nil {
		return err
	}
	if err := c.StopProxy(c.Nodes[0]); err != nil {
		return err
	}
	tStart := time.Now()
	if err := c.StartProxy(ctx, c.Nodes[0]); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	rr.Figures["warm.healthz_s"] = round(time.Since(tStart).Seconds(), 2)
	if pid, err = proxyPid(c.State, node); err != nil {
		return err
	}
	ph = phase{pid: pid} // a new process: CPU from its start
	time.Sleep(cfg.Settle + time.Second)
	after, err := takeSnapshot(ctx, node, p.Kernel)
	if err != nil {
		return err
	}
	if err := ph.end(rr, "warm"); err != nil {
		return err
	}
	rr.Restart.LinesRemoved, rr.Restart.LinesAdded = diffCount(before.lines, after.lines)
	rr.Restart.ObjectsRemoved, rr.Restart.ObjectsAdded = diffCount(before.handles, after.handles)
	rr.Restart.Examples = diffExamples(before.lines, after.lines, 6)
	rr.Figures["warm.lines_changed"] = float64(rr.Restart.LinesRemoved + rr.Restart.LinesAdded)
	rr.Figures["warm.objects_changed"] = float64(rr.Restart.ObjectsRemoved + rr.Restart.ObjectsAdded)
	st, err := readState(ctx, node, p.Kernel)
	if err != nil {
		return err
	}
	if n := programmed(st, svcs); n != cfg.N {
		return fmt.Errorf("after a restart with the rules present only %d of %d services are programmed", n, cfg.N)
	}
	logf("  restart (rules present): healthz %.2fs, lines changed %d (-%d +%d), nft objects changed %d",
		rr.Figures["warm.healthz_s"], rr.Restart.LinesRemoved+rr.Restart.LinesAdded, rr.Restart.LinesRemoved,
		rr.Restart.LinesAdded, rr.Restart.ObjectsRemoved+rr.Restart.ObjectsAdded)

	// 2b. Restart with the rules flushed (a cold start with N services present).
	if err := c.StopProxy(c.Nodes[0]); err != nil {
		return err
	}
	if _, err := harness.Exec(ctx, node, "nft", "flush", "ruleset"); err != nil {
		return err
	}
	tStart = time.Now()
	started := make(chan error, 1)
	go func() { started <- c.StartProxy(ctx, c.Nodes[0]) }()
	res, err = pollUntil(ctx, node, p.Kernel, cfg.Gap, cfg.Cap, ps, func(st state) bool { return programmed(st, svcs) == cfg.N })
	if serr := <-started; serr != nil {
		return fmt.Errorf("cold restart: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("cold restart poll: %w", err)
	}
	if pid, err = proxyPid(c.State, node); err != nil {
		return err
	}
	if res.Capped {
		capped("cold.programmed_s")
		return fmt.Errorf("cold restart: not programmed within %v", cfg.Cap)
	}
	rr.Figures["cold.programmed_s"] = round(res.At.Sub(tStart).Seconds(), 2)
	logf("  restart (rules flushed): programmed %.2fs", rr.Figures["cold.programmed_s"])
	time.Sleep(cfg.Settle)
	if err := (phase{pid: pid}).end(rr, "cold"); err != nil {
		return err
	}

	// 3. One change at a time.
	if ph, err = beginPhase(pid); err != nil {
		return err
	}
	for k := 0; k < cfg.Changes; k++ {
		s := svcs[(k*cfg.N/cfg.Changes+k)%cfg.N]
		addr := netip.AddrPortFrom(changeAddr(k), targetPort).String()
		tw := time.Now()
		if err := changeEndpoint(ctx, cs, s, addr); err != nil {
			return err
		}
		res, err := pollUntil(ctx, node, p.Kernel, cfg.Gap, cfg.Cap, ps, func(st state) bool { return st.eps[addr] })
		if err != nil {
			return fmt.Errorf("one change poll: %w", err)
		}
		if res.Capped {
			capped("change.p99_ms")
			return fmt.Errorf("one change: %s not programmed within %v", addr, cfg.Cap)
		}
		rr.ChangeLatenciesMs = append(rr.ChangeLatenciesMs, round(float64(res.At.Sub(tw).Microseconds())/1000, 1))
		if d := cfg.Spacing - time.Since(tw); d > 0 && k < cfg.Changes-1 {
			time.Sleep(d)
		}
	}
	rr.Figures["change.p50_ms"] = percentile(rr.ChangeLatenciesMs, 50)
	rr.Figures["change.p99_ms"] = percentile(rr.ChangeLatenciesMs, 99)
	logf("  one change ×%d: p50 %.0fms p99 %.0fms", cfg.Changes, rr.Figures["change.p50_ms"], rr.Figures["change.p99_ms"])
	time.Sleep(cfg.Settle)
	if err := ph.end(rr, "change"); err != nil {
		return err
	}

	// 4. Bulk delete (also the cost of reusing a sandbox between proxies).
	if ph, err = beginPhase(pid); err != nil {
		return err
	}
	tDel := time.Now()
	if err := deleteAll(ctx, cs, svcs, cfg.Workers); err != nil {
		return err
	}
	tDeleted := time.Now()
	rr.Figures["delete.api_s"] = round(tDeleted.Sub(tDel).Seconds(), 2)
	res, err = pollUntil(ctx, node, p.Kernel, cfg.BulkGap, cfg.Cap, ps, func(st state) bool {
		for _, s := range svcs {
			if !s.gone(st) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("bulk delete poll: %w", err)
	}
	if res.Capped {
		capped("delete.removed_s")
		return fmt.Errorf("bulk delete: rules still there after %v", cfg.Cap)
	}
	rr.Figures["delete.removed_s"] = round(res.At.Sub(tDel).Seconds(), 2)
	rr.Figures["delete.after_api_s"] = round(res.At.Sub(tDeleted).Seconds(), 2)
	logf("  bulk delete: API %.2fs, rules gone %.2fs", rr.Figures["delete.api_s"], rr.Figures["delete.removed_s"])
	time.Sleep(cfg.Settle)
	return ph.end(rr, "delete")
}

// diffExamples returns up to n lines of each side of a set difference, for the record.
func diffExamples(a, b map[string]bool, n int) []string {
	var out []string
	var rm, add []string
	for k := range a {
		if !b[k] {
			rm = append(rm, "- "+k)
		}
	}
	for k := range b {
		if !a[k] {
			add = append(add, "+ "+k)
		}
	}
	sort.Strings(rm)
	sort.Strings(add)
	if len(rm) > n {
		rm = rm[:n]
	}
	if len(add) > n {
		add = add[:n]
	}
	out = append(out, rm...)
	return append(out, add...)
}
