package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kproxy/kproxy/bench/internal/kstate"
	"github.com/kproxy/kproxy/bench/internal/load"
	"github.com/kproxy/kproxy/bench/internal/sandbox"
	"github.com/kproxy/kproxy/bench/internal/stats"
	"github.com/kproxy/kproxy/e2e/harness"
)

// phase measures one phase of one proxy process: CPU seconds and peak RSS from its start to
// its end (the proxy process may be a new one: then it is measured from its own start).
type phase struct {
	pid int
	cpu sandbox.CPUTimes
}

// beginPhase resets the peak RSS and reads the CPU times of the running proxy.
func beginPhase(pid int) (phase, error) {
	if err := resetPeakRSS(pid); err != nil {
		return phase{}, err
	}
	c, err := sandbox.ReadCPU(pid)
	return phase{pid: pid, cpu: c}, err
}

// endPhase records <name>.cpu_s, <name>.cpu_children_s and <name>.rss_mb.
// endChangePhase records the one-change phase's percentiles, logs them (after indent), lets
// trailing syncs settle and ends the phase (CPU, RSS).
func endChangePhase(ph phase, rr *runResult, changes int, settle time.Duration, indent string) error {
	rr.Figures["change.p50_ms"] = stats.Percentile(rr.ChangeLatenciesMs, 50)
	rr.Figures["change.p99_ms"] = stats.Percentile(rr.ChangeLatenciesMs, 99)
	logf("%sone change ×%d: p50 %.0fms p99 %.0fms", indent, changes, rr.Figures["change.p50_ms"], rr.Figures["change.p99_ms"])
	time.Sleep(settle)
	return ph.end(rr, "change")
}

func (p phase) end(rr *runResult, name string) error {
	c, err := sandbox.ReadCPU(p.pid)
	if err != nil {
		return err
	}
	rss, err := peakRSSMB(p.pid)
	if err != nil {
		return err
	}
	d := c.Sub(p.cpu)
	rr.Figures[name+".cpu_s"] = stats.Round(d.Self+d.Children, 2)
	rr.Figures[name+".cpu_children_s"] = stats.Round(d.Children, 2)
	rr.Figures[name+".rss_mb"] = stats.Round(rss, 1)
	if phaseEnded != nil {
		phaseEnded(name)
	}
	return nil
}

// phaseEnded, when set (-heap-profiles, while a kproxy runs on the host), is called at the
// end of each phase with its name. The proxies run one after another, so one hook will do.
var phaseEnded func(name string)

// saveHeapProfile saves the heap profile of the node's kproxy (--profiling) into -dump-dir:
// what is live after a garbage collection, for where the peak RSS goes.
func saveHeapProfile(cfg config, sec sectionCfg, p proxyCfg, rr *runResult, node, phaseName string) {
	saveProfile(cfg, sec, p, rr, node, "heap?gc=1", 30*time.Second, phaseName+".heap", "heap profile after "+phaseName)
}

// saveBulkProfile takes kproxy's CPU profile for cfg.ProfileBulk (started with the bulk
// create) into -dump-dir.
func saveBulkProfile(cfg config, sec sectionCfg, p proxyCfg, rr *runResult, node string) {
	query := fmt.Sprintf("profile?seconds=%d", int(cfg.ProfileBulk.Seconds()))
	saveProfile(cfg, sec, p, rr, node, query, cfg.ProfileBulk+time.Minute, "bulk.cpu", "CPU profile of the bulk create")
}

// saveProfile fetches /debug/pprof/<query> from the node's kproxy within timeout and writes
// it into -dump-dir as <proxy>-<backend>-n<N>-r<round>-<suffix>.pb.gz; what names it in the log.
func saveProfile(cfg config, sec sectionCfg, p proxyCfg, rr *runResult, node, query string, timeout time.Duration, suffix, what string) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s", harness.MetricsPort, query)
	code, body, err := harness.HTTPGet(ctx, node, url)
	if err != nil || code != 200 {
		logf("  %s: %d %v", what, code, err)
		return
	}
	name := fmt.Sprintf("%s-%s-n%d-r%d-%s.pb.gz", strings.ReplaceAll(p.Name, " ", "-"), sec.Backend, cfg.N, rr.Round, suffix)
	if err := os.MkdirAll(cfg.DumpDir, 0o755); err != nil {
		logf("  %s: %v", what, err)
		return
	}
	if err := os.WriteFile(filepath.Join(cfg.DumpDir, name), []byte(body), 0o644); err != nil {
		logf("  %s: %v", what, err)
	}
}

func runOne(cfg config, sec sectionCfg, p proxyCfg, roundNo, position int) *runResult {
	rr := &runResult{Proxy: p.Name, Round: roundNo, Position: position, Figures: map[string]float64{}}
	if err := runPhases(cfg, sec, p, rr); err != nil {
		rr.Error = err.Error()
	}
	t0 := time.Now()
	rep, err := harness.Cleanup(cfg.Prefix)
	rr.Figures["sandbox.cleanup_s"] = stats.Round(time.Since(t0).Seconds(), 2)
	if err != nil {
		logf("  cleanup: %v (%v)", err, rep)
	}
	return rr
}

func runPhases(cfg config, sec sectionCfg, p proxyCfg, rr *runResult) error {
	ctx := context.Background()
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	bin := cfg.KProxyBin
	if p.Bin != "" {
		bin = p.Bin
	}
	args := p.Args
	heap := cfg.HeapProfiles && cfg.DumpDir != "" && strings.HasPrefix(p.Name, "kproxy")
	cpuProfile := cfg.ProfileBulk > 0 && cfg.DumpDir != "" && strings.HasPrefix(p.Name, "kproxy")
	if heap || cpuProfile {
		args = append(slices.Clone(args), "--profiling")
	}
	c, err := harness.Start(sctx, harness.Options{
		Prefix: cfg.Prefix, Nodes: 1, PodsPerNode: 0, Proxy: p.Proxy, ProxyBin: bin,
		ProxyArgs: args, K8sBin: cfg.K8sBin, EchoBin: cfg.EchoBin,
		Logf: func(string, ...any) {},
	})
	cancel()
	if c != nil {
		defer c.Close()
		if cfg.DumpDir != "" {
			defer keepLog(cfg, sec, p, rr, c.ProxyLog(c.Nodes[0]))
		}
	}
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	rr.Figures["sandbox.start_s"] = stats.Round(time.Since(t0).Seconds(), 2)
	node := c.Nodes[0].Name
	if heap {
		phaseEnded = func(name string) { saveHeapProfile(cfg, sec, p, rr, node, name) }
		defer func() { phaseEnded = nil }()
	}
	cs, err := load.FastClient(c.RESTConfig)
	if err != nil {
		return err
	}
	if err := c.EnsureNamespace(ctx, benchNS); err != nil {
		return err
	}
	ps := &probeStats{}
	defer func() {
		rr.Figures["poll.full_mean_ms"] = stats.Round(ps.full.meanMs(), 1)
		rr.Figures["poll.full_count"] = float64(ps.full.N)
		rr.Figures["poll.vips_mean_ms"] = stats.Round(ps.vips.meanMs(), 1)
		rr.Figures["poll.endpoint_mean_ms"] = stats.Round(ps.endpoint.meanMs(), 1)
	}()
	pid, err := sandbox.ProxyPid(c.State, node)
	if err != nil {
		return err
	}
	capped := func(name string) { rr.Capped = append(rr.Capped, name) }
	allVIPs := func(st kstate.State) bool { return programmedVIPs(st, rr.svcs) == len(rr.svcs) }
	allIn := func(st kstate.State) bool { return programmed(st, rr.svcs) == cfg.N }

	// 1. Bulk create.
	ph, err := beginPhase(pid)
	if err != nil {
		return err
	}
	if cpuProfile {
		profiled := make(chan struct{})
		go func() { defer close(profiled); saveBulkProfile(cfg, sec, p, rr, node) }()
		defer func() { <-profiled }()
	}
	tLoad := time.Now()
	loadDone := make(chan error, 1)
	var tLoaded time.Time
	go func() {
		var err error
		rr.svcs, err = loadServices(ctx, cs, cfg.N, cfg.E, cfg.Workers)
		tLoaded = time.Now()
		loadDone <- err
	}()
	// The expected set is known only once the Services have their ClusterIPs: wait for the
	// loader (reading the VIPs meanwhile), then for the full condition.
	var loadErr error
	loaded := false
	res, err := pollVIPsThenAll(ctx, node, p.Kernel, cfg.BulkGap, cfg.Cap, ps, func(st kstate.State) bool {
		if !loaded {
			select {
			case loadErr = <-loadDone:
				loaded = true
			default:
				return false
			}
		}
		return loadErr != nil || allVIPs(st)
	}, func(st kstate.State) bool { return loadErr != nil || allIn(st) })
	if err != nil {
		return fmt.Errorf("bulk create poll: %w", err)
	}
	if !loaded {
		loadErr = <-loadDone
	}
	if loadErr != nil {
		return fmt.Errorf("bulk create: %w", loadErr)
	}
	svcs := rr.svcs
	rr.Figures["bulk.api_s"] = stats.Round(tLoaded.Sub(tLoad).Seconds(), 2)
	if res.Capped {
		capped("bulk.programmed_s")
		return fmt.Errorf("bulk create: not programmed within %v", cfg.Cap)
	}
	rr.Figures["bulk.programmed_s"] = stats.Round(res.At.Sub(tLoad).Seconds(), 2)
	rr.Figures["bulk.after_api_s"] = stats.Round(res.At.Sub(tLoaded).Seconds(), 2)
	logf("  bulk create: API %.2fs, programmed %.2fs (last write → all %.2fs)", rr.Figures["bulk.api_s"],
		rr.Figures["bulk.programmed_s"], rr.Figures["bulk.after_api_s"])
	time.Sleep(cfg.Settle)
	if err := ph.end(rr, "bulk"); err != nil {
		return err
	}
	if d, err := idleRead(ctx, node, p.Kernel, 3); err == nil {
		rr.Figures["read.idle_ms"] = stats.Round(float64(d.Microseconds())/1000, 1)
	} else {
		return err
	}
	if cfg.DumpDir != "" {
		if err := dumpRules(ctx, cfg, sec, p, node); err != nil {
			return err
		}
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
	rr.Figures["warm.healthz_s"] = stats.Round(time.Since(tStart).Seconds(), 2)
	if pid, err = sandbox.ProxyPid(c.State, node); err != nil {
		return err
	}
	ph = phase{pid: pid} // a new process: CPU from its start
	// The snapshot must come after the restarted proxy's first sync, whatever its /healthz
	// said (kube-proxy answers 200 before it): its sync timestamp metric tells when.
	synced, err := waitFirstSync(ctx, node, tStart, cfg.Cap)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if synced.IsZero() {
		capped("warm.synced_s")
		return fmt.Errorf("restart: no sync within %v", cfg.Cap)
	}
	rr.Figures["warm.synced_s"] = stats.Round(synced.Sub(tStart).Seconds(), 2)
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
	if sec.Backend != backendLegacy || p.Kernel == kstate.NFTables {
		rr.Figures["warm.objects_changed"] = float64(rr.Restart.ObjectsRemoved + rr.Restart.ObjectsAdded)
	}
	st, err := kstate.Read(ctx, node, p.Kernel)
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
	if err := flushRules(ctx, node, sec.Backend); err != nil {
		return err
	}
	tStart = time.Now()
	started := make(chan error, 1)
	go func() { started <- c.StartProxy(ctx, c.Nodes[0]) }()
	res, err = pollVIPsThenAll(ctx, node, p.Kernel, cfg.Gap, cfg.Cap, ps, allVIPs, allIn)
	if serr := <-started; serr != nil {
		return fmt.Errorf("cold restart: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("cold restart poll: %w", err)
	}
	if pid, err = sandbox.ProxyPid(c.State, node); err != nil {
		return err
	}
	if res.Capped {
		capped("cold.programmed_s")
		return fmt.Errorf("cold restart: not programmed within %v", cfg.Cap)
	}
	rr.Figures["cold.programmed_s"] = stats.Round(res.At.Sub(tStart).Seconds(), 2)
	logf("  restart (rules flushed): programmed %.2fs", rr.Figures["cold.programmed_s"])
	time.Sleep(cfg.Settle)
	if err := (phase{pid: pid}).end(rr, "cold"); err != nil {
		return err
	}

	// 3. One change at a time, read from that service's chains only.
	if ph, err = beginPhase(pid); err != nil {
		return err
	}
	probe, err := newEndpointProbe(ctx, node, p.Kernel, sec.Backend)
	if err != nil {
		return err
	}
	defer probe.close()
	for k := 0; k < cfg.Changes; k++ {
		s := svcs[(k*cfg.N/cfg.Changes+k)%cfg.N]
		addr := netip.AddrPortFrom(changeAddr(k), targetPort).String()
		tw := time.Now()
		if err := changeEndpoint(ctx, cs, s, addr); err != nil {
			return err
		}
		res, err := pollEndpoint(ctx, probe, s, addr, cfg.Gap, cfg.Cap, &ps.endpoint)
		if err != nil {
			return fmt.Errorf("one change poll: %w", err)
		}
		if res.Capped {
			capped("change.p99_ms")
			return fmt.Errorf("one change: %s not programmed within %v", addr, cfg.Cap)
		}
		rr.ChangeLatenciesMs = append(rr.ChangeLatenciesMs, stats.Round(float64(res.At.Sub(tw).Microseconds())/1000, 1))
		if d := cfg.Spacing - time.Since(tw); d > 0 && k < cfg.Changes-1 {
			time.Sleep(d)
		}
	}
	if err := endChangePhase(ph, rr, cfg.Changes, cfg.Settle, "  "); err != nil {
		return err
	}

	// 4. Churn.
	if cfg.ChurnRate > 0 && cfg.ChurnDuration > 0 {
		if ph, err = beginPhase(pid); err != nil {
			return err
		}
		if err := runChurn(ctx, cfg, cs, node, p.Kernel, probe, svcs, ps, rr); err != nil {
			return err
		}
		logf("  churn %.0f/s × %v: p50 %.0fms p99 %.0fms max %.0fms (%d tracked, %d superseded), drain %.2fs, kept up %v",
			cfg.ChurnRate, cfg.ChurnDuration, rr.Figures["churn.p50_ms"], rr.Figures["churn.p99_ms"], rr.Figures["churn.max_ms"],
			int(rr.Figures["churn.tracked"]), int(rr.Figures["churn.superseded"]), rr.Figures["churn.drain_s"], rr.Figures["churn.kept_up"] == 1)
		time.Sleep(cfg.Settle)
		if err := ph.end(rr, "churn"); err != nil {
			return err
		}
	}

	// 5. Bulk delete.
	if ph, err = beginPhase(pid); err != nil {
		return err
	}
	tDel := time.Now()
	if err := deleteAll(ctx, cs, svcs, cfg.Workers); err != nil {
		return err
	}
	tDeleted := time.Now()
	rr.Figures["delete.api_s"] = stats.Round(tDeleted.Sub(tDel).Seconds(), 2)
	res, err = pollVIPsThenAll(ctx, node, p.Kernel, cfg.BulkGap, cfg.Cap, ps,
		func(st kstate.State) bool { return programmedVIPs(st, svcs) == 0 },
		func(st kstate.State) bool {
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
	rr.Figures["delete.removed_s"] = stats.Round(res.At.Sub(tDel).Seconds(), 2)
	rr.Figures["delete.after_api_s"] = stats.Round(res.At.Sub(tDeleted).Seconds(), 2)
	logf("  bulk delete: API %.2fs, rules gone %.2fs", rr.Figures["delete.api_s"], rr.Figures["delete.removed_s"])
	time.Sleep(cfg.Settle)
	return ph.end(rr, "delete")
}

// pollEndpoint waits until addr is one of s's endpoints in the kernel (endpointProbe).
func pollEndpoint(ctx context.Context, probe *endpointProbe, s *benchService, addr string, gap, capd time.Duration, ps *pollStats) (pollResult, error) {
	deadline := time.Now().Add(capd)
	if probe.monitor != nil {
		gap = 5 * time.Millisecond // a map lookup, not a kernel read
	}
	for {
		t0 := time.Now()
		at, ok, err := probe.seen(ctx, s, addr)
		t1 := time.Now()
		if probe.monitor == nil {
			ps.add(t1.Sub(t0))
		}
		if err != nil {
			return pollResult{}, err
		}
		if ok {
			return pollResult{At: at, Start: t0, End: t1}, nil
		}
		if t1.After(deadline) {
			return pollResult{Capped: true}, nil
		}
		if err := sleepCtx(ctx, gap); err != nil {
			return pollResult{}, err
		}
	}
}

// programmedVIPs counts the services of the load whose ClusterIP has a service rule in st.
func programmedVIPs(st kstate.State, svcs []*benchService) int {
	n := 0
	for _, s := range svcs {
		if st.VIPs[s.vip] {
			n++
		}
	}
	return n
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

// dumpRules writes the node's rules to -dump-dir: iptables-save (every table) and nft list
// ruleset.
func dumpRules(ctx context.Context, cfg config, sec sectionCfg, p proxyCfg, node string) error {
	if err := os.MkdirAll(cfg.DumpDir, 0o755); err != nil {
		return err
	}
	base := filepath.Join(cfg.DumpDir, fmt.Sprintf("%s-%s-n%d", strings.ReplaceAll(p.Name, " ", "-"), sec.Backend, cfg.N))
	for ext, args := range map[string][]string{"iptables-save": {"iptables-save"}, "nft": {"nft", "list", "ruleset"}} {
		out, err := harness.Exec(ctx, node, args...)
		if err != nil {
			return err
		}
		if err := os.WriteFile(base+"."+ext+".txt", []byte(out), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// keepLog copies the proxy's log to -dump-dir before the sandbox is removed.
func keepLog(cfg config, sec sectionCfg, p proxyCfg, rr *runResult, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		logf("  keep log: %v", err)
		return
	}
	name := fmt.Sprintf("%s-%s-n%d-r%d.log", strings.ReplaceAll(p.Name, " ", "-"), sec.Backend, cfg.N, rr.Round)
	if err := os.WriteFile(filepath.Join(cfg.DumpDir, name), b, 0o644); err != nil {
		logf("  keep log: %v", err)
	}
}

// waitFirstSync polls the proxy's metrics until kubeproxy_sync_proxy_rules_last_timestamp_seconds
// (kproxy and kube-proxy both export it) is after since; it returns that time, zero after capd.
// The proxy's word, used only to choose when to read the kernel.
func waitFirstSync(ctx context.Context, node string, since time.Time, capd time.Duration) (time.Time, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", harness.MetricsPort)
	deadline := time.Now().Add(capd)
	for time.Now().Before(deadline) {
		code, body, err := harness.HTTPGet(ctx, node, url)
		if err == nil && code == 200 {
			if t := lastSyncMetric(body); t.After(since) {
				return t, nil
			}
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
	return time.Time{}, nil
}

// lastSyncMetric is the latest kubeproxy_sync_proxy_rules_last_timestamp_seconds in a metrics
// page, with or without labels (ip_family); zero when absent.
func lastSyncMetric(body string) time.Time {
	var last time.Time
	for _, l := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(l, "kubeproxy_sync_proxy_rules_last_timestamp_seconds")
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil && v > 0 {
			if t := time.Unix(0, int64(v*1e9)); t.After(last) {
				last = t
			}
		}
	}
	return last
}
