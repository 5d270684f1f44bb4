// Command kpbench measures kproxy against upstream kube-proxy side by side: one node of the
// e2e sandbox (real kube-apiserver + etcd, e2e/harness), one proxy at a time in a fresh
// sandbox, rounds in alternating order. For each proxy it measures, by reading the node's
// kernel (never the proxy's word):
//
//	bulk create   N Services × E endpoints written by a parallel loader → all programmed
//	restart       with the rules present: time to /healthz 200, rule lines and nft objects
//	              changed by the restart; with the rules flushed: time to all programmed
//	one change    single-endpoint changes spaced apart → API write to the new DNAT in the kernel
//	bulk delete   parallel delete of everything → every rule of the load gone
//
// and the proxy's CPU seconds (its own and its waited-for children's) and peak RSS per phase.
// See bench/README.md. Root only; everything runs in the harness's namespaces (prefix kpb).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/e2e/harness"
)

const prefix = "kpb"

// proxyCfg is one proxy under test.
type proxyCfg struct {
	Name   string   `json:"name"`
	Proxy  string   `json:"harnessProxy"`
	Args   []string `json:"extraArgs"`
	Kernel string   `json:"kernel"`
}

var proxies = []proxyCfg{
	{Name: "kproxy", Proxy: harness.ProxyKProxy, Kernel: kernelIPTables},
	{Name: "kube-proxy iptables", Proxy: harness.ProxyKubeProxy, Kernel: kernelIPTables},
	{Name: "kube-proxy nftables", Proxy: harness.ProxyKubeProxy, Args: []string{"--proxy-mode=nftables"}, Kernel: kernelNFT},
}

type config struct {
	N, E, Rounds, Changes, Workers int
	Spacing, Cap, Settle, Gap      time.Duration
	BulkGap                        time.Duration
	Quick                          bool
	KProxyBin, K8sBin, EchoBin     string
	ResultsDir, What               string
	Only                           string
}

func main() {
	quick := os.Getenv("BENCH_QUICK") == "1"
	cfg := config{Quick: quick}
	repo := repoRoot()
	flag.IntVar(&cfg.N, "n", 1000, "services")
	flag.IntVar(&cfg.E, "e", 5, "endpoints per service")
	flag.IntVar(&cfg.Rounds, "rounds", 2, "rounds (order alternates between rounds)")
	flag.IntVar(&cfg.Changes, "changes", 20, "single-endpoint changes in the one-change phase")
	flag.DurationVar(&cfg.Spacing, "spacing", 1500*time.Millisecond, "time between two single-endpoint changes (write to write)")
	flag.IntVar(&cfg.Workers, "workers", 16, "parallel API writers")
	flag.DurationVar(&cfg.Cap, "cap", 15*time.Minute, "longest wait for one phase; a phase past it is reported as > cap")
	flag.DurationVar(&cfg.Settle, "settle", 2*time.Second, "wait after a phase's goal before reading CPU and RSS (trailing syncs)")
	flag.DurationVar(&cfg.Gap, "poll-gap", 25*time.Millisecond, "pause between two kernel reads (restart, one change)")
	flag.DurationVar(&cfg.BulkGap, "bulk-poll-gap", 200*time.Millisecond, "pause between two kernel reads during bulk create and delete (the poller competes with the apiserver for the cores)")
	flag.StringVar(&cfg.KProxyBin, "kproxy-bin", filepath.Join(repo, "bin", "kproxy"), "kproxy binary")
	flag.StringVar(&cfg.K8sBin, "k8s-bin", os.Getenv("KPROXY_K8S_BIN"), "directory with kube-apiserver, etcd, kube-proxy (default: e2e/tools/build-k8s.sh's)")
	flag.StringVar(&cfg.EchoBin, "echo-bin", filepath.Join(repo, "bin", "echo"), "e2e echo binary (the harness wants it)")
	flag.StringVar(&cfg.ResultsDir, "results", filepath.Join(repo, "bench", "results"), "where the JSON goes")
	flag.StringVar(&cfg.What, "what", "", "file name part after the date (default proxies-n<N>[-quick])")
	flag.StringVar(&cfg.Only, "only", "", "comma-separated proxy names to run (default all)")
	flag.Parse()
	if quick {
		// BENCH_QUICK=1: CI size unless the flags say otherwise.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["n"] {
			cfg.N = 200
		}
		if !set["rounds"] {
			cfg.Rounds = 1
		}
		if !set["cap"] {
			cfg.Cap = 60 * time.Second
		}
	}
	if cfg.What == "" {
		cfg.What = fmt.Sprintf("proxies-n%d", cfg.N)
		if quick {
			cfg.What += "-quick"
		}
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "kpbench: %v\n", err)
		os.Exit(1)
	}
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

func run(cfg config) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (network namespaces, iptables)")
	}
	if cfg.K8sBin == "" {
		out, err := exec.Command(filepath.Join(repoRoot(), "e2e", "tools", "build-k8s.sh")).Output()
		if err != nil {
			return fmt.Errorf("e2e/tools/build-k8s.sh: %w (or pass -k8s-bin)", err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		cfg.K8sBin = lines[len(lines)-1]
	}
	if cfg.N*cfg.E > 50000 || cfg.Changes > 250 {
		return fmt.Errorf("n×e ≤ 50000 and changes ≤ 250 (endpoint address plan)")
	}
	sel := proxies
	if cfg.Only != "" {
		sel = nil
		for _, p := range proxies {
			if strings.Contains(","+cfg.Only+",", ","+p.Name+",") {
				sel = append(sel, p)
			}
		}
		if len(sel) == 0 {
			return fmt.Errorf("-only %q matches no proxy", cfg.Only)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("%v: cleaning up sandbox %s", s, prefix)
		_, _ = harness.Cleanup(prefix)
		os.Exit(130)
	}()

	res := &results{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Command: commandLine(),
		Machine: machine(),
		Config: map[string]any{"services": cfg.N, "endpointsPerService": cfg.E, "rounds": cfg.Rounds,
			"changes": cfg.Changes, "changeSpacing": cfg.Spacing.String(), "workers": cfg.Workers,
			"phaseCap": cfg.Cap.String(), "settle": cfg.Settle.String(), "pollGap": cfg.Gap.String(), "bulkPollGap": cfg.BulkGap.String(),
			"quick": cfg.Quick, "nodes": 1, "podsPerNode": 0, "sandbox": "fresh per proxy and round"},
		Versions: versions(cfg),
		Proxies:  sel,
	}
	logf("kpbench: N=%d E=%d rounds=%d changes=%d (every %v), proxies %d; k8s %s", cfg.N, cfg.E, cfg.Rounds, cfg.Changes, cfg.Spacing, len(sel), cfg.K8sBin)
	for r := 0; r < cfg.Rounds; r++ {
		order := append([]proxyCfg(nil), sel...)
		if r%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for pos, p := range order {
			logf("round %d/%d, %d/%d: %s", r+1, cfg.Rounds, pos+1, len(order), p.Name)
			rr := runOne(cfg, p)
			rr.Round, rr.Position = r+1, pos+1
			res.Runs = append(res.Runs, rr)
			if rr.Error != "" {
				logf("  %s: %s", p.Name, rr.Error)
			}
		}
	}
	res.summarise(sel)
	if err := res.printTable(os.Stdout, cfg); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.ResultsDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(cfg.ResultsDir, time.Now().UTC().Format("2006-01-02")+"-"+cfg.What+".json")
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s\n", path)
	return nil
}

func commandLine() string {
	var env []string
	for _, k := range []string{"BENCH_QUICK", "KPROXY_K8S_BIN"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return strings.TrimSpace(strings.Join(env, " ") + " " + strings.Join(os.Args, " "))
}

func machine() map[string]any {
	m := map[string]any{"nproc": runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				f := strings.Fields(l)
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					m["memoryGiB"] = round(kb/1024/1024, 1)
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m["cpu"] = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavgAtStart"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		m["debian"] = strings.TrimSpace(string(b))
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
	v["repo"] = first("git", "-C", repoRoot(), "describe", "--always", "--dirty")
	return v
}

// results is the JSON file.
type results struct {
	Date     string            `json:"date"`
	Command  string            `json:"command"`
	Machine  map[string]any    `json:"machine"`
	Config   map[string]any    `json:"config"`
	Versions map[string]string `json:"versions"`
	Proxies  []proxyCfg        `json:"proxies"`
	Runs     []*runResult      `json:"runs"`
	Summary  []summaryRow      `json:"summary"`
}

// runResult is one proxy in one round, in a fresh sandbox.
type runResult struct {
	Proxy    string             `json:"proxy"`
	Round    int                `json:"round"`
	Position int                `json:"position"`
	Figures  map[string]float64 `json:"figures"`
	Capped   []string           `json:"capped,omitempty"` // figures past the cap
	// ChangeLatenciesMs are the single-endpoint change latencies, in order.
	ChangeLatenciesMs []float64 `json:"changeLatenciesMs,omitempty"`
	Restart           struct {
		LinesRemoved, LinesAdded, ObjectsRemoved, ObjectsAdded int
		Examples                                               []string `json:",omitempty"`
	} `json:"restartDiff"`
	Error string `json:"error,omitempty"`
}

func round(v float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	if v < 0 {
		return -float64(int64(-v*p+0.5)) / p
	}
	return float64(int64(v*p+0.5)) / p
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	// nearest rank
	k := int(p/100*float64(len(s))+0.999999) - 1
	if k < 0 {
		k = 0
	}
	if k >= len(s) {
		k = len(s) - 1
	}
	return s[k]
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
