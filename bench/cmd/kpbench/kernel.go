package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/kproxy/kproxy/e2e/harness"
)

// Which kernel interface a proxy programs, so the poller knows what to read.
const (
	kernelIPTables = "iptables" // iptables-save -t nat (iptables-nft here)
	kernelNFT      = "nftables" // nft list table ip kube-proxy
)

// state is what the poller read from the node's kernel: the endpoint DNAT targets
// ("ip:port") and the ClusterIPs that have a service rule.
type state struct {
	eps  map[string]bool
	vips map[string]bool
}

var (
	// iptables: -A KUBE-SEP-XXX ... -j DNAT --to-destination 100.64.10.1:8080
	iptDNAT = regexp.MustCompile(`-j DNAT --to-destination (\d+\.\d+\.\d+\.\d+:\d+)`)
	// iptables: -A KUBE-SERVICES -d 100.100.3.4/32 ... -j KUBE-SVC-XXX
	iptVIP = regexp.MustCompile(`^-A KUBE-SERVICES -d (\d+\.\d+\.\d+\.\d+)/32 .*-j KUBE-SVC-`)
	// nftables endpoint maps: { 0 : 100.64.10.1 . 8080, 1 : ... }
	nftEP = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. (\d+)\b`)
	// nftables service-ips map: 100.100.3.4 . tcp . 80 : goto service-...
	nftVIP = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. tcp \. \d+ : goto service-`)
)

// readState reads the node's kernel state once.
func readState(ctx context.Context, node, kind string) (state, error) {
	st := state{eps: map[string]bool{}, vips: map[string]bool{}}
	switch kind {
	case kernelIPTables:
		out, err := harness.Exec(ctx, node, "iptables-save", "-t", "nat")
		if err != nil {
			return st, err
		}
		for _, l := range strings.Split(out, "\n") {
			if !strings.HasPrefix(l, "-A KUBE-") {
				continue
			}
			if m := iptDNAT.FindStringSubmatch(l); m != nil {
				st.eps[m[1]] = true
			} else if m := iptVIP.FindStringSubmatch(l); m != nil {
				st.vips[m[1]] = true
			}
		}
	case kernelNFT:
		out, err := harness.Exec(ctx, node, "nft", "list", "table", "ip", "kube-proxy")
		if err != nil {
			if strings.Contains(out, "No such file or directory") {
				return st, nil // table not created yet (or flushed)
			}
			return st, err
		}
		for _, m := range nftVIP.FindAllStringSubmatch(out, -1) {
			st.vips[m[1]] = true
		}
		for _, m := range nftEP.FindAllStringSubmatch(out, -1) {
			st.eps[m[1]+":"+m[2]] = true
		}
	default:
		return st, fmt.Errorf("kernel kind %q", kind)
	}
	return st, nil
}

// programmed counts the services of the load whose ClusterIP and every endpoint are in st.
func programmed(st state, svcs []*benchService) int {
	n := 0
	for _, s := range svcs {
		if s.ok(st) {
			n++
		}
	}
	return n
}

// pollStats accumulates what the polling costs (it shares the 2 cores with the proxy).
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

// pollResult is when a condition was first seen: the midpoint of the poll that saw it
// (the kernel was read somewhere inside that poll), and that poll's start and end.
type pollResult struct {
	At, Start, End time.Time
	Capped         bool
}

// pollUntil reads the kernel every gap until cond holds or cap passes.
func pollUntil(ctx context.Context, node, kind string, gap, capd time.Duration, ps *pollStats, cond func(state) bool) (pollResult, error) {
	deadline := time.Now().Add(capd)
	for {
		t0 := time.Now()
		st, err := readState(ctx, node, kind)
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
		select {
		case <-ctx.Done():
			return pollResult{}, ctx.Err()
		case <-time.After(gap):
		}
	}
}

// snapshot is the node's rules at one moment, for the restart diff: the text lines
// (iptables-save, or nft list ruleset for nftables proxies; counters stripped) and the nft
// objects with their kernel handles (nft -a list ruleset), which tell a rule rewritten with the
// same text from one left alone.
type snapshot struct {
	lines   map[string]bool
	handles map[string]bool
}

var (
	iptCounters = regexp.MustCompile(`\[\d+:\d+\]`)
	nftCounters = regexp.MustCompile(`counter packets \d+ bytes \d+`)
)

func takeSnapshot(ctx context.Context, node, kind string) (snapshot, error) {
	s := snapshot{lines: map[string]bool{}, handles: map[string]bool{}}
	var out string
	var err error
	if kind == kernelIPTables {
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
