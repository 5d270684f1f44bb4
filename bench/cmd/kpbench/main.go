// Command kpbench measures kproxy against upstream kube-proxy side by side: one node of the
// e2e sandbox (real kube-apiserver + etcd, e2e/harness), one proxy at a time in a fresh
// sandbox, rounds in alternating order, for each N of -n and each iptables backend of
// -backends. For each proxy it measures, by reading the node's kernel (never the proxy's
// word):
//
//	bulk create   N Services × E endpoints written by a parallel loader → all programmed
//	restart       with the rules present: time to /healthz 200, rule lines and nft objects
//	              changed by the restart; with the rules flushed: time to all programmed
//	one change    single-endpoint changes spaced apart → API write to the new DNAT in the kernel
//	churn         -churn-rate endpoint changes per second for -churn-duration → latency, drain
//	bulk delete   parallel delete of everything → every rule of the load gone
//
// and the proxy's CPU seconds (its own and its waited-for children's) and peak RSS per phase;
// and the tool floors under them (iptables-restore of the rules kproxy writes, with no proxy:
// floor.go). See bench/README.md. Root only; everything runs in the harness's namespaces
// (-prefix, default kpb).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kproxy/kproxy/bench/internal/kstate"
	"github.com/kproxy/kproxy/bench/internal/record"
	"github.com/kproxy/kproxy/bench/internal/sandbox"
	"github.com/kproxy/kproxy/bench/internal/stats"
	"github.com/kproxy/kproxy/e2e/harness"
)

// proxyCfg is one proxy under test.
type proxyCfg struct {
	Name   string      `json:"name"`
	Proxy  string      `json:"harnessProxy"`
	Args   []string    `json:"extraArgs"`
	Kernel kstate.Kind `json:"kernel"`
	// Bin is the kproxy binary when not -kproxy-bin ("kproxy base").
	Bin string `json:"binary,omitempty"`
}

var proxies = []proxyCfg{
	{Name: "kproxy", Proxy: harness.ProxyKProxy, Kernel: kstate.IPTables},
	{Name: "kube-proxy iptables", Proxy: harness.ProxyKubeProxy, Kernel: kstate.IPTables},
	{Name: "kube-proxy nftables", Proxy: harness.ProxyKubeProxy, Args: []string{"--proxy-mode=nftables"}, Kernel: kstate.NFTables},
}

type config struct {
	N, E, Rounds, Changes, Workers int
	Ns                             []int
	Backends                       []string
	Spacing, Cap, Settle, Gap      time.Duration
	BulkGap                        time.Duration
	ChurnRate                      float64
	ChurnDuration                  time.Duration
	ChurnSample                    int
	Floors                         bool
	FloorCap                       time.Duration
	Quick                          bool
	Prefix                         string
	KProxyBin, K8sBin, EchoBin     string
	BaseBin                        string
	ResultsDir, What               string
	Only                           string
	DumpDir                        string
	PlotWith                       string
	// -mode ipvs (ipvs.go): the VM's memory and timeout
	Mode  string
	VMMem string
	VMEnv string
	// ProfileCold: -mode ipvs, a CPU profile of kproxy this long in the cold restart
	ProfileCold time.Duration
	// HeapProfiles: -mode iptables, kproxy runs with --profiling and its heap profile is
	// saved into DumpDir at the end of each phase.
	HeapProfiles bool
	// ProfileBulk: -mode iptables, kproxy runs with --profiling and a CPU profile this long
	// is taken from the start of the bulk create into DumpDir.
	ProfileBulk time.Duration
	// ColdWait: -mode ipvs, a pause between the flush and the cold restart
	ColdWait  time.Duration
	VMTimeout time.Duration
	QuietCap  time.Duration
}

// sectionCfg is one N on one backend: a comparison of its own.
type sectionCfg struct {
	N       int    `json:"services"`
	Backend string `json:"backend"`
}

func main() {
	quick := os.Getenv("BENCH_QUICK") == "1"
	cfg := config{Quick: quick}
	repo := record.RepoRoot()
	var ns, backends string
	flag.StringVar(&ns, "n", "1000", "services: one N or a comma-separated list (each N is a section of its own)")
	flag.IntVar(&cfg.E, "e", 5, "endpoints per service")
	flag.StringVar(&backends, "backends", backendNFT, "iptables backends, comma-separated: nft, legacy (kube-proxy nftables runs with nft only)")
	flag.IntVar(&cfg.Rounds, "rounds", 2, "rounds (order alternates between rounds)")
	flag.IntVar(&cfg.Changes, "changes", 20, "single-endpoint changes in the one-change phase")
	flag.DurationVar(&cfg.Spacing, "spacing", 1500*time.Millisecond, "time between two single-endpoint changes (write to write)")
	flag.Float64Var(&cfg.ChurnRate, "churn-rate", 100, "endpoint changes per second in the churn phase (0: no churn phase)")
	flag.DurationVar(&cfg.ChurnDuration, "churn-duration", 60*time.Second, "length of the churn phase")
	flag.IntVar(&cfg.ChurnSample, "churn-sample", 10, "track the latency of every n-th churn change")
	flag.BoolVar(&cfg.Floors, "floors", true, "measure the iptables-restore floors (once per N and backend)")
	flag.DurationVar(&cfg.FloorCap, "floor-cap", 0, "longest one floor restore may take (default -cap)")
	flag.IntVar(&cfg.Workers, "workers", 16, "parallel API writers")
	flag.DurationVar(&cfg.Cap, "cap", 15*time.Minute, "longest wait for one phase; a phase past it is reported as > cap")
	flag.DurationVar(&cfg.Settle, "settle", 2*time.Second, "wait after a phase's goal before reading CPU and RSS (trailing syncs)")
	flag.DurationVar(&cfg.Gap, "poll-gap", 25*time.Millisecond, "pause between two kernel reads (restart, one change, churn); at least one read's duration for full reads")
	flag.DurationVar(&cfg.BulkGap, "bulk-poll-gap", 200*time.Millisecond, "pause between two kernel reads during bulk create and delete (the poller competes with the apiserver for the cores)")
	flag.StringVar(&cfg.Prefix, "prefix", "kpb", "sandbox prefix: network namespaces <prefix>-*, state in /run/kproxy-e2e/<prefix>")
	flag.StringVar(&cfg.KProxyBin, "kproxy-bin", filepath.Join(repo, "bin", "kproxy"), "kproxy binary")
	flag.StringVar(&cfg.BaseBin, "kproxy-base-bin", "", "a second kproxy binary (for example the last commit's) run as \"kproxy base\" beside the others: before/after in one run")
	flag.StringVar(&cfg.K8sBin, "k8s-bin", os.Getenv("KPROXY_K8S_BIN"), "directory with kube-apiserver, etcd, kube-proxy (default: e2e/tools/build-k8s.sh's)")
	flag.StringVar(&cfg.EchoBin, "echo-bin", filepath.Join(repo, "bin", "echo"), "e2e echo binary (the harness wants it)")
	flag.StringVar(&cfg.ResultsDir, "results", filepath.Join(repo, "bench", "results"), "where the JSON and the PNG go")
	flag.StringVar(&cfg.What, "what", "", "file name part after the date (default proxies-n<N>[-quick])")
	flag.StringVar(&cfg.Only, "only", "", "comma-separated proxy names to run (default all)")
	flag.StringVar(&cfg.DumpDir, "dump-dir", "", "write the node's rules after bulk create there (iptables-save, nft list ruleset)")
	flag.StringVar(&cfg.PlotWith, "plot-with", "", "comma-separated earlier kpbench JSON files whose sections the plot also shows")
	flag.StringVar(&cfg.Mode, "mode", "iptables", "iptables: kproxy against kube-proxy iptables and nftables on the host; ipvs: kproxy against kube-proxy ipvs in the IPVS VM (e2e/vm)")
	flag.StringVar(&cfg.VMMem, "vm-mem", "3G", "-mode ipvs: the VM's memory (qemu -m)")
	flag.DurationVar(&cfg.ColdWait, "cold-wait", 0, "-mode ipvs: pause between the kernel flush and the cold restart (the IPVS trash of deleted real servers empties after IP_VS_DEST_TRASH_PERIOD)")
	flag.BoolVar(&cfg.HeapProfiles, "heap-profiles", false, "-mode iptables: run kproxy with --profiling and save its heap profile (/debug/pprof/heap?gc=1) into -dump-dir at the end of each phase, as <proxy>-<backend>-n<N>-r<round>-<phase>.heap.pb.gz")
	flag.DurationVar(&cfg.ProfileBulk, "profile-bulk", 0, "-mode iptables: run kproxy with --profiling and take a CPU profile this long from the start of the bulk create, into -dump-dir as <proxy>-<backend>-n<N>-r<round>-bulk.cpu.pb.gz")
	flag.DurationVar(&cfg.ProfileCold, "profile-cold", 0, "-mode ipvs: run kproxy with --profiling and take a CPU profile this long, 6 s into the cold restart (into -dump-dir, base64)")
	flag.StringVar(&cfg.VMEnv, "vm-env", "", "-mode ipvs: KEY=VALUE,... for the guest's environment, which the proxies inherit (e.g. GODEBUG=gctrace=1)")
	flag.DurationVar(&cfg.VMTimeout, "vm-timeout", 90*time.Minute, "-mode ipvs: longest the whole VM run may take")
	flag.DurationVar(&cfg.QuietCap, "quiet-cap", 2*time.Minute, "-mode ipvs: longest wait for the state to stop changing before the restart with the state kept")
	guest := flag.Bool("ipvs-guest", false, "internal: the guest half of -mode ipvs, inside the VM")
	plotOnly := flag.String("plot", "", "only draw the plot of these comma-separated JSON files into -plot-out, run nothing")
	plotOut := flag.String("plot-out", "", "PNG path for -plot")
	flag.Parse()
	if *plotOnly != "" {
		if err := plotFiles(strings.Split(*plotOnly, ","), *plotOut); err != nil {
			fmt.Fprintf(os.Stderr, "kpbench: %v\n", err)
			os.Exit(1)
		}
		return
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if quick {
		// BENCH_QUICK=1: CI size unless the flags say otherwise.
		if !set["n"] {
			ns = "200"
		}
		if !set["rounds"] {
			cfg.Rounds = 1
		}
		if !set["cap"] {
			cfg.Cap = 60 * time.Second
		}
		if !set["churn-duration"] {
			cfg.ChurnDuration = 10 * time.Second
		}
	}
	if cfg.Mode != "iptables" && cfg.Mode != "ipvs" {
		fmt.Fprintf(os.Stderr, "kpbench: -mode %q: want iptables or ipvs\n", cfg.Mode)
		os.Exit(2)
	}
	if cfg.Mode == "ipvs" && !set["prefix"] {
		cfg.Prefix = "kpbv"
	}
	if cfg.FloorCap == 0 {
		cfg.FloorCap = cfg.Cap
	}
	for _, f := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "kpbench: -n %q: want positive numbers\n", ns)
			os.Exit(2)
		}
		cfg.Ns = append(cfg.Ns, n)
	}
	for _, b := range strings.Split(backends, ",") {
		cfg.Backends = append(cfg.Backends, strings.TrimSpace(b))
	}
	if *guest {
		if err := ipvsGuest(cfg); err != nil {
			fmt.Fprintf(os.Stderr, "kpbench guest: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if cfg.What == "" && cfg.Mode == "ipvs" {
		var parts []string
		for _, n := range cfg.Ns {
			parts = append(parts, strconv.Itoa(n))
		}
		cfg.What = "ipvs-n" + strings.Join(parts, "-")
		if quick {
			cfg.What += "-quick"
		}
	}
	if cfg.What == "" {
		var parts []string
		for _, n := range cfg.Ns {
			parts = append(parts, strconv.Itoa(n))
		}
		cfg.What = "proxies-n" + strings.Join(parts, "-")
		if len(cfg.Backends) > 1 || cfg.Backends[0] != backendNFT {
			cfg.What += "-" + strings.Join(cfg.Backends, "-")
		}
		if quick {
			cfg.What += "-quick"
		}
	}
	runFn := run
	if cfg.Mode == "ipvs" {
		runFn = runIPVS
	}
	if err := runFn(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "kpbench: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05.000")}, args...)...)
}

// preflight checks what both modes need: root (needs says what for), a valid sandbox prefix,
// the Kubernetes binaries.
func preflight(cfg *config, needs string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (%s)", needs)
	}
	if err := harness.ValidatePrefix(cfg.Prefix); err != nil {
		return err
	}
	var err error
	cfg.K8sBin, err = sandbox.K8sBin(cfg.K8sBin, record.RepoRoot())
	return err
}

func run(cfg config) error {
	if err := preflight(&cfg, "network namespaces, iptables"); err != nil {
		return err
	}
	for _, n := range cfg.Ns {
		if n*cfg.E > 50000 || cfg.Changes > 250 {
			return fmt.Errorf("n×e ≤ 50000 and changes ≤ 250 (endpoint address plan)")
		}
	}
	if cfg.ChurnRate*cfg.ChurnDuration.Seconds() > maxChurnChanges || cfg.ChurnSample < 1 {
		return fmt.Errorf("churn: rate × duration ≤ %d (address plan) and -churn-sample ≥ 1", maxChurnChanges)
	}
	sel := proxies
	if cfg.BaseBin != "" {
		sel = append(slices.Clone(proxies), proxyCfg{Name: "kproxy base", Proxy: harness.ProxyKProxy, Kernel: kstate.IPTables, Bin: cfg.BaseBin})
	}
	if cfg.Only != "" {
		all := sel
		sel = nil
		for _, p := range all {
			if strings.Contains(","+cfg.Only+",", ","+p.Name+",") {
				sel = append(sel, p)
			}
		}
		if len(sel) == 0 {
			return fmt.Errorf("-only %q matches no proxy", cfg.Only)
		}
	}
	unlock, err := sandbox.Guard(cfg.Prefix, logf)
	if err != nil {
		return err
	}
	defer unlock()
	if err := sandbox.RemoveLeftovers(cfg.Prefix, logf); err != nil {
		return err
	}
	res := &results{Header: record.NewHeader(machine(),
		map[string]any{"services": cfg.Ns, "endpointsPerService": cfg.E, "backends": cfg.Backends, "rounds": cfg.Rounds,
			"changes": cfg.Changes, "changeSpacing": cfg.Spacing.String(), "workers": cfg.Workers,
			"churnRate": cfg.ChurnRate, "churnDuration": cfg.ChurnDuration.String(), "churnSample": cfg.ChurnSample,
			"floors": cfg.Floors, "floorCap": cfg.FloorCap.String(),
			"phaseCap": cfg.Cap.String(), "settle": cfg.Settle.String(), "pollGap": cfg.Gap.String(), "bulkPollGap": cfg.BulkGap.String(),
			"quick": cfg.Quick, "prefix": cfg.Prefix, "nodes": 1, "podsPerNode": 0, "sandbox": "fresh per proxy and round"},
		versions(cfg), commandEnv...)}
	logf("kpbench: N=%v E=%d backends=%v rounds=%d changes=%d (every %v) churn %.0f/s×%v, proxies %d; k8s %s",
		cfg.Ns, cfg.E, cfg.Backends, cfg.Rounds, cfg.Changes, cfg.Spacing, cfg.ChurnRate, cfg.ChurnDuration, len(sel), cfg.K8sBin)
	for _, n := range cfg.Ns {
		for _, backend := range cfg.Backends {
			sec, err := runSection(cfg, n, backend, sel)
			if err != nil {
				return err
			}
			res.Sections = append(res.Sections, sec)
			if err := sec.printTable(os.Stdout, res); err != nil {
				return err
			}
		}
	}
	record.SetLoadavgAtEnd(res.Machine)
	return writeResults(cfg, res)
}

// writeResults writes <results>/<date>-<what>.json and the plot beside it.
func writeResults(cfg config, res *results) error {
	base := record.Base(cfg.ResultsDir, cfg.What)
	if err := record.WriteJSON(base+".json", res); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s.json\n", base)
	files := []string{base + ".json"}
	if cfg.PlotWith != "" {
		files = append(files, strings.Split(cfg.PlotWith, ",")...)
	}
	if err := plotFiles(files, base+".png"); err != nil {
		return err
	}
	fmt.Printf("PNG: %s.png\n", base)
	return nil
}

// runSection runs every round of one N on one backend.
func runSection(cfg config, n int, backend string, sel []proxyCfg) (*section, error) {
	env, err := useBackend(backend)
	if err != nil {
		return nil, err
	}
	defer env.restore()
	cfg.N = n
	sc := sectionCfg{N: n, Backend: backend}
	sec := &section{sectionCfg: sc, IPTables: iptablesVersion(), Floors: map[string]float64{}}
	for _, p := range sel {
		if p.Kernel == kstate.NFTables && backend != backendNFT {
			continue // nftables mode does not use iptables: once, in the nft section
		}
		sec.Proxies = append(sec.Proxies, p)
	}
	logf("section N=%d backend=%s (%s): %d proxies", n, backend, sec.IPTables, len(sec.Proxies))
	if cfg.Floors {
		capped, err := measureFloors(context.Background(), cfg.Prefix, n, cfg.E, cfg.FloorCap, sec.Floors)
		if err != nil {
			return nil, fmt.Errorf("floors: %w", err)
		}
		sec.FloorsCapped = capped
	}
	for r := 0; r < cfg.Rounds; r++ {
		order := append([]proxyCfg(nil), sec.Proxies...)
		if r%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		for pos, p := range order {
			logf("N=%d %s, round %d/%d, %d/%d: %s", n, backend, r+1, cfg.Rounds, pos+1, len(order), p.Name)
			rr := runOne(cfg, sc, p, r+1, pos+1)
			sec.Runs = append(sec.Runs, rr)
			if rr.Error != "" {
				logf("  %s: %s", p.Name, rr.Error)
			}
		}
	}
	sec.summarise()
	return sec, nil
}

// commandEnv are the environment variables the results file's command line records.
var commandEnv = []string{"BENCH_QUICK", "KPROXY_K8S_BIN"}

// machine is record.Machine with the memory and the Debian version.
func machine() map[string]any {
	m := record.Machine()
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				f := strings.Fields(l)
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					m["memoryGiB"] = stats.Round(kb/1024/1024, 1)
				}
			}
		}
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		m["debian"] = strings.TrimSpace(string(b))
	}
	return m
}

func versions(cfg config) map[string]string {
	v := record.ProxyVersions(cfg.KProxyBin, cfg.K8sBin)
	v["iptables"] = record.ToolVersion("iptables", "--version")
	v["iptablesNFT"] = record.ToolVersion("iptables-nft", "--version")
	v["iptablesLegacy"] = record.ToolVersion("iptables-legacy", "--version")
	v["nft"] = record.ToolVersion("nft", "--version")
	if cfg.BaseBin != "" {
		v["kproxyBase"] = record.ToolVersion(cfg.BaseBin, "--version")
		v["kproxyBaseBinary"] = cfg.BaseBin
	}
	return v
}

// results is the JSON file.
type results struct {
	record.Header
	Sections []*section `json:"sections"`
}

// section is one N on one backend: its floors, every run and the summary.
type section struct {
	sectionCfg
	IPTables     string             `json:"iptablesVersion"`
	Proxies      []proxyCfg         `json:"proxies"`
	Floors       map[string]float64 `json:"floors"`
	FloorsCapped []string           `json:"floorsCapped,omitempty"`
	Runs         []*runResult       `json:"runs"`
	Summary      []summaryRow       `json:"summary"`
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
	// ChurnLatenciesMs are the tracked churn changes' latencies, in order.
	ChurnLatenciesMs []float64 `json:"churnLatenciesMs,omitempty"`
	Restart          struct {
		LinesRemoved, LinesAdded, ObjectsRemoved, ObjectsAdded int
		Examples                                               []string `json:",omitempty"`
	} `json:"restartDiff"`
	Error string `json:"error,omitempty"`

	svcs []*benchService
}
