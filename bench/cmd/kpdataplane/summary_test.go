package main

import (
	"strings"
	"testing"

	"github.com/kproxy/kproxy/bench/internal/stats"
)

func loop(target string, w int, rate, c50, c99, r50, r99 float64) loopResult {
	return loopResult{Target: target, Workers: w, Conns: 100, Rate: rate,
		Connect: stats.Dist{P50: c50, P99: c99}, RR: stats.Dist{P50: r50, P99: r99}, First: stats.Dist{P50: c50 + r50, P99: c99 + r99}}
}

// Two rounds of kproxy, one upstream and the no-proxy limit.
func testRuns() []*runResult {
	return []*runResult{
		{Proxy: "kproxy", Round: 1, Loops: []loopResult{loop(targetVIP, 1, 1000, 50, 100, 20, 40), loop(targetPod, 1, 1100, 45, 90, 20, 40)}},
		{Proxy: "kube-proxy iptables", Round: 1, Loops: []loopResult{loop(targetVIP, 1, 500, 100, 300, 20, 40), loop(targetPod, 1, 550, 90, 200, 20, 40)}},
		{Proxy: noProxy, Round: 1, Loops: []loopResult{loop(targetPod, 1, 2000, 25, 50, 10, 20)}},
		{Proxy: "kproxy", Round: 2, Loops: []loopResult{loop(targetVIP, 1, 1200, 60, 100, 20, 40), loop(targetPod, 1, 1300, 45, 90, 20, 40)}},
		{Proxy: "kube-proxy iptables", Round: 2, Loops: []loopResult{loop(targetVIP, 1, 400, 100, 300, 20, 40), loop(targetPod, 1, 550, 90, 200, 20, 40)}},
		{Proxy: noProxy, Round: 2, Loops: []loopResult{loop(targetPod, 1, 3000, 25, 50, 10, 20)}},
		{Proxy: "kube-proxy iptables", Round: 3, Error: "start: boom"}, // errors do not count
	}
}

func TestSummarise(t *testing.T) {
	names := []string{"kproxy", "kube-proxy iptables", noProxy}
	rows := summarise(testRuns(), names, []int{1})
	if len(rows) != 14 { // 2 targets × (1 rate + 6 latencies)
		t.Fatalf("%d rows", len(rows))
	}
	r := rows[0]
	if r.Figure != (figure{targetVIP, 1, "rate"}) || r.Label != "VIP: new connections, 1 worker" || r.Unit != "conns/s" {
		t.Fatalf("row 0: %+v", r)
	}
	if r.Median["kproxy"] != 1100 || r.Median["kube-proxy iptables"] != 450 || r.Rounds["kproxy"] != 2 {
		t.Errorf("medians %v rounds %v", r.Median, r.Rounds)
	}
	// per-round ratios 1000/500 = 2 and 1200/400 = 3: median 2.5 (not 1100/450)
	if r.Ratio["kube-proxy iptables"] != 2.5 {
		t.Errorf("ratio %v", r.Ratio)
	}
	if _, ok := r.Ratio[noProxy]; ok {
		t.Error("no ratio against the limit run in Ratio")
	}
	// limit: the pod-IP rate with no proxy, medians 2500; kproxy/limit 0.5 and 0.4 → 0.45
	if r.Limit != 2500 || r.LimitRatio != 0.45 {
		t.Errorf("limit %v ratio %v", r.Limit, r.LimitRatio)
	}
	c := rows[1] // VIP connect p50
	if c.Figure.Metric != "connect.p50" || c.Median["kproxy"] != 55 || c.Ratio["kube-proxy iptables"] != 0.55 || c.Limit != 25 {
		t.Errorf("connect p50 row %+v", c)
	}
	f := rows[5] // VIP connect + first request/response p50: 70 and 80
	if f.Figure.Metric != "first.p50" || f.Median["kproxy"] != 75 || f.Label != "VIP: connect + first request/response p50, 1 worker" {
		t.Errorf("first p50 row %+v", f)
	}
	p := rows[7] // pod IP rate
	if p.Figure != (figure{targetPod, 1, "rate"}) || p.Median["kproxy"] != 1200 || p.Median[noProxy] != 2500 {
		t.Errorf("pod row %+v", p)
	}
}

func TestPrintTable(t *testing.T) {
	names := []string{"kproxy", "kube-proxy iptables", noProxy}
	var b strings.Builder
	printTable(&b, summarise(testRuns(), names, []int{1}), names)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 16 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	wantHdr := "| figure | unit | kproxy | kube-proxy iptables | kproxy / kube-proxy iptables | limit: pod IP, no proxy | kproxy / limit |"
	if lines[0] != wantHdr {
		t.Errorf("header\n got %s\nwant %s", lines[0], wantHdr)
	}
	if want := "| VIP: new connections, 1 worker | conns/s | 1100 | 450 | 2.50 | 2500 | 0.45 |"; lines[2] != want {
		t.Errorf("rate row\n got %s\nwant %s", lines[2], want)
	}
	if want := "| VIP: connect() p50, 1 worker | µs | 55.0 | 100 | 0.55 | 25.0 | 2.20 |"; lines[3] != want {
		t.Errorf("connect row\n got %s\nwant %s", lines[3], want)
	}
	// Without kproxy: no ratio columns, a missing figure is a dash.
	b.Reset()
	only := []string{"kube-proxy iptables"}
	printTable(&b, summarise(testRuns()[1:2], only, []int{1, 8}), only)
	out := b.String()
	if strings.Contains(out, "kproxy /") || !strings.Contains(out, "| VIP: new connections, 8 workers | conns/s | – | – |") {
		t.Errorf("table without kproxy:\n%s", out)
	}
}

func TestParseInts(t *testing.T) {
	if v, err := parseInts("10, 10000", 0); err != nil || len(v) != 2 || v[1] != 10000 {
		t.Errorf("%v %v", v, err)
	}
	if _, err := parseInts("1,0", 1); err == nil {
		t.Error("0 workers accepted")
	}
}
