// Command kpdataplane measures the service data plane (issue 8): the new-connection rate and
// the first-packet latency through a ClusterIP from a pod, with B other Services programmed
// (default 10 and 10,000), for kproxy --mode=iptables against upstream kube-proxy
// --proxy-mode=iptables and --proxy-mode=nftables, and as the limit the same against the
// backend pod's IP with no proxy and no rules in the node.
//
// One e2e sandbox (e2e/harness: kube-apiserver + etcd) for the whole run, with one node
// namespace per proxy, each with a client pod, a backend pod running this binary with -serve
// (a 1-byte echo) and its target Service (port 80, the backend pod as its only endpoint, a
// hand-written EndpointSlice). Every proxy runs from the start and programs the background
// Services as they are loaded (E endpoints each, as kpbench's loader; a cold start per round
// would take kube-proxy iptables about 12 minutes at 10,000). For each B, once every node's
// kernel holds every Service (iptables-save -t nat, nft list table ip kube-proxy) and its
// target VIP answers, each round measures each node in turn (alternating order), the other
// proxies stopped (SIGSTOP) and this one idle: closed loops from the client pod (this binary
// with -client, in the pod's namespace): connect, 1-byte request/response, close
// (SO_LINGER 0), for -duration with each worker count of -workers, to VIP:80 and to the pod IP
// directly. See bench/README.md, "Data plane".
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/bench/internal/kstate"
	"github.com/kproxy/kproxy/bench/internal/load"
	"github.com/kproxy/kproxy/bench/internal/record"
	"github.com/kproxy/kproxy/bench/internal/sandbox"
	"github.com/kproxy/kproxy/bench/internal/stats"
	"github.com/kproxy/kproxy/e2e/harness"
	"github.com/kproxy/kproxy/internal/netnsutil"
)

// proxyCfg is one proxy under test.
type proxyCfg struct {
	Name   string      `json:"name"`
	Proxy  string      `json:"harnessProxy"`
	Args   []string    `json:"extraArgs,omitempty"`
	Kernel kstate.Kind `json:"kernel,omitempty"`
}

var allProxies = []proxyCfg{
	{Name: "kproxy", Proxy: harness.ProxyKProxy, Kernel: kstate.IPTables},
	{Name: "kube-proxy iptables", Proxy: harness.ProxyKubeProxy, Kernel: kstate.IPTables},
	{Name: "kube-proxy nftables", Proxy: harness.ProxyKubeProxy, Args: []string{"--proxy-mode=nftables"}, Kernel: kstate.NFTables},
	{Name: noProxy, Proxy: harness.ProxyNone},
}

type config struct {
	Sizes                     []int
	E, Rounds, LoadWorkers    int
	Workers                   []int
	Duration, Warmup, Timeout time.Duration
	Settle, QuietCap, Cap     time.Duration
	Prefix                    string
	KProxyBin, K8sBin         string
	EchoBin, ResultsDir, Only string
	TargetNS, TargetName      string
	What                      string
	Self                      string
}

func main() {
	var cfg config
	repo := record.RepoRoot()
	var sizes, workers string
	fs := flag.CommandLine
	fs.StringVar(&sizes, "sizes", "10,10000", "background Services (besides the target), comma-separated; each is a section")
	fs.IntVar(&cfg.E, "e", 5, "endpoints per background Service")
	fs.IntVar(&cfg.Rounds, "rounds", 2, "rounds per size (odd rounds run the proxies in reverse order)")
	fs.StringVar(&workers, "workers", "1,8", "concurrent connections of the closed loops, comma-separated")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of one closed loop (counted)")
	fs.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "loop time before the counted part (not counted)")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "connect and read timeout of one connection")
	fs.DurationVar(&cfg.Settle, "settle", 2*time.Second, "least wait after programmed before measuring")
	fs.DurationVar(&cfg.QuietCap, "quiet-cap", time.Minute, "longest wait for the proxy to be idle (< 5% of a core over 1 s) before measuring")
	fs.DurationVar(&cfg.Cap, "cap", 10*time.Minute, "longest wait for a proxy to program everything")
	fs.IntVar(&cfg.LoadWorkers, "load-workers", 16, "parallel API writers of the background load")
	fs.StringVar(&cfg.Prefix, "prefix", "kpdpl", "sandbox prefix: namespaces <prefix>-*, state in /run/kproxy-e2e/<prefix>")
	fs.StringVar(&cfg.KProxyBin, "kproxy-bin", filepath.Join(repo, "bin", "kproxy"), "kproxy binary")
	fs.StringVar(&cfg.K8sBin, "k8s-bin", os.Getenv("KPROXY_K8S_BIN"), "directory with kube-apiserver, etcd, kube-proxy (default: e2e/tools/build-k8s.sh's)")
	fs.StringVar(&cfg.EchoBin, "echo-bin", filepath.Join(repo, "bin", "echo"), "e2e echo binary (the harness's pods run it)")
	fs.StringVar(&cfg.ResultsDir, "results", filepath.Join(repo, "bench", "results"), "where <UTC date>-dataplane.json and .md go; - for none")
	fs.StringVar(&cfg.TargetNS, "target-ns", "dp", "namespace of the target Services")
	fs.StringVar(&cfg.TargetName, "target-name", "target", "name of the target Services (+ \"-<node>\"); kproxy orders KUBE-SERVICES by namespace/name, so with -target-ns bg -target-name svc-05000-t the target's rule sits in the middle of 10,000")
	fs.StringVar(&cfg.What, "what", "dataplane", "results file name after the date")
	fs.StringVar(&cfg.Only, "only", "", "comma-separated subset of: kproxy, kube-proxy iptables, kube-proxy nftables, no proxy")
	// The halves that run in the pods.
	serveAddr := fs.String("serve", "", "internal: run the 1-byte echo server on this address")
	clientAddr := fs.String("client", "", "internal: run one closed loop to this address and print its JSON")
	clientWorkers := fs.Int("client-workers", 1, "internal: -client's concurrent connections")
	flag.Parse()
	switch {
	case *serveAddr != "":
		exitOn(serve(*serveAddr))
		return
	case *clientAddr != "":
		exitOn(clientMain(clientCfg{Addr: *clientAddr, Workers: *clientWorkers, Duration: cfg.Duration,
			Warmup: cfg.Warmup, Timeout: cfg.Timeout}, os.Stdout))
		return
	}
	var err error
	if cfg.Sizes, err = parseInts(sizes, 0); err != nil {
		exitOn(fmt.Errorf("-sizes: %w", err))
	}
	if cfg.Workers, err = parseInts(workers, 1); err != nil {
		exitOn(fmt.Errorf("-workers: %w", err))
	}
	sort.Ints(cfg.Sizes) // the load only grows
	if cfg.Sizes[len(cfg.Sizes)-1]*cfg.E > 50000 {
		exitOn(errors.New("size × e ≤ 50000 (endpoint address plan: 100.64.10.0 + k)"))
	}
	exitOn(run(cfg))
}

func parseInts(s string, least int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < least {
			return nil, fmt.Errorf("%q: want integers ≥ %d", s, least)
		}
		out = append(out, n)
	}
	return out, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05.000")}, args...)...)
}

// results is the JSON file.
type results struct {
	record.Header
	Proxies []proxyCfg    `json:"proxies"`
	Sizes   []*sizeResult `json:"sizes"`
	Error   string        `json:"error,omitempty"`
}

// sizeResult is one background size: every run and the summary.
type sizeResult struct {
	Background int     `json:"backgroundServices"`
	LoadS      float64 `json:"loadSeconds"`
	// Programmed: last background write → every Service in the proxy's node's kernel (s).
	Programmed    map[string]float64 `json:"lastWriteToProgrammedS"`
	NotProgrammed map[string]string  `json:"notProgrammed,omitempty"`
	Runs          []*runResult       `json:"runs"`
	Summary       []summaryRow       `json:"summary"`
}

// runResult is one proxy's loops in one round.
type runResult struct {
	Proxy    string       `json:"proxy"`
	Node     string       `json:"node"`
	Round    int          `json:"round"`
	Position int          `json:"position"`
	QuietS   float64      `json:"waitForIdleS,omitempty"`
	LoadAvg  string       `json:"loadavgAtStart"`
	Loops    []loopResult `json:"loops"`
	Error    string       `json:"error,omitempty"`
}

// site is one proxy's node: its client and backend pods, its target Service and its proxy.
type site struct {
	p       proxyCfg
	node    *harness.Node
	client  *harness.Pod
	backend *harness.Pod
	vip     string // the target Service's ClusterIP
	pid     int    // the proxy's; 0 for no proxy
	err     error  // not programmed: no loops
}

// bench is the running sandbox.
type bench struct {
	cfg   config
	c     *harness.Cluster
	sites []*site
	bg    background
}

func run(cfg config) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (network namespaces, iptables)")
	}
	if err := harness.ValidatePrefix(cfg.Prefix); err != nil {
		return err
	}
	var err error
	if cfg.K8sBin, err = sandbox.K8sBin(cfg.K8sBin, record.RepoRoot()); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.Self = self
	var sel []proxyCfg
	for _, p := range allProxies {
		if cfg.Only == "" || slices.Contains(strings.Split(cfg.Only, ","), p.Name) {
			sel = append(sel, p)
		}
	}
	if len(sel) == 0 {
		return fmt.Errorf("-only %q matches no proxy", cfg.Only)
	}
	unlock, err := sandbox.Guard(cfg.Prefix, logf) // on a signal, also SIGKILLs frozen proxies
	if err != nil {
		return err
	}
	defer unlock()
	res := &results{Header: record.NewHeader(machine(),
		map[string]any{"backgroundServices": cfg.Sizes, "endpointsPerService": cfg.E, "rounds": cfg.Rounds,
			"workers": cfg.Workers, "duration": cfg.Duration.String(), "warmup": cfg.Warmup.String(),
			"timeout": cfg.Timeout.String(), "settle": cfg.Settle.String(), "quietCap": cfg.QuietCap.String(),
			"close": "SO_LINGER 0 (RST, no TIME_WAIT)", "target": cfg.TargetNS + "/" + cfg.TargetName + "-<node>", "prefix": cfg.Prefix, "nodes": len(sel), "podsPerNode": 2,
			"sandbox": "one for the whole run, one node per proxy (its own client and backend pods and target Service); every proxy runs from the start and programs the background as it grows; while one node is measured the other proxies are stopped (SIGSTOP); conntrack of the node flushed before each loop"},
		versions(cfg), "KPROXY_K8S_BIN"), Proxies: sel}
	b := &bench{cfg: cfg}
	t0 := time.Now()
	ctx := context.Background()
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	b.c, err = harness.Start(sctx, harness.Options{Prefix: cfg.Prefix, Nodes: len(sel), PodsPerNode: 2,
		Proxy: harness.ProxyNone, ProxyBin: cfg.KProxyBin, K8sBin: cfg.K8sBin, EchoBin: cfg.EchoBin,
		Logf: func(format string, args ...any) { logf("  "+format, args...) }})
	cancel()
	defer func() {
		b.freezeAllBut(nil)
		if b.c != nil {
			b.c.Close()
		}
		if rep, err := harness.Cleanup(cfg.Prefix); err != nil {
			logf("cleanup: %v (%v)", err, rep)
		}
	}()
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if err := b.setup(ctx, sel); err != nil {
		return err
	}
	logf("sandbox: %d nodes, servers, target Services and proxies up in %.1fs", len(sel), time.Since(t0).Seconds())
	var names []string
	for _, p := range sel {
		names = append(names, p.Name)
	}
	for _, size := range cfg.Sizes {
		sr := &sizeResult{Background: size, Programmed: map[string]float64{}, NotProgrammed: map[string]string{}}
		b.freezeAllBut(nil) // every proxy programs the load as it grows
		tl := time.Now()
		cs, err := load.FastClient(b.c.RESTConfig)
		if err != nil {
			return err
		}
		if err := b.bg.grow(ctx, cs, size, cfg.E, cfg.LoadWorkers); err != nil {
			// Keep what the smaller sizes measured.
			res.Error = fmt.Sprintf("background load to %d: %v", size, err)
			logf("%s", res.Error)
			break
		}
		tLast := time.Now()
		sr.LoadS = stats.Round(tLast.Sub(tl).Seconds(), 1)
		logf("B=%d: %d background Services × %d endpoints in the API (%.1fs)", size, size, cfg.E, sr.LoadS)
		b.waitAllProgrammed(ctx, tLast, sr)
		time.Sleep(cfg.Settle)
		for r := 1; r <= cfg.Rounds; r++ {
			order := slices.Clone(b.sites)
			if r%2 == 0 {
				slices.Reverse(order)
			}
			for pos, st := range order {
				if st.err != nil {
					continue
				}
				logf("B=%d round %d/%d, %d/%d: %s (%s)", size, r, cfg.Rounds, pos+1, len(order), st.p.Name, st.node.Name)
				rr := &runResult{Proxy: st.p.Name, Node: st.node.Name, Round: r, Position: pos + 1, LoadAvg: record.Loadavg()}
				if err := b.measure(ctx, st, rr); err != nil {
					rr.Error = err.Error()
					logf("  %s: %s", st.p.Name, rr.Error)
				}
				sr.Runs = append(sr.Runs, rr)
			}
		}
		b.freezeAllBut(nil)
		sr.Summary = summarise(sr.Runs, names, cfg.Workers)
		res.Sizes = append(res.Sizes, sr)
		var out strings.Builder
		writeSection(&out, sr, names)
		if _, err := os.Stdout.WriteString(out.String()); err != nil {
			return err
		}
	}
	record.SetLoadavgAtEnd(res.Machine)
	if err := writeResults(cfg, res); err != nil {
		return err
	}
	if res.Error != "" {
		return errors.New(res.Error)
	}
	return nil
}

// writeSection prints one size's table and its runs.
func writeSection(w *strings.Builder, sr *sizeResult, names []string) {
	fmt.Fprintf(w, "\n### %d other Services, target: 1 Service with 1 endpoint\n\n", sr.Background)
	var prog []string
	for _, n := range names {
		if v, ok := sr.Programmed[n]; ok {
			prog = append(prog, fmt.Sprintf("%s %.1f s", n, v))
		} else if e, ok := sr.NotProgrammed[n]; ok {
			prog = append(prog, fmt.Sprintf("%s NOT PROGRAMMED (%s)", n, e))
		}
	}
	fmt.Fprintf(w, "Background loaded through the API in %.1f s; last write → programmed in the kernel: %s.\n", sr.LoadS, strings.Join(prog, ", "))
	fmt.Fprintln(w, "Medians over the rounds; ratios are kproxy / other per round (back to back), then their median:")
	fmt.Fprintln(w, "for conns/s higher is better, for µs lower is better.")
	fmt.Fprintln(w)
	printTable(w, sr.Summary, names)
	fmt.Fprintln(w)
	printRuns(w, sr.Runs)
}

// setup builds one site per proxy: the server in the backend pod, the target Service, the
// proxy (started before any background Service exists); it waits until each client reaches
// its server on the pod IP and, for the proxies, through the VIP.
func (b *bench) setup(ctx context.Context, sel []proxyCfg) error {
	for i, p := range sel {
		st := &site{p: p, node: b.c.Nodes[i], client: b.c.Pod(i+1, 1), backend: b.c.Pod(i+1, 2)}
		b.sites = append(b.sites, st)
		if _, err := b.c.StartDetached("dpserver-"+st.node.Name, st.backend.Name, b.cfg.Self, "-serve", st.backend.Addr(serverPort)); err != nil {
			return err
		}
	}
	for _, ns := range []string{bgNS, b.cfg.TargetNS} {
		if err := b.c.EnsureNamespace(ctx, ns); err != nil {
			return err
		}
	}
	for _, st := range b.sites {
		vip, _, err := load.CreateService(ctx, b.c.Client, b.cfg.TargetNS, b.cfg.TargetName+"-"+st.node.Name, serverPort, []string{st.backend.IP.String()})
		if err != nil {
			return err
		}
		st.vip = vip
		if err := harness.Poll(ctx, 50*time.Millisecond, 10*time.Second, func() error {
			return st.probe(st.backend.Addr(serverPort))
		}); err != nil {
			return fmt.Errorf("%s: server on the pod IP: %w", st.node.Name, err)
		}
		if st.p.Proxy == harness.ProxyNone {
			continue
		}
		b.c.Opts.Proxy, b.c.Opts.ProxyArgs = st.p.Proxy, st.p.Args
		if err := b.c.StartProxy(ctx, st.node); err != nil {
			return fmt.Errorf("%s on %s: %w", st.p.Name, st.node.Name, err)
		}
		if st.pid, err = sandbox.ProxyPid(b.c.State, st.node.Name); err != nil {
			return err
		}
	}
	sr := &sizeResult{Programmed: map[string]float64{}, NotProgrammed: map[string]string{}}
	b.waitAllProgrammed(ctx, time.Now(), sr)
	for p, e := range sr.NotProgrammed {
		return fmt.Errorf("%s: target Service alone not programmed: %s", p, e)
	}
	return nil
}

// probe does one echo from the site's client pod to addr.
func (st *site) probe(addr string) error {
	return netnsutil.Do(harness.NetnsPath(st.client.Name), func() error { return probe(addr, time.Second) })
}

func (st *site) vipAddr() string { return net.JoinHostPort(st.vip, strconv.Itoa(load.ServicePort)) }

// freezeAllBut stops (SIGSTOP) every proxy but keep's, and continues keep's (nil: continues
// all): a proxy's periodic syncs do not take CPU from another node's loops. Its rules stay.
func (b *bench) freezeAllBut(keep *site) {
	for _, st := range b.sites {
		if st.pid == 0 {
			continue
		}
		sig := syscall.SIGSTOP
		if keep == nil || st == keep {
			sig = syscall.SIGCONT
		}
		_ = syscall.Kill(st.pid, sig)
	}
}

func (b *bench) flushConntrack(ctx context.Context, st *site) error {
	out, err := harness.Exec(ctx, st.node.Name, "conntrack", "-F")
	if err != nil && !strings.Contains(out, "0 flow entries") {
		return err
	}
	return nil
}

// measure runs the loops of one site: its proxy running, the others stopped.
func (b *bench) measure(ctx context.Context, st *site, rr *runResult) error {
	b.freezeAllBut(st)
	if st.pid != 0 {
		tq := time.Now()
		if err := waitIdle(st.pid, b.cfg.QuietCap); err != nil {
			logf("  %v: measuring anyway", err)
		}
		rr.QuietS = stats.Round(time.Since(tq).Seconds(), 1)
		if err := st.probe(st.vipAddr()); err != nil {
			return fmt.Errorf("target VIP does not answer: %w", err)
		}
	}
	targets := []string{targetVIP, targetPod}
	if st.p.Proxy == harness.ProxyNone {
		targets = []string{targetPod}
	}
	for _, w := range b.cfg.Workers {
		for _, t := range targets {
			l, err := b.loop(ctx, st, t, w)
			if err != nil {
				return fmt.Errorf("%s, %d workers: %w", t, w, err)
			}
			logf("  %-3s %d workers: %7.0f conns/s, connect p50 %.0fµs p99 %.0fµs, req/resp p50 %.0fµs p99 %.0fµs, %d errors, conntrack %d (%s), proxy CPU %.2fs",
				t, w, l.Rate, l.Connect.P50, l.Connect.P99, l.RR.P50, l.RR.P99, l.Errors, l.ConntrackAfter, l.ConntrackStats, l.ProxyCPUS)
			rr.Loops = append(rr.Loops, l)
		}
	}
	return nil
}

// waitAllProgrammed waits until, on every proxy's node, the target VIP answers from the
// client pod and the kernel holds every Service (the targets and the background) with its
// endpoints; it records each node's time from since, or why not within -cap.
func (b *bench) waitAllProgrammed(ctx context.Context, since time.Time, sr *sizeResult) {
	var vips, eps []string
	for _, st := range b.sites {
		vips = append(vips, st.vip)
		eps = append(eps, st.backend.Addr(serverPort))
	}
	vips = append(vips, b.bg.vips...)
	eps = append(eps, b.bg.eps...)
	deadline := time.Now().Add(b.cfg.Cap)
	pending := map[*site]bool{}
	answered := map[*site]bool{}
	lastMissing := map[*site]int{}
	for _, st := range b.sites {
		if st.pid != 0 && st.err == nil {
			pending[st] = true
			lastMissing[st] = -1
		}
	}
	for len(pending) > 0 {
		tr := time.Now()
		for _, st := range b.sites {
			if !pending[st] {
				continue
			}
			if gone, err := b.c.ProxyExited(st.node); gone {
				if err == nil {
					err = errors.New("exit status 0")
				}
				st.err = fmt.Errorf("proxy exited: %w (log %s)", err, b.c.ProxyLog(st.node))
			} else if !answered[st] {
				answered[st] = st.probe(st.vipAddr()) == nil
			}
			if answered[st] && st.err == nil {
				t0 := time.Now()
				state, err := kstate.Read(ctx, st.node.Name, st.p.Kernel)
				if err != nil {
					st.err = err
				} else if lastMissing[st] = kstate.Missing(state, vips, eps); lastMissing[st] == 0 {
					// the read's midpoint
					sr.Programmed[st.p.Name] = stats.Round((t0.Sub(since) + time.Since(t0)/2).Seconds(), 2)
					logf("  %s (%s): programmed %.2fs after the last write (%d Services)", st.p.Name, st.node.Name, sr.Programmed[st.p.Name], len(vips))
					delete(pending, st)
				}
			}
			if st.err == nil && pending[st] && time.Now().After(deadline) {
				st.err = fmt.Errorf("not programmed within %v (target answers: %v, missing VIPs+endpoints: %d)", b.cfg.Cap, answered[st], lastMissing[st])
			}
			if st.err != nil {
				sr.NotProgrammed[st.p.Name] = st.err.Error()
				logf("  %s (%s): %v", st.p.Name, st.node.Name, st.err)
				delete(pending, st)
			}
		}
		// Whole-table reads are spaced by at least one round of reads' duration.
		time.Sleep(max(100*time.Millisecond, time.Since(tr)))
	}
}

// waitIdle waits until the proxy (and its waited-for children) used less than 5% of a core
// over one second.
func waitIdle(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	prev, err := sandbox.ReadCPU(pid)
	if err != nil {
		return err
	}
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		cur, err := sandbox.ReadCPU(pid)
		if err != nil {
			return err
		}
		if cur.Sub(prev).Total() < 0.05 {
			return nil
		}
		prev = cur
	}
	return fmt.Errorf("proxy not idle after %v", limit)
}

// loop runs one closed loop from the site's client pod (a child process in its namespace)
// and adds the node's conntrack figures and the proxy's CPU time during the loop.
func (b *bench) loop(ctx context.Context, st *site, target string, workers int) (loopResult, error) {
	addr := st.backend.Addr(serverPort)
	if target == targetVIP {
		addr = st.vipAddr()
	}
	if err := b.flushConntrack(ctx, st); err != nil {
		return loopResult{}, err
	}
	statsBefore, _ := conntrackStats(ctx, st.node.Name)
	posBefore := ""
	if target == targetVIP && st.p.Kernel == kstate.IPTables {
		posBefore = rulePosition(ctx, st.node.Name, st.vip)
	}
	var cpu0 sandbox.CPUTimes
	if st.pid != 0 {
		cpu0, _ = sandbox.ReadCPU(st.pid)
	}
	lctx, cancel := context.WithTimeout(ctx, b.cfg.Warmup+b.cfg.Duration+b.cfg.Timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(lctx, "nsenter", "--net="+harness.NetnsPath(st.client.Name), "--",
		b.cfg.Self, "-client", addr, "-client-workers", strconv.Itoa(workers),
		"-duration", b.cfg.Duration.String(), "-warmup", b.cfg.Warmup.String(), "-timeout", b.cfg.Timeout.String())
	// No asynchronous preemption: its signals would interrupt the blocking connect() calls.
	cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return loopResult{}, fmt.Errorf("client: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var l loopResult
	if err := json.Unmarshal(stdout.Bytes(), &l); err != nil {
		return l, fmt.Errorf("client output %q: %w", stdout.String(), err)
	}
	l.Target = target
	if posBefore != "" {
		l.RulePosition = posBefore + " → " + rulePosition(ctx, st.node.Name, st.vip)
	}
	if st.pid != 0 {
		if cpu1, err := sandbox.ReadCPU(st.pid); err == nil {
			l.ProxyCPUS = stats.Round(cpu1.Sub(cpu0).Total(), 2)
		}
	}
	if out, err := harness.Exec(ctx, st.node.Name, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"); err == nil {
		l.ConntrackAfter, _ = strconv.Atoi(strings.TrimSpace(out))
	}
	if statsAfter, err := conntrackStats(ctx, st.node.Name); err == nil {
		var parts []string
		for _, k := range []string{"insert_failed", "drop", "early_drop", "invalid"} {
			parts = append(parts, fmt.Sprintf("%s=%d", k, statsAfter[k]-statsBefore[k]))
		}
		l.ConntrackStats = strings.Join(parts, " ")
	}
	if l.Conns == 0 {
		return l, fmt.Errorf("no connection completed (%d errors, first: %s)", l.Errors, l.FirstErr)
	}
	return l, nil
}

// rulePosition is "k/n": the target VIP's rule is the k-th of the n rules of KUBE-SERVICES
// (iptables walks them in order for the first packet of every connection).
func rulePosition(ctx context.Context, node, vip string) string {
	out, err := harness.Exec(ctx, node, "iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES")
	if err != nil {
		return "?"
	}
	return kstate.PositionIn(out, vip)
}

// conntrackStats sums conntrack -S's per-CPU counters in the node.
func conntrackStats(ctx context.Context, node string) (map[string]int64, error) {
	out, err := harness.Exec(ctx, node, "conntrack", "-S")
	if err != nil {
		return nil, err
	}
	sum := map[string]int64{}
	for _, f := range strings.Fields(out) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "cpu" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil {
			sum[k] += n
		}
	}
	return sum, nil
}

// machine is record.Machine with the load average at start always set ("?" unreadable), the
// nice value and the conntrack table's size.
func machine() map[string]any {
	m := record.Machine()
	m["loadavgAtStart"] = record.Loadavg()
	if n, err := record.Nice(); err == nil {
		m["nice"] = n
	}
	if b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max"); err == nil {
		m["nfConntrackMax"] = strings.TrimSpace(string(b))
	}
	return m
}

func versions(cfg config) map[string]string {
	v := record.ProxyVersions(cfg.KProxyBin, cfg.K8sBin)
	for _, tool := range []string{"iptables", "nft", "conntrack"} {
		v[tool] = record.ToolVersion(tool, "--version")
	}
	return v
}

// writeResults writes <results>/<UTC date>-dataplane.json and .md (the tables and the
// command).
func writeResults(cfg config, res *results) error {
	if cfg.ResultsDir == "-" {
		return nil
	}
	base := record.Base(cfg.ResultsDir, cfg.What)
	if err := record.WriteJSON(base+".json", res); err != nil {
		return err
	}
	var md strings.Builder
	writeMarkdown(&md, res)
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s.json\nMarkdown: %s.md\n", base, base)
	return nil
}

// writeMarkdown is the results file for people: command, machine, versions, the tables.
func writeMarkdown(w *strings.Builder, res *results) {
	var names []string
	for _, p := range res.Proxies {
		names = append(names, p.Name)
	}
	fmt.Fprintf(w, "# Data plane: new connections and first-packet latency through a ClusterIP (%s)\n\n", res.Date)
	fmt.Fprintf(w, "Command (as root, from the repository):\n\n```sh\n%s\n```\n\n", res.Command)
	fmt.Fprintf(w, "Machine: %v CPUs (%v), kernel %v, nice %v, load average at start %v, at end %v; nf_conntrack_max %v.\n\n",
		res.Machine["nproc"], res.Machine["cpu"], res.Machine["kernel"], res.Machine["nice"],
		res.Machine["loadavgAtStart"], res.Machine["loadavgAtEnd"], res.Machine["nfConntrackMax"])
	keys := make([]string, 0, len(res.Versions))
	for k := range res.Versions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w, "Versions:")
	fmt.Fprintln(w)
	for _, k := range keys {
		fmt.Fprintf(w, "- %s: `%s`\n", k, res.Versions[k])
	}
	cfgJSON, _ := json.Marshal(res.Config)
	fmt.Fprintf(w, "\nConfiguration: `%s`\n", cfgJSON)
	for _, sr := range res.Sizes {
		writeSection(w, sr, names)
	}
	if res.Error != "" {
		fmt.Fprintf(w, "\nThe run stopped early: %s\n", res.Error)
	}
}
