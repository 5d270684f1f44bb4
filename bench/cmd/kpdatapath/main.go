// Command kpdatapath is the datapath benchmark of issue 8: pod-to-pod TCP throughput,
// request/response latency and new-connection rate across two nodes over kproxy's VXLAN,
// host-gw and ipip backends (programmed by package datapath), against two pod namespaces
// joined by a plain veth pair (veth-limit, the limit). Each backend runs in fresh network
// namespaces for every round; rounds alternate the order. It prints a Markdown table and
// writes JSON to bench/results/<UTC date>-datapath.json. With -vm the whole benchmark runs
// in the IPVS qemu VM of e2e/vm (whose kernel has ipip) and writes <date>-datapath-vm.json.
// See bench/README.md, "Datapath".
package main

import (
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
	"strings"
	"syscall"
	"time"

	"github.com/kproxy/kproxy/bench/internal/record"
)

var allBackends = []string{limitBackend, "vxlan", "host-gw", "ipip"}

type config struct {
	Duration     time.Duration
	LatencyN     int
	ConnDuration time.Duration
	Rounds       int
	Backends     []string
	Chunk        int
	Settle       time.Duration
	Prefix       string
	Results      string
	What         string
	VM           bool
	VMTimeout    time.Duration
	VMMem        string
	Guest        bool
	Client       string
	Addr         string
}

// MarshalJSON writes the configuration as the results file records it (durations as text).
func (c config) MarshalJSON() ([]byte, error) {
	m := map[string]any{
		"duration": c.Duration.String(), "latencyN": c.LatencyN, "latencyWarmup": latencyWarmup,
		"connDuration": c.ConnDuration.String(), "rounds": c.Rounds, "backends": c.Backends,
		"chunkBytes": c.Chunk, "settle": c.Settle.String(), "prefix": c.Prefix, "vm": c.VM,
	}
	if c.VM {
		m["vmTimeout"], m["vmMem"] = vmTimeout(c).String(), c.VMMem
	}
	return json.Marshal(m)
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("kpdatapath", flag.ContinueOnError)
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "throughput: how long the one connection sends")
	fs.IntVar(&cfg.LatencyN, "latency-n", 10000, "latency: 1-byte round trips on one connection (after 100 not counted)")
	fs.DurationVar(&cfg.ConnDuration, "conn-duration", 5*time.Second, "new-connection rate: how long the connect+echo+close loop runs")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "rounds; odd rounds run the backends in reverse order")
	backends := fs.String("backends", strings.Join(allBackends, ","), "comma-separated subset of "+strings.Join(allBackends, ","))
	fs.IntVar(&cfg.Chunk, "chunk", 128<<10, "throughput: bytes per write")
	fs.DurationVar(&cfg.Settle, "settle", time.Second, "pause after deleting a run's namespaces (the kernel frees them in the background)")
	fs.StringVar(&cfg.Prefix, "prefix", "kpdp", "namespace prefix: <prefix>-<random>-<run>-{pa,pb,na,nb}")
	fs.StringVar(&cfg.Results, "results", "", "results directory (default <repo>/bench/results; \"-\": write no file)")
	fs.StringVar(&cfg.What, "what", "", "results file name after the date (default datapath, datapath-vm with -vm)")
	fs.BoolVar(&cfg.VM, "vm", false, "run the whole benchmark inside the IPVS qemu VM (e2e/vm/run-test.sh; this binary must be static)")
	fs.DurationVar(&cfg.VMTimeout, "vm-timeout", 0, "-vm: longest the VM may run (default: estimated from the flags)")
	fs.StringVar(&cfg.VMMem, "vm-mem", "1G", "-vm: the VM's memory")
	fs.BoolVar(&cfg.Guest, "guest", false, "internal: the half that runs inside the VM")
	fs.StringVar(&cfg.Client, "client", "", "internal: run one measurement (throughput, latency, conns) against -addr and print it as JSON")
	fs.StringVar(&cfg.Addr, "addr", "", "internal: -client's server address")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	seen := map[string]bool{}
	for _, b := range strings.Split(*backends, ",") {
		b = strings.TrimSpace(b)
		if b == "" || seen[b] {
			continue
		}
		if !slices.Contains(allBackends, b) {
			return cfg, fmt.Errorf("-backends: unknown %q (want %s)", b, strings.Join(allBackends, ","))
		}
		seen[b] = true
		cfg.Backends = append(cfg.Backends, b)
	}
	switch {
	case len(cfg.Backends) == 0:
		return cfg, errors.New("-backends: none")
	case cfg.Rounds < 1:
		return cfg, errors.New("-rounds must be at least 1")
	case cfg.Duration <= 0 || cfg.ConnDuration <= 0 || cfg.LatencyN < 1 || cfg.Chunk < 1:
		return cfg, errors.New("-duration, -conn-duration, -latency-n and -chunk must be positive")
	case !validPrefix(cfg.Prefix):
		return cfg, fmt.Errorf("-prefix %q: want 1-12 of [a-z0-9]", cfg.Prefix)
	}
	if cfg.What == "" {
		cfg.What = "datapath"
		if cfg.VM {
			cfg.What = "datapath-vm"
		}
	}
	return cfg, nil
}

func validPrefix(p string) bool {
	if p == "" || len(p) > 12 {
		return false
	}
	for _, r := range p {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "kpdatapath: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch {
	case cfg.Client != "":
		err = clientMain(ctx, cfg)
	case os.Geteuid() != 0:
		err = errors.New("must run as root (network namespaces)")
	case cfg.Guest:
		err = runGuest(ctx, cfg)
	case cfg.VM:
		err = runVM(ctx, cfg)
	default:
		err = runHost(ctx, cfg)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kpdatapath: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05.000")}, args...)...)
}

// runResult is one backend in one round, in namespaces of its own.
type runResult struct {
	Backend  string             `json:"backend"`
	Round    int                `json:"round"`
	Position int                `json:"position"`
	PodMTU   int                `json:"podMTU"`
	SetupS   float64            `json:"setupS"`
	Figures  map[string]float64 `json:"figures"`
	// Throughput, Latency, Conns: the three measurements in detail.
	Throughput *throughputResult `json:"throughput,omitempty"`
	Latency    *latencyResult    `json:"latency,omitempty"`
	Conns      *connResult       `json:"connRate,omitempty"`
	// RetransSegsPodA: TCP segments pod A retransmitted during the three measurements.
	RetransSegsPodA int64 `json:"tcpRetransSegsPodA"`
	// FragCreatesNodeA: IPv4 fragments node A made meanwhile (0: the pod MTU fits the
	// encapsulation). Absent for veth-limit.
	FragCreatesNodeA *int64 `json:"ipFragCreatesNodeA,omitempty"`
	// CrossDevice: node A's device the traffic must leave through (the tunnel device, or the
	// underlay for host-gw), and the bytes it sent during the throughput phase (checked to
	// be at least the payload).
	CrossDevice        string `json:"crossDevice,omitempty"`
	CrossDeviceTxBytes uint64 `json:"crossDeviceTxBytes,omitempty"`
	Error              string `json:"error,omitempty"`
}

// campaign is every run of one invocation, wherever it ran.
type campaign struct {
	Unavailable map[string]string `json:"unavailable,omitempty"`
	Orders      [][]string        `json:"orders"`
	Runs        []*runResult      `json:"runs"`
	Machine     map[string]any    `json:"machine"`
}

// runCampaign runs every available backend for cfg.Rounds rounds; onRun sees each run as it
// ends. Every namespace it makes is named <prefix>-<random>-*, and all are gone when it
// returns, also on error or interrupt.
func runCampaign(ctx context.Context, cfg config, onRun func(*runResult)) (*campaign, error) {
	prefix := cfg.Prefix + "-" + randHex(3)
	defer func() {
		if left, err := sweep(prefix); len(left) > 0 || err != nil {
			logf("removed leftover namespaces %v (%v)", left, err)
		}
	}()
	c := &campaign{Unavailable: map[string]string{}, Machine: machine()}
	var active []string
	for _, b := range cfg.Backends {
		if b == "ipip" {
			if err := probeIPIP(prefix); err != nil {
				c.Unavailable[b] = "not available on this kernel: " + err.Error()
				logf("ipip: %s", c.Unavailable[b])
				continue
			}
		}
		active = append(active, b)
	}
	n := 0
	for r := 0; r < cfg.Rounds; r++ {
		order := roundOrder(active, r)
		c.Orders = append(c.Orders, order)
		for pos, b := range order {
			if err := ctx.Err(); err != nil {
				return c, err
			}
			n++
			run := runOne(ctx, cfg, fmt.Sprintf("%s-%d", prefix, n), b, r+1, pos+1)
			c.Runs = append(c.Runs, run)
			if onRun != nil {
				onRun(run)
			}
		}
	}
	record.SetLoadavgAtEnd(c.Machine)
	return c, ctx.Err()
}

// runOne builds backend's topology under tag, measures from pod A to pod B, and deletes it.
func runOne(ctx context.Context, cfg config, tag, backend string, round, pos int) (res *runResult) {
	res = &runResult{Backend: backend, Round: round, Position: pos, Figures: map[string]float64{}}
	logf("round %d/%d: %s (%s-*)", round, cfg.Rounds, backend, tag)
	t0 := time.Now()
	tp, err := buildTopo(ctx, tag, backend)
	defer func() {
		if err := tp.destroy(); err != nil {
			logf("%s: delete namespaces: %v", backend, err)
			if res.Error == "" {
				res.Error = "cleanup: " + err.Error()
			}
		}
		time.Sleep(cfg.Settle)
	}()
	res.PodMTU = tp.podMTU
	fail := func(what string, err error) *runResult {
		res.Error = what + ": " + err.Error()
		logf("%s: %s", backend, res.Error)
		return res
	}
	if err != nil {
		return fail("setup", err)
	}
	srv, err := startServer(tp.podB(), podBIP)
	if err != nil {
		return fail("server", err)
	}
	defer srv.close()
	addr := net.JoinHostPort(podBIP, benchPort)
	if err := waitReachable(ctx, tp.podA(), addr, 10*time.Second); err != nil {
		return fail("pod A → pod B", err)
	}
	res.SetupS = time.Since(t0).Seconds()
	// The new-connection loop leaves its closed connections in TIME_WAIT on pod A: let it
	// reuse them (and a wide port range) so that the loop never runs out of source ports.
	for k, v := range map[string]string{"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "1024 65535"} {
		if err := writeSysctl(tp.podA(), k, v); err != nil {
			return fail("sysctl "+k, err)
		}
	}
	retrans0, _ := snmpCounter(tp.podA(), "Tcp", "RetransSegs")
	var frag0 int64
	if backend != limitBackend {
		frag0, _ = snmpCounter(tp.nodeA(), "Ip", "FragCreates")
	}

	dev := crossDevice(backend)
	var tx0 uint64
	if dev != "" {
		if tx0, err = txBytes(tp.nodeA(), dev); err != nil {
			return fail("tx counter", err)
		}
	}
	var th throughputResult
	if err := runClient(ctx, tp.podA(), clientThroughput, addr, cfg, &th); err != nil {
		return fail("throughput", err)
	}
	// The traffic took the backend's path: node A sent at least the payload out of the
	// tunnel device (vxlan, ipip) or the underlay (host-gw).
	if dev != "" {
		tx1, err := txBytes(tp.nodeA(), dev)
		if err != nil {
			return fail("tx counter", err)
		}
		res.CrossDevice, res.CrossDeviceTxBytes = dev, tx1-tx0
		if int64(tx1-tx0) < th.BytesSent {
			return fail("path", fmt.Errorf("node A sent %d bytes out of %s for %d bytes of payload: the traffic did not take the %s path", tx1-tx0, dev, th.BytesSent, backend))
		}
	}
	res.Throughput = &th
	res.Figures["throughput_gbps"] = th.Gbps
	logf("%s: throughput %.3f Gbit/s (%d MB in %.2f s, pod MTU %d)", backend, th.Gbps, th.BytesReceived>>20, th.ReceiverS, tp.podMTU)

	var lat latencyResult
	if err := runClient(ctx, tp.podA(), clientLatency, addr, cfg, &lat); err != nil {
		return fail("latency", err)
	}
	res.Latency = &lat
	res.Figures["rtt_p50_us"], res.Figures["rtt_p99_us"] = lat.P50Us, lat.P99Us
	logf("%s: RTT p50 %.1f µs p99 %.1f µs (n=%d)", backend, lat.P50Us, lat.P99Us, lat.N)

	var cr connResult
	if err := runClient(ctx, tp.podA(), clientConns, addr, cfg, &cr); err != nil {
		return fail("new connections", err)
	}
	res.Conns = &cr
	res.Figures["conn_rate"], res.Figures["connect_p50_us"], res.Figures["connect_p99_us"] = cr.PerS, cr.ConnectP50Us, cr.ConnectP99Us
	logf("%s: %.0f conns/s, connect p50 %.1f µs p99 %.1f µs (%d errors)", backend, cr.PerS, cr.ConnectP50Us, cr.ConnectP99Us, cr.Errors)

	if r1, err := snmpCounter(tp.podA(), "Tcp", "RetransSegs"); err == nil {
		res.RetransSegsPodA = r1 - retrans0
	}
	if backend != limitBackend {
		if f1, err := snmpCounter(tp.nodeA(), "Ip", "FragCreates"); err == nil {
			d := f1 - frag0
			res.FragCreatesNodeA = &d
		}
	}
	return res
}

// results is the JSON file.
type results struct {
	Date        string            `json:"date"`
	Command     string            `json:"command"`
	GitDescribe string            `json:"gitDescribe"`
	Where       string            `json:"where"`
	Machine     map[string]any    `json:"machine"`
	VM          map[string]any    `json:"vm,omitempty"`
	Config      config            `json:"config"`
	Unavailable map[string]string `json:"unavailable,omitempty"`
	Orders      [][]string        `json:"orders"`
	Runs        []*runResult      `json:"runs"`
	Summary     []summaryRow      `json:"summary"`
	Notes       []string          `json:"notes"`
	Error       string            `json:"error,omitempty"`
}

var commonNotes = []string{
	"Each backend runs in fresh namespaces each round; rounds alternate the order; a cell is the median over rounds, then each round's value.",
	"Ratios are backend / veth-limit per round (back to back in one invocation), then the median over rounds.",
	"Client and server are one Go process (client in pod A, server in pod B) on the same machine: the figures include Go's runtime and share the CPUs with the kernel's work for both ends.",
	"veth-limit: pod A and pod B joined by one veth pair, MTU 1500. Overlays: pods at the backend's pod MTU (vxlan 1450, ipip 1480, host-gw 1500) on a 1500 underlay veth; no iptables rules in any namespace.",
	"The new-connection loop runs with net.ipv4.tcp_tw_reuse=1 and ip_local_port_range 1024-65535 in pod A (the client closes first; TIME_WAIT stays on the client).",
}

const vmNote = "Run inside the qemu VM under TCG emulation (1 vCPU, no KVM): absolute figures are far below the host's and not comparable with them; only ratios among backends in this VM run are comparable."

func runHost(ctx context.Context, cfg config) error {
	res := newResults(cfg, "host")
	c, err := runCampaign(ctx, cfg, nil)
	res.Machine = c.Machine
	return finish(cfg, res, c, err)
}

func newResults(cfg config, where string) *results {
	return &results{
		Date:        time.Now().UTC().Format(time.RFC3339),
		Command:     record.CommandLine(),
		GitDescribe: record.GitDescribe(record.RepoRoot()),
		Where:       where,
		Config:      cfg,
		Notes:       commonNotes,
	}
}

// finish summarises c into res, prints the table and writes the JSON; err is the campaign's.
func finish(cfg config, res *results, c *campaign, err error) error {
	if c != nil {
		res.Unavailable, res.Orders, res.Runs = c.Unavailable, c.Orders, c.Runs
	}
	if err != nil {
		res.Error = err.Error()
	}
	res.Summary = summarise(res.Runs, cfg.Backends, cfg.Rounds)
	var failed []string
	for _, r := range res.Runs {
		if r.Error != "" {
			failed = append(failed, fmt.Sprintf("round %d %s: %s", r.Round, r.Backend, r.Error))
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\n## Datapath: pod A → pod B, %s (%s)\n\n", res.Where, describeMachine(res))
	if res.Where == "vm" {
		fmt.Fprintf(&out, "%s\n\n", vmNote)
	}
	fmt.Fprintf(&out, "throughput: 1 TCP connection for %s, %d-byte writes; RTT: %d round trips of 1 byte; new connections: %s loop; %d round(s), median (each round)\n\n",
		cfg.Duration, cfg.Chunk, cfg.LatencyN, cfg.ConnDuration, cfg.Rounds)
	out.WriteString(podMTULine(res.Runs, cfg.Backends))
	if perr := printTable(&out, res.Summary, cfg.Backends, res.Unavailable); perr != nil {
		return perr
	}
	for _, f := range failed {
		fmt.Fprintf(&out, "\nFAILED %s\n", f)
	}
	if _, perr := os.Stdout.WriteString(out.String()); perr != nil {
		return perr
	}
	if werr := writeResults(cfg, res); werr != nil {
		return errors.Join(err, werr)
	}
	if err == nil && len(failed) > 0 {
		err = fmt.Errorf("%d run(s) failed", len(failed))
	}
	return err
}

func describeMachine(res *results) string {
	m := res.Machine
	if res.VM != nil {
		return fmt.Sprintf("guest kernel %v, %v vCPU; host %v, load %v → %v", res.VM["kernel"], res.VM["nproc"], m["kernel"], m["loadavgAtStart"], m["loadavgAtEnd"])
	}
	return fmt.Sprintf("kernel %v, %v CPUs, load %v → %v", m["kernel"], m["nproc"], m["loadavgAtStart"], m["loadavgAtEnd"])
}

func writeResults(cfg config, res *results) error {
	if cfg.Results == "-" {
		return nil
	}
	dir := cfg.Results
	if dir == "" {
		dir = filepath.Join(record.RepoRoot(), "bench", "results")
	}
	path := record.Base(dir, cfg.What) + ".json"
	if err := record.WriteJSON(path, res); err != nil {
		return err
	}
	logf("wrote %s", path)
	return nil
}

// machine describes where the benchmark runs: record.Machine, GOMAXPROCS, this process's
// nice value and the busiest processes.
func machine() map[string]any {
	m := record.Machine()
	m["gomaxprocs"] = runtime.GOMAXPROCS(0)
	if nice, err := record.Nice(); err == nil {
		m["nice"] = nice
	}
	// What else was running (the machine is shared): the busiest processes by CPU share
	// over their lifetime. Absent where ps lacks these options (busybox in the VM).
	if out, err := exec.Command("ps", "-eo", "pcpu,ni,etime,comm", "--sort=-pcpu").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		m["busiestProcessesAtStart"] = lines[:min(len(lines), 9)]
	}
	return m
}
