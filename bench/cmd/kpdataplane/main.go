// Command kpdataplane measures the service data plane (issue 8): the new-connection rate and
// the first-packet latency through a ClusterIP from a pod, with B other Services programmed
// (default 10 and 10,000), for kproxy --mode=iptables against upstream kube-proxy
// --proxy-mode=iptables and --proxy-mode=nftables, and as the limit the same against the
// backend pod's IP with no proxy and no rules in the node.
//
// One e2e sandbox (e2e/harness: kube-apiserver + etcd, one node namespace, a client pod and
// a backend pod on the node's cni0) for the whole run. The backend pod runs this binary with
// -serve (a 1-byte echo); the target Service (port 80) has the backend pod as its only
// endpoint (a hand-written EndpointSlice). For each B, after loading the Services up to B
// (E endpoints each, as kpbench's loader), and for each round and each proxy in turn
// (alternating order): the node's rules and conntrack table are flushed, the proxy starts,
// kpdataplane waits until the target VIP answers and every Service is programmed (read from
// the kernel: iptables-save -t nat, nft list table ip kube-proxy) and the proxy is idle, then
// runs closed loops from the client pod (this binary with -client, in the pod's namespace):
// connect, 1-byte request/response, close (SO_LINGER 0), for -duration with each worker count
// of -workers, to VIP:80 and to the pod IP directly. See bench/README.md, "Data plane".
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
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/e2e/harness"
	"github.com/kproxy/kproxy/internal/netnsutil"
)

// proxyCfg is one proxy under test.
type proxyCfg struct {
	Name   string   `json:"name"`
	Proxy  string   `json:"harnessProxy"`
	Args   []string `json:"extraArgs,omitempty"`
	Kernel string   `json:"kernel,omitempty"`
}

var allProxies = []proxyCfg{
	{Name: "kproxy", Proxy: harness.ProxyKProxy, Kernel: kernelIPTables},
	{Name: "kube-proxy iptables", Proxy: harness.ProxyKubeProxy, Kernel: kernelIPTables},
	{Name: "kube-proxy nftables", Proxy: harness.ProxyKubeProxy, Args: []string{"--proxy-mode=nftables"}, Kernel: kernelNFT},
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
	Self                      string
}

func main() {
	var cfg config
	repo := repoRoot()
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

func repoRoot() string {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		wd, _ := os.Getwd()
		return wd
	}
	return strings.TrimSpace(string(out))
}

// results is the JSON file.
type results struct {
	Date     string            `json:"date"`
	Command  string            `json:"command"`
	Machine  map[string]any    `json:"machine"`
	Config   map[string]any    `json:"config"`
	Versions map[string]string `json:"versions"`
	Proxies  []proxyCfg        `json:"proxies"`
	Sizes    []*sizeResult     `json:"sizes"`
}

// sizeResult is one background size: every run and the summary.
type sizeResult struct {
	Background int          `json:"backgroundServices"`
	LoadS      float64      `json:"loadSeconds"`
	Runs       []*runResult `json:"runs"`
	Summary    []summaryRow `json:"summary"`
}

// runResult is one proxy in one round.
type runResult struct {
	Proxy    string `json:"proxy"`
	Round    int    `json:"round"`
	Position int    `json:"position"`
	// ProgrammedS: proxy start → the target VIP answers and every Service is in the kernel.
	ProgrammedS float64      `json:"startToProgrammedS,omitempty"`
	QuietS      float64      `json:"waitForIdleS,omitempty"`
	LoadAvg     string       `json:"loadavgAtStart"`
	Loops       []loopResult `json:"loops"`
	Error       string       `json:"error,omitempty"`
}

// bench is the running sandbox and what the runs need of it.
type bench struct {
	cfg     config
	c       *harness.Cluster
	node    *harness.Node
	client  *harness.Pod
	backend *harness.Pod
	vip     string // target ClusterIP
	bg      background
}

func run(cfg config) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (network namespaces, iptables)")
	}
	if err := harness.ValidatePrefix(cfg.Prefix); err != nil {
		return err
	}
	if err := resolveK8sBin(&cfg); err != nil {
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
	unlock, err := lockPrefix(cfg.Prefix)
	if err != nil {
		return err
	}
	defer unlock()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("%v: cleaning up sandbox %s", s, cfg.Prefix)
		_, _ = harness.Cleanup(cfg.Prefix)
		os.Exit(130)
	}()
	res := &results{
		Date: time.Now().UTC().Format(time.RFC3339), Command: commandLine(), Machine: machine(),
		Config: map[string]any{"backgroundServices": cfg.Sizes, "endpointsPerService": cfg.E, "rounds": cfg.Rounds,
			"workers": cfg.Workers, "duration": cfg.Duration.String(), "warmup": cfg.Warmup.String(),
			"timeout": cfg.Timeout.String(), "settle": cfg.Settle.String(), "quietCap": cfg.QuietCap.String(),
			"close": "SO_LINGER 0 (RST, no TIME_WAIT)", "prefix": cfg.Prefix, "nodes": 1, "pods": 2,
			"sandbox": "one for the whole run; rules (nft flush ruleset) and conntrack flushed before each proxy, conntrack before each loop"},
		Versions: versions(cfg), Proxies: sel,
	}
	b := &bench{cfg: cfg}
	t0 := time.Now()
	ctx := context.Background()
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	b.c, err = harness.Start(sctx, harness.Options{Prefix: cfg.Prefix, Nodes: 1, PodsPerNode: 2,
		Proxy: harness.ProxyNone, ProxyBin: cfg.KProxyBin, K8sBin: cfg.K8sBin, EchoBin: cfg.EchoBin,
		Logf: func(format string, args ...any) { logf("  "+format, args...) }})
	cancel()
	defer func() {
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
	if err := b.setup(ctx); err != nil {
		return err
	}
	logf("sandbox, server and target Service %s:%d → %s up in %.1fs", b.vip, servicePort, b.backend.Addr(serverPort), time.Since(t0).Seconds())
	for _, size := range cfg.Sizes {
		sr := &sizeResult{Background: size}
		tl := time.Now()
		cs, err := fastClient(b.c.RESTConfig)
		if err != nil {
			return err
		}
		if err := b.bg.grow(ctx, cs, size, cfg.E, cfg.LoadWorkers); err != nil {
			return fmt.Errorf("background load to %d: %w", size, err)
		}
		sr.LoadS = round(time.Since(tl).Seconds(), 1)
		logf("B=%d: %d background Services × %d endpoints in the API (%.1fs)", size, size, cfg.E, sr.LoadS)
		for r := 1; r <= cfg.Rounds; r++ {
			order := slices.Clone(sel)
			if r%2 == 0 {
				slices.Reverse(order)
			}
			for pos, p := range order {
				logf("B=%d round %d/%d, %d/%d: %s", size, r, cfg.Rounds, pos+1, len(order), p.Name)
				rr := b.runOne(ctx, p, r, pos+1)
				if rr.Error != "" {
					logf("  %s: %s", p.Name, rr.Error)
				}
				sr.Runs = append(sr.Runs, rr)
			}
		}
		var names []string
		for _, p := range sel {
			names = append(names, p.Name)
		}
		sr.Summary = summarise(sr.Runs, names, cfg.Workers)
		res.Sizes = append(res.Sizes, sr)
		var out strings.Builder
		writeSection(&out, sr, names)
		if _, err := os.Stdout.WriteString(out.String()); err != nil {
			return err
		}
	}
	if lb, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.Machine["loadavgAtEnd"] = strings.TrimSpace(string(lb))
	}
	return writeResults(cfg, res)
}

// writeSection prints one size's table and its runs.
func writeSection(w *strings.Builder, sr *sizeResult, names []string) {
	fmt.Fprintf(w, "\n### %d other Services (× endpoints as configured), target: 1 Service, 1 endpoint\n\n", sr.Background)
	fmt.Fprintln(w, "Medians over the rounds; ratios are kproxy / other per round (same round, back to back), then their median:")
	fmt.Fprintln(w, "for conns/s higher is better, for µs lower is better.")
	fmt.Fprintln(w)
	printTable(w, sr.Summary, names)
	fmt.Fprintln(w)
	printRuns(w, sr.Runs)
}

// setup starts the backend's server, creates the target Service and waits until the client
// pod reaches the server on the pod IP.
func (b *bench) setup(ctx context.Context) error {
	b.node = b.c.Nodes[0]
	b.client, b.backend = b.c.Pod(1, 1), b.c.Pod(1, 2)
	if _, err := b.c.StartDetached("dpserver", b.backend.Name, b.cfg.Self, "-serve", b.backend.Addr(serverPort)); err != nil {
		return err
	}
	for _, ns := range []string{bgNS, targetNS} {
		if err := b.c.EnsureNamespace(ctx, ns); err != nil {
			return err
		}
	}
	vip, err := createService(ctx, b.c.Client, targetNS, "target", serverPort, []string{b.backend.IP.String()})
	if err != nil {
		return err
	}
	b.vip = vip
	return harness.Poll(ctx, 50*time.Millisecond, 10*time.Second, func() error {
		return b.probe(b.backend.Addr(serverPort))
	})
}

// probe does one echo from the client pod to addr.
func (b *bench) probe(addr string) error {
	return netnsutil.Do(harness.NetnsPath(b.client.Name), func() error { return probe(addr, time.Second) })
}

func (b *bench) vipAddr() string { return net.JoinHostPort(b.vip, strconv.Itoa(servicePort)) }

// flush empties the node's packet filter (every nftables table: iptables-nft's and
// kube-proxy nftables') and its conntrack table.
func (b *bench) flush(ctx context.Context) error {
	if _, err := harness.Exec(ctx, b.node.Name, "nft", "flush", "ruleset"); err != nil {
		return err
	}
	return b.flushConntrack(ctx)
}

func (b *bench) flushConntrack(ctx context.Context) error {
	out, err := harness.Exec(ctx, b.node.Name, "conntrack", "-F")
	if err != nil && !strings.Contains(out, "0 flow entries") {
		return err
	}
	return nil
}

func (b *bench) runOne(ctx context.Context, p proxyCfg, roundNo, pos int) *runResult {
	rr := &runResult{Proxy: p.Name, Round: roundNo, Position: pos, LoadAvg: loadavg()}
	if err := b.measureProxy(ctx, p, rr); err != nil {
		rr.Error = err.Error()
	}
	if err := b.c.StopProxy(b.node); err != nil && rr.Error == "" {
		rr.Error = err.Error()
	}
	if err := b.flush(ctx); err != nil && rr.Error == "" {
		rr.Error = err.Error()
	}
	return rr
}

func (b *bench) measureProxy(ctx context.Context, p proxyCfg, rr *runResult) error {
	if err := b.flush(ctx); err != nil {
		return err
	}
	pid := 0
	if p.Proxy != harness.ProxyNone {
		b.c.Opts.Proxy, b.c.Opts.ProxyArgs = p.Proxy, p.Args
		t0 := time.Now()
		if err := b.c.StartProxy(ctx, b.node); err != nil {
			return fmt.Errorf("start: %w", err)
		}
		var err error
		if pid, err = proxyPid(b.c.State, b.node.Name); err != nil {
			return err
		}
		if err := b.waitProgrammed(ctx, p, t0); err != nil {
			return err
		}
		rr.ProgrammedS = round(time.Since(t0).Seconds(), 2)
		logf("  programmed (target answers, %d Services in the kernel) %.1fs after start", b.bg.n+1, rr.ProgrammedS)
		tq := time.Now()
		time.Sleep(b.cfg.Settle)
		if err := waitIdle(pid, b.cfg.QuietCap); err != nil {
			logf("  %v: measuring anyway", err)
		}
		rr.QuietS = round(time.Since(tq).Seconds(), 1)
	}
	targets := []string{targetVIP, targetPod}
	if p.Proxy == harness.ProxyNone {
		targets = []string{targetPod}
	}
	for _, w := range b.cfg.Workers {
		for _, t := range targets {
			l, err := b.loop(ctx, t, w, pid)
			if err != nil {
				return fmt.Errorf("%s, %d workers: %w", t, w, err)
			}
			logf("  %-3s %d workers: %7.0f conns/s, connect p50 %.0fµs p99 %.0fµs, req/resp p50 %.0fµs p99 %.0fµs, %d errors, conntrack %d, proxy CPU %.2fs",
				t, w, l.Rate, l.Connect.P50, l.Connect.P99, l.RR.P50, l.RR.P99, l.Errors, l.ConntrackAfter, l.ProxyCPUS)
			rr.Loops = append(rr.Loops, l)
		}
	}
	return nil
}

// waitProgrammed waits until the target VIP answers from the client pod and the kernel holds
// every Service (target and background) with its endpoints.
func (b *bench) waitProgrammed(ctx context.Context, p proxyCfg, t0 time.Time) error {
	vips := append([]string{b.vip}, b.bg.vips...)
	eps := append([]string{b.backend.Addr(serverPort)}, b.bg.eps...)
	deadline := t0.Add(b.cfg.Cap)
	answered := false
	last := -1
	for {
		if !answered {
			answered = b.probe(b.vipAddr()) == nil
		}
		if answered {
			tr := time.Now()
			st, err := readState(ctx, b.node.Name, p.Kernel)
			if err != nil {
				return err
			}
			last = missing(st, vips, eps)
			if last == 0 {
				return nil
			}
			// Whole-table reads are spaced by at least one read's duration.
			time.Sleep(max(200*time.Millisecond, time.Since(tr)))
		} else {
			time.Sleep(50 * time.Millisecond)
		}
		if gone, err := b.c.ProxyExited(b.node); gone {
			if err == nil {
				err = errors.New("exit status 0")
			}
			return fmt.Errorf("proxy exited: %w (log %s)", err, b.c.ProxyLog(b.node))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not programmed within %v (target answers: %v, missing VIPs+endpoints: %d)", b.cfg.Cap, answered, last)
		}
	}
}

// waitIdle waits until the proxy (and its waited-for children) used less than 5% of a core
// over one second.
func waitIdle(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	prev, err := readCPU(pid)
	if err != nil {
		return err
	}
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		cur, err := readCPU(pid)
		if err != nil {
			return err
		}
		if cur-prev < 0.05 {
			return nil
		}
		prev = cur
	}
	return fmt.Errorf("proxy not idle after %v", limit)
}

// loop runs one closed loop from the client pod (a child process in its namespace) and adds
// the node's conntrack figures and the proxy's CPU time during the loop.
func (b *bench) loop(ctx context.Context, target string, workers, pid int) (loopResult, error) {
	addr := b.backend.Addr(serverPort)
	if target == targetVIP {
		addr = b.vipAddr()
	}
	if err := b.flushConntrack(ctx); err != nil {
		return loopResult{}, err
	}
	statsBefore, _ := b.conntrackStats(ctx)
	var cpu0 float64
	if pid != 0 {
		cpu0, _ = readCPU(pid)
	}
	lctx, cancel := context.WithTimeout(ctx, b.cfg.Warmup+b.cfg.Duration+b.cfg.Timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(lctx, "nsenter", "--net="+harness.NetnsPath(b.client.Name), "--",
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
	if pid != 0 {
		if cpu1, err := readCPU(pid); err == nil {
			l.ProxyCPUS = round(cpu1-cpu0, 2)
		}
	}
	if out, err := harness.Exec(ctx, b.node.Name, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"); err == nil {
		l.ConntrackAfter, _ = strconv.Atoi(strings.TrimSpace(out))
	}
	if statsAfter, err := b.conntrackStats(ctx); err == nil {
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

// conntrackStats sums conntrack -S's per-CPU counters in the node.
func (b *bench) conntrackStats(ctx context.Context) (map[string]int64, error) {
	out, err := harness.Exec(ctx, b.node.Name, "conntrack", "-S")
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

// proxyPid is the pid of the proxy the harness started on node (its pid file).
func proxyPid(stateDir, node string) (int, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "pids", "proxy-"+node+".pid"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("empty pid file for proxy-%s", node)
	}
	return strconv.Atoi(f[0])
}

// readCPU is the process's CPU seconds, its own and its waited-for children's (iptables-restore,
// nft): /proc/<pid>/stat fields 14-17, in 1/100 s.
func readCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3
	if len(f) < 15 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var sum float64
	for k := 11; k < 15; k++ {
		n, err := strconv.ParseUint(f[k], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += float64(n) / 100
	}
	return sum, nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// resolveK8sBin sets cfg.K8sBin to build-k8s.sh's directory when not given.
func resolveK8sBin(cfg *config) error {
	if cfg.K8sBin != "" {
		return nil
	}
	out, err := exec.Command(filepath.Join(repoRoot(), "e2e", "tools", "build-k8s.sh")).Output()
	if err != nil {
		return fmt.Errorf("e2e/tools/build-k8s.sh: %w (or pass -k8s-bin)", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	cfg.K8sBin = lines[len(lines)-1]
	return nil
}

// lockPrefix makes sure no other run uses the prefix: a flock on
// /run/kproxy-e2e/<prefix>.lock, as kpbench's.
func lockPrefix(prefix string) (func(), error) {
	if err := os.MkdirAll("/run/kproxy-e2e", 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join("/run/kproxy-e2e", prefix+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("prefix %s is in use by another run (%s.lock): %w", prefix, prefix, err)
	}
	return func() { _ = f.Close() }, nil
}

func commandLine() string {
	var env []string
	if v, ok := os.LookupEnv("KPROXY_K8S_BIN"); ok {
		env = append(env, "KPROXY_K8S_BIN="+v)
	}
	return strings.TrimSpace(strings.Join(env, " ") + " " + strings.Join(os.Args, " "))
}

func machine() map[string]any {
	m := map[string]any{"nproc": runtime.NumCPU(), "loadavgAtStart": loadavg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m["cpu"] = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	if n, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0); err == nil {
		m["nice"] = 20 - n // the raw syscall returns 20 - nice
	}
	if b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max"); err == nil {
		m["nfConntrackMax"] = strings.TrimSpace(string(b))
	}
	return m
}

func versions(cfg config) map[string]string {
	v := map[string]string{"go": runtime.Version()}
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "? (" + err.Error() + ")"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	v["kproxy"] = first(cfg.KProxyBin, "--version")
	v["kproxyBinary"] = cfg.KProxyBin
	v["kube-proxy"] = first(filepath.Join(cfg.K8sBin, "kube-proxy"), "--version")
	v["kube-apiserver"] = first(filepath.Join(cfg.K8sBin, "kube-apiserver"), "--version")
	v["iptables"] = first("iptables", "--version")
	v["nft"] = first("nft", "--version")
	v["conntrack"] = first("conntrack", "--version")
	v["repo"] = first("git", "-C", repoRoot(), "describe", "--always", "--dirty")
	return v
}

// writeResults writes <results>/<UTC date>-dataplane.json and .md (the tables and the
// command).
func writeResults(cfg config, res *results) error {
	if cfg.ResultsDir == "-" {
		return nil
	}
	if err := os.MkdirAll(cfg.ResultsDir, 0o755); err != nil {
		return err
	}
	base := filepath.Join(cfg.ResultsDir, time.Now().UTC().Format("2006-01-02")+"-dataplane")
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", append(b, '\n'), 0o644); err != nil {
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
}
