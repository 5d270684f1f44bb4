package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	libipvs "github.com/moby/ipvs"

	"github.com/kproxy/kproxy/bench/internal/load"
	"github.com/kproxy/kproxy/bench/internal/stats"
)

// The guest half of -mode ipvs: kpbench itself, run by e2e/vm/run-test.sh inside the VM with
// -ipvs-guest. It drives every phase and reads every time on the guest's clock: it runs each
// proxy in turn (order alternating over rounds), asks the host (the ctl server, reached through
// the guestfwd 192.0.2.100:7000) to write to the apiserver, and reads the VM's IPVS table.
// At the end it posts its sections to the host, which summarises and prints them.

const (
	guestCtl      = "http://192.0.2.100:7000"
	guestNode     = "kpbv-vm"
	guestHealthz  = "http://127.0.0.1:10256/healthz"
	guestMetrics  = "http://127.0.0.1:10249/metrics"
	guestKubeconf = "/kproxy/kubeconfig"
)

// ipvsProxies are the proxies of -mode ipvs, with the command line each runs with in the VM
// (the harness's flags for the iptables mode, with the IPVS mode).
var ipvsProxies = []proxyCfg{
	{Name: "kproxy", Proxy: harnessNone, Kernel: kernelIPVS, Args: []string{"/kproxy/kproxy", "--mode=ipvs"}},
	{Name: "kube-proxy ipvs", Proxy: harnessNone, Kernel: kernelIPVS, Args: []string{"/kproxy/kube-proxy", "--proxy-mode=ipvs",
		// zeros: do not write the conntrack sysctls (as the harness runs kube-proxy)
		"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0"}},
}

const (
	harnessNone = "none (in the VM)"
	kernelIPVS  = "ipvs"
	backendIPVS = "ipvs"
)

// kproxyBaseIPVS is "kproxy base" of -mode ipvs: a second kproxy binary (-kproxy-base-bin,
// /kproxy/kproxy-base in the VM), same flags: before/after in one run.
var kproxyBaseIPVS = proxyCfg{Name: "kproxy base", Proxy: harnessNone, Kernel: kernelIPVS, Args: []string{"/kproxy/kproxy-base", "--mode=ipvs"}}

// selectIPVSProxies is ipvsProxies (with "kproxy base" when base), or those named in only
// (comma-separated).
func selectIPVSProxies(only string, base bool) []proxyCfg {
	all := ipvsProxies
	if base {
		all = append(append([]proxyCfg(nil), ipvsProxies...), kproxyBaseIPVS)
	}
	if only == "" {
		return all
	}
	var out []proxyCfg
	for _, p := range all {
		if strings.Contains(","+only+",", ","+p.Name+",") {
			out = append(out, p)
		}
	}
	return out
}

// guestProfiling is -profile-cold > 0: kproxy runs with --profiling.
var guestProfiling bool

func guestProxyArgs(p proxyCfg) []string {
	args := append(append([]string(nil), p.Args...), "--kubeconfig="+guestKubeconf, "--hostname-override="+guestNode,
		"--cluster-cidr=100.64.0.0/16", "--healthz-bind-address=0.0.0.0:10256",
		"--metrics-bind-address=127.0.0.1:10249", "-v=2")
	if guestProfiling && strings.HasPrefix(p.Name, "kproxy") {
		args = append(args, "--profiling")
	}
	return args
}

// profileCold takes a CPU profile of the proxy (kproxy --profiling) for d, starting at
// after, and posts it to the host's dump directory base64-encoded as name.
func profileCold(ctl *ctlClient, after, d time.Duration, name string) {
	time.Sleep(after)
	hc := &http.Client{Timeout: d + time.Minute}
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:10249/debug/pprof/profile?seconds=%d", int(d.Seconds())))
	if err != nil {
		logf("guest: profile: %v", err)
		return
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		logf("guest: profile: %d %v", resp.StatusCode, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ctl.call(ctx, "/log", map[string]string{"name": name, "log": base64.StdEncoding.EncodeToString(b)}, nil); err != nil {
		logf("guest: post profile: %v", err)
	}
}

// guestReport is what the guest posts to the host at the end.
type guestReport struct {
	Kernel   string            `json:"kernel"`
	Versions map[string]string `json:"versions"`
	Sections []*section        `json:"sections"`
	Error    string            `json:"error,omitempty"`
	// Complete is false in the reports posted after each run (so that a VM run stopped
	// early still leaves the runs that finished), true in the last.
	Complete bool `json:"complete"`
}

// ctlClient talks to the host's ctl server.
type ctlClient struct{ hc *http.Client }

func (c *ctlClient) call(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, guestCtl+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("ctl %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ctl %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

func ipvsGuest(cfg config) error {
	if os.Getenv("KPROXY_IN_VM") != "1" {
		return fmt.Errorf("-ipvs-guest runs inside the VM only (e2e/vm/run-test.sh); use -mode ipvs")
	}
	guestProfiling = cfg.ProfileCold > 0
	ctl := &ctlClient{hc: &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 2}}}
	rep := &guestReport{Kernel: readTrim("/proc/sys/kernel/osrelease"), Versions: map[string]string{}}
	tools := map[string][]string{"kproxy": {"/kproxy/kproxy", "--version"}, "kube-proxy": {"/kproxy/kube-proxy", "--version"},
		"iptables": {"iptables", "--version"}, "ipset": {"ipset", "--version"}, "ipvsadm": {"ipvsadm", "--version"}}
	if cfg.BaseBin != "" {
		tools["kproxyBase"] = []string{"/kproxy/kproxy-base", "--version"}
	}
	for name, args := range tools {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			rep.Versions[name] = "? (" + err.Error() + ")"
		} else {
			rep.Versions[name] = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
		}
	}
	logf("guest: kernel %s, %v", rep.Kernel, rep.Versions)
	err := guestSections(cfg, ctl, rep)
	if err != nil {
		rep.Error = err.Error()
	}
	rep.Complete = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if perr := ctl.call(ctx, "/report", rep, nil); perr != nil {
		return errors.Join(err, perr)
	}
	return err
}

func guestSections(cfg config, ctl *ctlClient, rep *guestReport) error {
	h, err := libipvs.New("")
	if err != nil {
		return fmt.Errorf("IPVS socket: %w", err)
	}
	defer h.Close()
	for _, n := range cfg.Ns {
		cfg.N = n
		sec := &section{sectionCfg: sectionCfg{N: n, Backend: backendIPVS}, IPTables: rep.Versions["iptables"],
			Proxies: selectIPVSProxies(cfg.Only, cfg.BaseBin != ""), Floors: map[string]float64{}}
		rep.Sections = append(rep.Sections, sec)
		if cfg.Floors {
			t0 := time.Now()
			if err := measureIPVSFloors(n, cfg.E, sec.Floors); err != nil {
				return fmt.Errorf("floors: %w", err)
			}
			logf("guest: N=%d floors %v (%.1fs)", n, sec.Floors, time.Since(t0).Seconds())
		}
		for r := 0; r < cfg.Rounds; r++ {
			order := append([]proxyCfg(nil), sec.Proxies...)
			if r%2 == 1 {
				order[0], order[len(order)-1] = order[len(order)-1], order[0]
			}
			for pos, p := range order {
				logf("guest: N=%d round %d/%d, %d/%d: %s", n, r+1, cfg.Rounds, pos+1, len(order), p.Name)
				rr := &runResult{Proxy: p.Name, Round: r + 1, Position: pos + 1, Figures: map[string]float64{}}
				if err := guestRun(cfg, ctl, h, p, rr); err != nil {
					rr.Error = err.Error()
					logf("guest:   %s: %v", p.Name, err)
				}
				sec.Runs = append(sec.Runs, rr)
				if cfg.DumpDir != "" {
					postLog(ctl, guestLog(p, cfg.N, rr.Round))
				}
				postPartial(ctl, rep)
			}
		}
	}
	return nil
}

// guestPollStats are the guest's kernel reads: /proc/net/ip_vs, that plus kube-ipvs0 and
// KUBE-CLUSTER-IP, one virtual server's real servers.
type guestPollStats struct{ full, extras, endpoint pollStats }

// guestProxy is a proxy process in the VM.
type guestProxy struct {
	cmd     *exec.Cmd
	exited  chan error
	log     string
	stopped bool
}

func startGuestProxy(p proxyCfg, log string) (*guestProxy, error) {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args := guestProxyArgs(p)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, err
	}
	g := &guestProxy{cmd: cmd, exited: make(chan error, 1), log: log}
	go func() { g.exited <- cmd.Wait(); _ = f.Close() }()
	return g, nil
}

func (g *guestProxy) pid() int { return g.cmd.Process.Pid }

// stop sends SIGTERM and waits (SIGKILL after 30 s); once.
func (g *guestProxy) stop() {
	if g.stopped {
		return
	}
	g.stopped = true
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-g.exited:
	case <-time.After(30 * time.Second):
		_ = g.cmd.Process.Kill()
		err = <-g.exited
	}
	_ = err // exit status of a stopped proxy: not a finding
}

// waitHealthy polls /healthz until 200 (error if the proxy exits or capd passes).
func (g *guestProxy) waitHealthy(capd time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(capd)
	for time.Now().Before(deadline) {
		select {
		case err := <-g.exited:
			g.exited <- err
			return fmt.Errorf("proxy exited: %w; log tail:\n%s", err, tail(g.log, 30))
		default:
		}
		if resp, err := hc.Get(guestHealthz); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no /healthz 200 within %v; log tail:\n%s", capd, tail(g.log, 30))
}

// waitSynced polls the proxy's metrics until its last-sync timestamp passes since (the proxy's
// word: only used to know when to read the kernel); zero after capd.
func waitSynced(since time.Time, capd time.Duration) time.Time {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(capd)
	for time.Now().Before(deadline) {
		if resp, err := hc.Get(guestMetrics); err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if t := lastSyncMetric(string(b)); t.After(since) {
				return t
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Time{}
}

// pollIPVS reads the IPVS table until cond holds (ready() false: not checked yet), spacing
// reads by max(gap, 3 × the last read's duration) so that the poller takes at most a quarter
// of the VM's one vCPU. The time is the midpoint of the first read that saw it. capd counts
// from when ready() first holds (bulk create: the loader's reply, whose own time is not the
// proxy's); before that, reads go on for at most another capd.
func pollIPVS(gap, capd time.Duration, ps *pollStats, ready func() bool, cond func(ipvsState) bool) (pollResult, error) {
	deadline := time.Now().Add(capd)
	wasReady := false
	for {
		st, at, d, err := readTimed()
		if err != nil {
			return pollResult{}, err
		}
		ps.add(d)
		ok := ready()
		if ok && !wasReady {
			wasReady, deadline = true, time.Now().Add(capd)
		}
		if ok && cond(st) {
			return pollResult{At: at}, nil
		}
		if time.Now().After(deadline) {
			return pollResult{Capped: true}, nil
		}
		time.Sleep(max(gap, 3*d))
	}
}

// pollFull reads the IPVS table, kube-ipvs0 and KUBE-CLUSTER-IP until every service is fully
// programmed (fullOK), reads spaced as in pollIPVS; the time is the midpoint of the reads that
// saw it.
func pollFull(gap, capd time.Duration, ps *pollStats, svcs []*benchService) (pollResult, error) {
	deadline := time.Now().Add(capd)
	for {
		t0 := time.Now()
		st, err := readIPVSProc()
		if err != nil {
			return pollResult{}, err
		}
		ex := readExtras()
		t1 := time.Now()
		ps.add(t1.Sub(t0))
		all := true
		for _, s := range svcs {
			if !fullOK(st, ex, s) {
				all = false
				break
			}
		}
		if all {
			return pollResult{At: t0.Add(t1.Sub(t0) / 2)}, nil
		}
		if t1.After(deadline) {
			return pollResult{Capped: true}, nil
		}
		time.Sleep(max(gap, 3*t1.Sub(t0)))
	}
}

// guestRun is one proxy in one round: bulk create, restart with the state kept, restart from a
// flushed kernel, one change at a time, bulk delete.
func guestRun(cfg config, ctl *ctlClient, h *libipvs.Handle, p proxyCfg, rr *runResult) (err error) {
	ctx := context.Background()
	if err := ctl.call(ctx, "/delete", struct{}{}, nil); err != nil { // whatever a failed run left
		return err
	}
	if err := flushIPVSNode(); err != nil {
		return err
	}
	log := guestLog(p, cfg.N, rr.Round)
	t0 := time.Now()
	g, err := startGuestProxy(p, log)
	if err != nil {
		return err
	}
	defer func() { g.stop() }()
	if err := g.waitHealthy(cfg.Cap); err != nil {
		return err
	}
	rr.Figures["start.healthz_s"] = stats.Round(time.Since(t0).Seconds(), 2)
	ps := &guestPollStats{}
	defer func() {
		rr.Figures["poll.extras_mean_ms"] = stats.Round(ps.extras.meanMs(), 1)
		rr.Figures["poll.full_mean_ms"] = stats.Round(ps.full.meanMs(), 1)
		rr.Figures["poll.full_count"] = float64(ps.full.N)
		rr.Figures["poll.endpoint_mean_ms"] = stats.Round(ps.endpoint.meanMs(), 1)
	}()
	capped := func(name string) { rr.Capped = append(rr.Capped, name) }
	var svcs []*benchService
	// inIPVS counts the services fully in IPVS.
	inIPVS := func(st ipvsState) int {
		n := 0
		for _, s := range svcs {
			if ipvsOK(st, s) {
				n++
			}
		}
		return n
	}
	allIn := func(st ipvsState) bool { return inIPVS(st) == len(svcs) }

	// 1. Bulk create: the host loads, the guest reads.
	ph, err := beginPhase(g.pid())
	if err != nil {
		return err
	}
	type loadReply struct {
		APIS float64  `json:"apiS"`
		VIPs []string `json:"vips"`
	}
	tLoad := time.Now()
	var lr loadReply
	loadDone := make(chan error, 1)
	var tLoaded time.Time
	go func() {
		err := ctl.call(ctx, "/load", map[string]int{"n": cfg.N, "e": cfg.E}, &lr)
		tLoaded = time.Now()
		loadDone <- err
	}()
	var loadErr error
	loaded := false
	ready := func() bool {
		if !loaded {
			select {
			case loadErr = <-loadDone:
				loaded = true
				if loadErr == nil {
					svcs = guestServices(lr.VIPs, cfg.E)
				}
			default:
			}
		}
		return loaded
	}
	inAtLastRead := 0 // services programmed at the last read, for a capped phase's report
	res, err := pollIPVS(cfg.BulkGap, cfg.Cap, &ps.full, ready, func(st ipvsState) bool {
		if loadErr != nil {
			return true
		}
		inAtLastRead = inIPVS(st)
		return inAtLastRead == len(svcs)
	})
	if err != nil {
		return err
	}
	if loadErr != nil {
		return fmt.Errorf("bulk create: %w", loadErr)
	}
	if res.Capped {
		capped("bulk.programmed_s")
		if !loaded {
			return fmt.Errorf("bulk create: the loader did not finish within %v", cfg.Cap)
		}
		rr.Figures["bulk.api_s"] = stats.Round(lr.APIS, 2)
		rr.Figures["bulk.programmed_at_cap"] = float64(inAtLastRead)
		return fmt.Errorf("bulk create: %d of %d services in IPVS %v after the loader's reply (its writes took %.1fs)",
			inAtLastRead, len(svcs), cfg.Cap, lr.APIS)
	}
	rr.Figures["bulk.api_s"] = stats.Round(lr.APIS, 2)
	rr.Figures["bulk.programmed_s"] = stats.Round(res.At.Sub(tLoad).Seconds(), 2)
	rr.Figures["bulk.after_api_s"] = stats.Round(res.At.Sub(tLoaded).Seconds(), 2)
	logf("guest:   bulk create: API %.2fs, programmed %.2fs (loader's reply → all %.2fs)", lr.APIS,
		rr.Figures["bulk.programmed_s"], rr.Figures["bulk.after_api_s"])
	if res, err = pollFull(cfg.BulkGap, cfg.Cap, &ps.extras, svcs); err != nil {
		return err
	}
	if res.Capped {
		capped("bulk.full_after_api_s")
		return fmt.Errorf("bulk create: addresses and KUBE-CLUSTER-IP not complete within %v", cfg.Cap)
	}
	rr.Figures["bulk.full_after_api_s"] = stats.Round(res.At.Sub(tLoaded).Seconds(), 2)
	logf("guest:   bulk create: loader's reply → all also on kube-ipvs0 and in KUBE-CLUSTER-IP %.2fs", rr.Figures["bulk.full_after_api_s"])
	time.Sleep(cfg.Settle)
	if err := ph.end(rr, "bulk"); err != nil {
		return err
	}
	var reads []float64
	for i := 0; i < 3; i++ {
		_, _, d, err := readTimed()
		if err != nil {
			return err
		}
		reads = append(reads, float64(d.Microseconds())/1000)
	}
	rr.Figures["read.idle_ms"] = stats.Round(stats.Median(reads), 1)

	// 2a. Restart with the state kept, once the proxy has stopped writing (two snapshots 2 s
	// apart alike): the diff is then what the restart changed, not what was still in flight.
	// A proxy still writing after -quiet-cap is restarted anyway: warm.quiet_s is then
	// "> cap" and the diff includes what it was writing.
	tq := time.Now()
	before, err := takeIPVSSnapshot()
	if err != nil {
		return err
	}
	for {
		time.Sleep(2 * time.Second)
		again, err := takeIPVSSnapshot()
		if err != nil {
			return err
		}
		same := snapEqual(before, again)
		if !same {
			logf("guest:   state still changing before the restart: %s", snapDiffSummary(before, again))
		}
		before = again
		if same {
			rr.Figures["warm.quiet_s"] = stats.Round(time.Since(tq).Seconds(), 2)
			break
		}
		if time.Since(tq) > cfg.QuietCap {
			capped("warm.quiet_s")
			break
		}
	}
	g.stop()
	tStart := time.Now()
	if g, err = startGuestProxy(p, log); err != nil {
		return err
	}
	if err := g.waitHealthy(cfg.Cap); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	rr.Figures["warm.healthz_s"] = stats.Round(time.Since(tStart).Seconds(), 2)
	synced := waitSynced(tStart, cfg.Cap)
	if synced.IsZero() {
		capped("warm.synced_s")
		return fmt.Errorf("restart: no sync within %v", cfg.Cap)
	}
	rr.Figures["warm.synced_s"] = stats.Round(synced.Sub(tStart).Seconds(), 2)
	time.Sleep(cfg.Settle + time.Second)
	after, err := takeIPVSSnapshot()
	if err != nil {
		return err
	}
	if err := (phase{pid: g.pid()}).end(rr, "warm"); err != nil {
		return err
	}
	total := 0
	for _, kind := range snapshotKinds {
		rm, add := diffCount(before[kind], after[kind])
		rr.Figures["warm."+kind+"_changed"] = float64(rm + add)
		total += rm + add
		rr.Restart.Examples = append(rr.Restart.Examples, diffExamples(before[kind], after[kind], 3)...)
	}
	rr.Figures["warm.lines_changed"] = float64(total)
	rr.Restart.LinesRemoved, rr.Restart.LinesAdded = diffCount(mergeSnap(before), mergeSnap(after))
	st, err := readIPVSProc()
	if err != nil {
		return err
	}
	if !allIn(st) {
		return fmt.Errorf("after a restart with the state kept not every service is programmed")
	}
	logf("guest:   restart (state kept): healthz %.2fs, synced %.2fs, objects changed %d (ipvs %v, ipset %v, iptables %v, addrs %v)",
		rr.Figures["warm.healthz_s"], rr.Figures["warm.synced_s"], total, rr.Figures["warm.ipvs_changed"],
		rr.Figures["warm.ipset_changed"], rr.Figures["warm.iptables_changed"], rr.Figures["warm.addrs_changed"])

	// 2b. Restart from a flushed kernel: a cold start with N services present.
	g.stop()
	if err := flushIPVSNode(); err != nil {
		return err
	}
	if cfg.ColdWait > 0 {
		// the kernel frees deleted real servers from its trash list only after
		// IP_VS_DEST_TRASH_PERIOD, and every add walks that list first
		logf("guest:   waiting %v after the flush", cfg.ColdWait)
		time.Sleep(cfg.ColdWait)
	}
	tStart = time.Now()
	if g, err = startGuestProxy(p, log); err != nil {
		return err
	}
	healthy := make(chan error, 1)
	go func() { healthy <- g.waitHealthy(cfg.Cap) }()
	var profiled sync.WaitGroup
	if guestProfiling && strings.HasPrefix(p.Name, "kproxy") {
		profiled.Go(func() {
			profileCold(ctl, 6*time.Second, cfg.ProfileCold, fmt.Sprintf("%s-cold-n%d.pprof.b64", strings.ReplaceAll(p.Name, " ", "-"), cfg.N))
		})
	}
	res, err = pollIPVS(cfg.Gap, cfg.Cap, &ps.full, func() bool { return true }, allIn)
	profiled.Wait()
	if herr := <-healthy; herr != nil {
		return fmt.Errorf("cold restart: %w", herr)
	}
	if err != nil {
		return err
	}
	if res.Capped {
		capped("cold.programmed_s")
		return fmt.Errorf("cold restart: not programmed within %v", cfg.Cap)
	}
	rr.Figures["cold.programmed_s"] = stats.Round(res.At.Sub(tStart).Seconds(), 2)
	if res, err = pollFull(cfg.Gap, cfg.Cap, &ps.extras, svcs); err != nil {
		return err
	}
	if res.Capped {
		capped("cold.full_s")
		return fmt.Errorf("cold restart: addresses and KUBE-CLUSTER-IP not complete within %v", cfg.Cap)
	}
	rr.Figures["cold.full_s"] = stats.Round(res.At.Sub(tStart).Seconds(), 2)
	logf("guest:   restart (kernel flushed): programmed %.2fs, also on kube-ipvs0 and in KUBE-CLUSTER-IP %.2fs",
		rr.Figures["cold.programmed_s"], rr.Figures["cold.full_s"])
	time.Sleep(cfg.Settle)
	if err := (phase{pid: g.pid()}).end(rr, "cold"); err != nil {
		return err
	}

	// 3. One change at a time: the new real server in that virtual server (one netlink dump).
	if ph, err = beginPhase(g.pid()); err != nil {
		return err
	}
	for k := 0; k < cfg.Changes; k++ {
		i := (k*cfg.N/cfg.Changes + k) % cfg.N
		s := svcs[i]
		addr := netip.AddrPortFrom(changeAddr(k), targetPort)
		tw := time.Now()
		if err := ctl.call(ctx, "/change", map[string]any{"i": i, "addr": addr.String()}, nil); err != nil {
			return err
		}
		vs := &libipvs.Service{AddressFamily: syscall.AF_INET, Protocol: syscall.IPPROTO_TCP,
			Address: net.ParseIP(s.vip), Port: servicePort}
		deadline := time.Now().Add(cfg.Cap)
		var at time.Time
		for at.IsZero() {
			t0 := time.Now()
			dests, err := h.GetDestinations(vs)
			t1 := time.Now()
			ps.endpoint.add(t1.Sub(t0))
			if err == nil {
				for _, d := range dests {
					if d.Port == targetPort && d.Weight > 0 && d.Address.Equal(net.IP(addr.Addr().AsSlice())) {
						at = t0.Add(t1.Sub(t0) / 2)
					}
				}
			}
			if at.IsZero() {
				if t1.After(deadline) {
					capped("change.p99_ms")
					return fmt.Errorf("one change: %s not programmed within %v", addr, cfg.Cap)
				}
				time.Sleep(cfg.Gap)
			}
		}
		s.eps = append([]string{addr.String()}, s.eps[1:]...)
		rr.ChangeLatenciesMs = append(rr.ChangeLatenciesMs, stats.Round(float64(at.Sub(tw).Microseconds())/1000, 1))
		if d := cfg.Spacing - time.Since(tw); d > 0 && k < cfg.Changes-1 {
			time.Sleep(d)
		}
	}
	if err := endChangePhase(ph, rr, cfg.Changes, cfg.Settle, "guest:   "); err != nil {
		return err
	}

	// 3b. Churn (ipvs_churn.go).
	if cfg.ChurnRate > 0 && cfg.ChurnDuration > 0 {
		if ph, err = beginPhase(g.pid()); err != nil {
			return err
		}
		if err := guestChurn(cfg, ctl, h, svcs, ps, rr); err != nil {
			return err
		}
		time.Sleep(cfg.Settle)
		if err := ph.end(rr, "churn"); err != nil {
			return err
		}
		f := rr.Figures
		logf("guest:   churn: %.0f writes at %.1f/s, p50 %.0fms p99 %.0fms, kept up %v, drain %.2fs",
			f["churn.writes"], f["churn.rate_per_s"], f["churn.p50_ms"], f["churn.p99_ms"], f["churn.kept_up"] == 1, f["churn.drain_s"])
	}

	// 4. Bulk delete.
	if ph, err = beginPhase(g.pid()); err != nil {
		return err
	}
	var dr loadReply
	tDel := time.Now()
	if err := ctl.call(ctx, "/delete", struct{}{}, &dr); err != nil {
		return err
	}
	tDeleted := time.Now()
	rr.Figures["delete.api_s"] = stats.Round(dr.APIS, 2)
	res, err = pollIPVS(cfg.BulkGap, cfg.Cap, &ps.full, func() bool { return true }, func(st ipvsState) bool {
		for _, s := range svcs {
			if !ipvsGone(st, s) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	if res.Capped {
		capped("delete.removed_s")
		return fmt.Errorf("bulk delete: virtual servers still there after %v", cfg.Cap)
	}
	rr.Figures["delete.removed_s"] = stats.Round(res.At.Sub(tDel).Seconds(), 2)
	rr.Figures["delete.after_api_s"] = stats.Round(res.At.Sub(tDeleted).Seconds(), 2)
	logf("guest:   bulk delete: API %.2fs, virtual servers gone %.2fs", dr.APIS, rr.Figures["delete.removed_s"])
	time.Sleep(cfg.Settle)
	return ph.end(rr, "delete")
}

// guestServices is the load as the guest knows it: the i-th Service has ClusterIP vips[i] and
// the endpoints load() gives it.
func guestServices(vips []string, e int) []*benchService {
	out := make([]*benchService, len(vips))
	for i, v := range vips {
		s := &benchService{name: fmt.Sprintf("svc-%05d", i), vip: v}
		for k := 0; k < e; k++ {
			s.eps = append(s.eps, netip.AddrPortFrom(load.EndpointAddr(i*e+k), targetPort).String())
		}
		out[i] = s
	}
	return out
}

func snapEqual(a, b ipvsSnapshot) bool {
	for _, kind := range snapshotKinds {
		if rm, add := diffCount(a[kind], b[kind]); rm+add > 0 {
			return false
		}
	}
	return true
}

// snapDiffSummary says, per kind, how many lines went and came, with one example.
func snapDiffSummary(a, b ipvsSnapshot) string {
	var parts []string
	for _, kind := range snapshotKinds {
		if rm, add := diffCount(a[kind], b[kind]); rm+add > 0 {
			ex := diffExamples(a[kind], b[kind], 1)
			parts = append(parts, fmt.Sprintf("%s -%d +%d %q", kind, rm, add, ex))
		}
	}
	return strings.Join(parts, "; ")
}

func mergeSnap(s ipvsSnapshot) map[string]bool {
	out := map[string]bool{}
	for kind, lines := range s {
		for l := range lines {
			out[kind+" "+l] = true
		}
	}
	return out
}

// postPartial posts the report so far (Complete false).
func postPartial(ctl *ctlClient, rep *guestReport) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ctl.call(ctx, "/report", rep, nil); err != nil {
		logf("guest: post the report so far: %v", err)
	}
}

// guestLog is where a proxy's log goes in the VM.
func guestLog(p proxyCfg, n, round int) string {
	return fmt.Sprintf("/tmp/%s-ipvs-n%d-r%d.log", strings.ReplaceAll(p.Name, " ", "-"), n, round)
}

// postLog sends a proxy's log to the host (-dump-dir).
func postLog(ctl *ctlClient, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		logf("guest: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ctl.call(ctx, "/log", map[string]string{"name": filepath.Base(path), "log": string(b)}, nil); err != nil {
		logf("guest: post log: %v", err)
	}
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
