package main

import (
	"math"
	"strings"
	"testing"
)

func TestPercentileNearestRank(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {0, 1}, {10, 1}, {11, 2}} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("one sample: %v", got)
	}
}

func TestSummarize(t *testing.T) {
	var xs []float64
	for i := 200; i >= 1; i-- { // unsorted on purpose
		xs = append(xs, float64(i))
	}
	d := summarize(xs)
	want := dist{N: 200, Min: 1, P50: 100, P90: 180, P99: 198, Max: 200, Mean: 100.5}
	if d != want {
		t.Fatalf("summarize = %+v, want %+v", d, want)
	}
	if xs[0] != 200 {
		t.Fatal("summarize sorted its input")
	}
	if (summarize(nil) != dist{}) {
		t.Fatal("empty input")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("odd: %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("even: %v", m)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("empty: want NaN")
	}
}

func loop(target string, w int, rate, c50, c99, r50, r99 float64) loopResult {
	return loopResult{Target: target, Workers: w, Conns: 100, Rate: rate,
		Connect: dist{P50: c50, P99: c99}, RR: dist{P50: r50, P99: r99}, First: dist{P50: c50 + r50, P99: c99 + r99}}
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

func TestParsers(t *testing.T) {
	ipt := `*nat
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m comment --comment "dp/target cluster IP" -m tcp --dport 80 -j KUBE-SVC-ABC
-A KUBE-SEP-XYZ -p tcp -m comment --comment dp/target -m tcp -j DNAT --to-destination 100.64.1.12:7790
-A OTHER -d 100.100.0.11/32 -j KUBE-SVC-DEF
`
	st := parseIPTablesSave(ipt)
	if !st.vips["100.100.0.10"] || st.vips["100.100.0.11"] || !st.eps["100.64.1.12:7790"] {
		t.Errorf("iptables: %+v", st)
	}
	if n := missing(st, []string{"100.100.0.10", "100.100.0.12"}, []string{"100.64.1.12:7790", "100.64.10.1:8080"}); n != 2 {
		t.Errorf("missing %d", n)
	}
	nft := `table ip kube-proxy {
	map service-ips {
		elements = { 100.100.0.10 . tcp . 80 : goto service-ABC-dp/target/tcp/ }
	}
	chain endpoint-X {
		meta l4proto tcp dnat to 100.64.1.12:7790
	}
	map endpoints { elements = { 0 : 100.64.10.1 . 8080 } }
}`
	st = parseNFT(nft)
	if !st.vips["100.100.0.10"] || !st.eps["100.64.10.1:8080"] || !st.eps["100.64.1.12:7790"] {
		t.Errorf("nft: %+v", st)
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

func TestPositionIn(t *testing.T) {
	out := `-N KUBE-SERVICES
-A KUBE-SERVICES -d 100.100.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-A
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-B
-A KUBE-SERVICES -d 100.100.0.100/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-C
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
`
	for vip, want := range map[string]string{"100.100.0.10": "2/4", "100.100.0.100": "3/4", "100.100.0.1": "1/4", "100.100.0.2": "-/4"} {
		if got := positionIn(out, vip); got != want {
			t.Errorf("%s: %s, want %s", vip, got, want)
		}
	}
}
