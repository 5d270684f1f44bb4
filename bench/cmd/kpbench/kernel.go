package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/bench/internal/kstate"
	"github.com/kproxy/kproxy/bench/internal/stats"
	"github.com/kproxy/kproxy/e2e/harness"
)

// Chain names of kube-proxy's iptables mode, which kproxy keeps: KUBE-SVC- and KUBE-SEP- plus
// the first 16 characters of the base32 of the SHA-256 of "ns/name[:port]" + protocol
// (+ "ip:port" for an endpoint). The load's ports are unnamed TCP ports.
func svcChain(s *benchService) string { return "KUBE-SVC-" + hash16(benchNS+"/"+s.name+"tcp") }

func sepChain(s *benchService, ep string) string {
	return "KUBE-SEP-" + hash16(benchNS+"/"+s.name+"tcp"+ep)
}

func hash16(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// endpointProbe tells when addr became one of service S's programmed endpoints, from the
// kernel.
//
// Everything on nf_tables (kube-proxy's nftables mode, and iptables-nft) is observed through
// the kernel's commit notifications (nft monitor, one process for the run's one-change and
// churn phases): the time is when the first "add" of a rule or element holding addr arrived:
// "dnat to ip:port" (an iptables-nft KUBE-SEP rule, committed in the same restore as the
// KUBE-SVC jump to it), "ip . port" (kube-proxy nftables' numgen DNAT map) or an endpoint
// chain "…__ip/port". Reading the service's chain instead costs 50 ms at 1,000 services and
// seconds at 10,000 with nft (nft 1.0.6 fetches the elements of every anonymous map first),
// and polling it costs resolution: one method for all proxies keeps the comparison fair.
//
// With iptables-legacy (no notifications) it reads that service's chains only: its KUBE-SVC
// chain must jump to the endpoint's KUBE-SEP chain and that chain must DNAT to addr (two
// chain listings in one exec). The time is the midpoint of the read that saw it.
type endpointProbe struct {
	node    string
	kind    kstate.Kind
	monitor *nftMonitor
}

func newEndpointProbe(ctx context.Context, node string, kind kstate.Kind, backend string) (*endpointProbe, error) {
	p := &endpointProbe{node: node, kind: kind}
	if kind == kstate.NFTables || backend == backendNFT {
		m, err := startNFTMonitor(ctx, node)
		if err != nil {
			return nil, err
		}
		p.monitor = m
	}
	return p, nil
}

// close stops the monitor, if any.
func (p *endpointProbe) close() {
	if p.monitor != nil {
		p.monitor.stop()
	}
}

// seen reports whether addr ("ip:port") is programmed as an endpoint of s and since when (or
// at least when it was read so).
func (p *endpointProbe) seen(ctx context.Context, s *benchService, addr string) (time.Time, bool, error) {
	switch {
	case p.monitor != nil:
		at, ok := p.monitor.firstAdd(addr)
		return at, ok, nil
	case p.kind == kstate.IPTables:
		svc, sep := svcChain(s), sepChain(s, addr)
		script := fmt.Sprintf("iptables -w -t nat -S %s 2>/dev/null; echo ==; iptables -w -t nat -S %s 2>/dev/null; true", svc, sep)
		t0 := time.Now()
		out, err := harness.Exec(ctx, p.node, "sh", "-c", script)
		t1 := time.Now()
		if err != nil {
			return time.Time{}, false, err
		}
		svcPart, sepPart, _ := strings.Cut(out, "==\n")
		ok := strings.Contains(svcPart, "-j "+sep+"\n") && strings.Contains(sepPart, "--to-destination "+addr+"\n")
		return t0.Add(t1.Sub(t0) / 2), ok, nil
	}
	return time.Time{}, false, fmt.Errorf("kernel kind %q", p.kind)
}

// nftMonitor runs nft monitor in the node's namespace and keeps, for every "ip:port" it saw
// in an "add" notification, when it first arrived.
type nftMonitor struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	adds map[string]time.Time
	// marker is the table kpbench adds to know the monitor is listening.
	marker string
	ready  chan struct{}
	done   chan struct{}
}

var (
	nftMapEP   = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. (\d+)\b`)
	nftChainEP = regexp.MustCompile(`__(\d+\.\d+\.\d+\.\d+)/(\d+)\b`)
	nftDNATTo  = regexp.MustCompile(`dnat to (\d+\.\d+\.\d+\.\d+):(\d+)\b`)
)

// startNFTMonitor starts nft monitor and returns once it reports kernel events: it adds and
// deletes a table of its own until the monitor prints it. nft loads the ruleset first (about
// 10 s at 10,000 services) and starts that load again whenever the ruleset changes meanwhile,
// so the probes come further and further apart (1 s, 2 s, 4 s, ... at most 30 s): probing
// every second kept the monitor loading forever at 10,000 services.
func startNFTMonitor(ctx context.Context, node string) (*nftMonitor, error) {
	m := &nftMonitor{adds: map[string]time.Time{}, marker: "kpbench-monitor-ready",
		ready: make(chan struct{}), done: make(chan struct{})}
	m.cmd = exec.CommandContext(ctx, "nsenter", "--net="+harness.NetnsPath(node), "--", "stdbuf", "-oL", "nft", "monitor")
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("nft monitor: %w", err)
	}
	go m.read(out)
	const within = 4 * time.Minute
	deadline := time.Now().Add(within)
	for gap := time.Second; ; gap = min(2*gap, 30*time.Second) {
		_, _ = harness.Exec(ctx, node, "nft", "add", "table", "ip", m.marker)
		_, _ = harness.Exec(ctx, node, "nft", "delete", "table", "ip", m.marker)
		select {
		case <-m.ready:
			return m, nil
		case <-m.done:
			return nil, fmt.Errorf("nft monitor ended before it was ready")
		case <-time.After(gap):
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("nft monitor not ready within %v", within)
		}
	}
}

func (m *nftMonitor) read(r io.Reader) {
	defer close(m.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	readyOnce := sync.Once{}
	for sc.Scan() {
		now := time.Now()
		line := sc.Text()
		if !strings.HasPrefix(line, "add ") {
			continue
		}
		if strings.Contains(line, m.marker) {
			readyOnce.Do(func() { close(m.ready) })
			continue
		}
		m.mu.Lock()
		for _, re := range []*regexp.Regexp{nftMapEP, nftChainEP, nftDNATTo} {
			for _, g := range re.FindAllStringSubmatch(line, -1) {
				if k := g[1] + ":" + g[2]; m.adds[k].IsZero() {
					m.adds[k] = now
				}
			}
		}
		m.mu.Unlock()
	}
}

func (m *nftMonitor) firstAdd(addr string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.adds[addr]
	return at, ok
}

func (m *nftMonitor) stop() {
	if m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
	}
	<-m.done
	_ = m.cmd.Wait()
}

// programmed counts the services of the load whose ClusterIP and every endpoint are in st.
func programmed(st kstate.State, svcs []*benchService) int {
	n := 0
	for _, s := range svcs {
		if s.ok(st) {
			n++
		}
	}
	return n
}

// pollStats accumulates what the polling costs (it shares the 2 cores with the proxy), per
// kind of read.
type pollStats struct {
	N     int
	Total time.Duration
}

func (p *pollStats) add(d time.Duration) { p.N++; p.Total += d }
func (p *pollStats) meanMs() float64 {
	if p.N == 0 {
		return 0
	}
	return float64(p.Total.Microseconds()) / 1000 / float64(p.N)
}

// probeStats are the poll costs of one run by kind of read.
type probeStats struct{ full, vips, endpoint pollStats }

// pollResult is when a condition was first seen: the midpoint of the poll that saw it
// (the kernel was read somewhere inside that poll), and that poll's start and end.
type pollResult struct {
	At, Start, End time.Time
	Capped         bool
}

// pollUntil reads the whole kernel state until cond holds or capd passes, at least gap and at
// least one read's duration apart (so that polling takes at most half a core even when one
// read takes seconds).
func pollUntil(ctx context.Context, node string, kind kstate.Kind, gap, capd time.Duration, ps *pollStats, cond func(kstate.State) bool) (pollResult, error) {
	deadline := time.Now().Add(capd)
	for {
		t0 := time.Now()
		st, err := kstate.Read(ctx, node, kind)
		t1 := time.Now()
		ps.add(t1.Sub(t0))
		if err != nil {
			return pollResult{}, err
		}
		if cond(st) {
			return pollResult{At: t0.Add(t1.Sub(t0) / 2), Start: t0, End: t1}, nil
		}
		if t1.After(deadline) {
			return pollResult{Capped: true}, nil
		}
		if err := sleepCtx(ctx, max(gap, t1.Sub(t0))); err != nil {
			return pollResult{}, err
		}
	}
}

// pollVIPsThenAll waits for a condition on the whole state in two steps: cheap reads of the
// VIPs until vipCond holds, then one full read to confirm cond. When the confirmation holds,
// the time is the VIP read's (the endpoints were already in the kernel then, since a service's
// capture rule is written with or after its chains); when it does not, full reads continue
// and the time is the first full read that sees cond.
func pollVIPsThenAll(ctx context.Context, node string, kind kstate.Kind, gap, capd time.Duration, ps *probeStats,
	vipCond func(kstate.State) bool, cond func(kstate.State) bool) (pollResult, error) {
	deadline := time.Now().Add(capd)
	for {
		t0 := time.Now()
		st, err := kstate.ReadVIPs(ctx, node, kind)
		t1 := time.Now()
		ps.vips.add(t1.Sub(t0))
		if err != nil {
			return pollResult{}, err
		}
		if vipCond(st) {
			f0 := time.Now()
			full, err := kstate.Read(ctx, node, kind)
			ps.full.add(time.Since(f0))
			if err != nil {
				return pollResult{}, err
			}
			if cond(full) {
				return pollResult{At: t0.Add(t1.Sub(t0) / 2), Start: t0, End: t1}, nil
			}
			return pollUntil(ctx, node, kind, gap, time.Until(deadline), &ps.full, cond)
		}
		if t1.After(deadline) {
			return pollResult{Capped: true}, nil
		}
		if err := sleepCtx(ctx, max(gap, t1.Sub(t0))); err != nil {
			return pollResult{}, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// snapshot is the node's rules at one moment, for the restart diff: the text lines
// (iptables-save, or nft list ruleset for nftables proxies; counters stripped) and the nft
// objects with their kernel handles (nft -a list ruleset), which tell a rule rewritten with the
// same text from one left alone. With iptables-legacy there are no nft objects.
type snapshot struct {
	lines   map[string]bool
	handles map[string]bool
}

var (
	iptCounters = regexp.MustCompile(`\[\d+:\d+\]`)
	nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)
)

func takeSnapshot(ctx context.Context, node string, kind kstate.Kind) (snapshot, error) {
	s := snapshot{lines: map[string]bool{}, handles: map[string]bool{}}
	var out string
	var err error
	if kind == kstate.IPTables {
		out, err = harness.Exec(ctx, node, "iptables-save")
	} else {
		out, err = harness.Exec(ctx, node, "nft", "list", "ruleset")
	}
	if err != nil {
		return s, err
	}
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		l = nftCounters.ReplaceAllString(iptCounters.ReplaceAllString(l, ""), "counter")
		s.lines[l] = true
	}
	out, err = harness.Exec(ctx, node, "nft", "-a", "list", "ruleset")
	if err != nil {
		return s, err
	}
	var table, chain string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "table "):
			table, chain = l, ""
		case strings.HasPrefix(l, "chain "), strings.HasPrefix(l, "set "), strings.HasPrefix(l, "map "):
			chain = l
		}
		if strings.Contains(l, "# handle ") {
			s.handles[table+" | "+chain+" | "+nftCounters.ReplaceAllString(l, "counter")] = true
		}
	}
	return s, nil
}

// diffCount is |a \ b| + |b \ a|.
func diffCount(a, b map[string]bool) (removed, added int) {
	for k := range a {
		if !b[k] {
			removed++
		}
	}
	for k := range b {
		if !a[k] {
			added++
		}
	}
	return removed, added
}

// idleRead times reads of the whole state with nothing else changing: the median of n.
func idleRead(ctx context.Context, node string, kind kstate.Kind, n int) (time.Duration, error) {
	var ds []float64
	for range n {
		t0 := time.Now()
		if _, err := kstate.Read(ctx, node, kind); err != nil {
			return 0, err
		}
		ds = append(ds, float64(time.Since(t0)))
	}
	return time.Duration(stats.Median(ds)), nil
}
