package main

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRoundOrderAlternates(t *testing.T) {
	b := []string{"veth-limit", "vxlan", "host-gw"}
	if got := roundOrder(b, 0); !slices.Equal(got, b) {
		t.Errorf("round 0: %v", got)
	}
	if got := roundOrder(b, 1); !slices.Equal(got, []string{"host-gw", "vxlan", "veth-limit"}) {
		t.Errorf("round 1: %v", got)
	}
	if b[0] != "veth-limit" {
		t.Errorf("roundOrder changed its input: %v", b)
	}
}

func run(backend string, round int, gbps, p50 float64) *runResult {
	return &runResult{Backend: backend, Round: round, Figures: map[string]float64{"throughput_gbps": gbps, "rtt_p50_us": p50}}
}

// Ratios are taken per round, then the median: not the ratio of the medians.
func TestSummariseRatiosPerRound(t *testing.T) {
	runs := []*runResult{
		run("veth-limit", 1, 20, 10), run("vxlan", 1, 10, 20),
		run("veth-limit", 2, 10, 10), run("vxlan", 2, 8, 30),
		run("veth-limit", 3, 16, 10), run("vxlan", 3, 12, 25),
		{Backend: "host-gw", Round: 2, Figures: map[string]float64{}, Error: "setup: boom"},
	}
	rows := summarise(runs, []string{"veth-limit", "vxlan", "host-gw"}, 3)
	if len(rows) != len(figureDefs) || rows[0].Key != "throughput_gbps" {
		t.Fatalf("rows: %+v", rows)
	}
	th := rows[0]
	if v := th.Values["vxlan"]; v == nil || v.Median != 10 || !slices.Equal(v.Rounds, []float64{10, 8, 12}) {
		t.Errorf("vxlan throughput %+v", v)
	}
	// per round 0.5, 0.8, 0.75 → median 0.75 (the ratio of the medians would be 10/16)
	if r := th.Ratios["vxlan"]; r == nil || r.Median != 0.75 || !slices.Equal(r.RoundNumbers, []int{1, 2, 3}) {
		t.Errorf("vxlan ratio %+v", r)
	}
	if _, ok := th.Ratios["veth-limit"]; ok {
		t.Error("veth-limit has a ratio to itself")
	}
	if _, ok := th.Values["host-gw"]; ok {
		t.Error("a failed run has a value")
	}
	if v := rows[1].Values["vxlan"]; v.Median != 25 {
		t.Errorf("vxlan p50 %+v", v)
	}
	// a figure no run has: no values
	if len(rows[3].Values) != 0 {
		t.Errorf("conn_rate values %+v", rows[3].Values)
	}
}

func TestPrintTable(t *testing.T) {
	runs := []*runResult{
		run("veth-limit", 1, 20, 15.7), run("vxlan", 1, 14.1, 28),
		run("veth-limit", 2, 18, 16.3), run("vxlan", 2, 12.6, 29),
	}
	backends := []string{"veth-limit", "vxlan", "ipip"}
	rows := summarise(runs, backends, 2)
	var b strings.Builder
	if err := printTable(&b, rows, backends, map[string]string{"ipip": "not available on this kernel: Error: Unknown device type."}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| figure | unit | veth-limit | vxlan | ipip | vxlan / limit | ipip / limit |\n",
		"| TCP throughput, 1 connection | Gbit/s | 19.0 (20.0, 18.0) | 13.3 (14.1, 12.6) | n/a | 0.70 (0.70, 0.70) | n/a |\n",
		"| 1-byte request/response RTT, p50 | µs | 16.0 (15.7, 16.3) | 28.5 (28.0, 29.0) | n/a | 1.78 (1.78, 1.78) | n/a |\n",
		"| new connections (connect + 1-byte echo + close) | conns/s | – | – | n/a | – | n/a |\n",
		"\nipip: not available on this kernel: Error: Unknown device type.\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n| "); n != len(figureDefs)+1 {
		t.Errorf("%d table lines after the header, want %d:\n%s", n, len(figureDefs)+1, out)
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{12345.6: "12346", 105.7: "106", 14.07: "14.1", 1.234: "1.23", 0.1234: "0.123"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSNMPValue(t *testing.T) {
	text := "Ip: Forwarding DefaultTTL FragCreates\nIp: 1 64 7\nTcp: RtoAlgorithm RetransSegs InErrs\nTcp: 1 46 0\n"
	if n, err := snmpValue(text, "Tcp", "RetransSegs"); err != nil || n != 46 {
		t.Errorf("RetransSegs = %d, %v", n, err)
	}
	if n, err := snmpValue(text, "Ip", "FragCreates"); err != nil || n != 7 {
		t.Errorf("FragCreates = %d, %v", n, err)
	}
	if _, err := snmpValue(text, "Udp", "InDatagrams"); err == nil {
		t.Error("missing group: no error")
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-backends", "vxlan,veth-limit,vxlan", "-duration", "1s"})
	if err != nil || !slices.Equal(cfg.Backends, []string{"vxlan", "veth-limit"}) || cfg.Duration != time.Second || cfg.What != "datapath" {
		t.Errorf("parseFlags: %+v, %v", cfg, err)
	}
	if cfg, err := parseFlags([]string{"-vm"}); err != nil || cfg.What != "datapath-vm" || len(cfg.Backends) != 4 {
		t.Errorf("-vm: %+v, %v", cfg, err)
	}
	for _, bad := range [][]string{{"-backends", "geneve"}, {"-rounds", "0"}, {"-prefix", "Bad-Prefix"}, {"x"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
}

// The guest's flags parse back to the same campaign.
func TestGuestArgsRoundTrip(t *testing.T) {
	cfg, err := parseFlags([]string{"-vm", "-duration", "3s", "-rounds", "2", "-backends", "ipip,veth-limit", "-latency-n", "50"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := parseFlags(guestArgs(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if !g.Guest || g.Duration != cfg.Duration || g.Rounds != 2 || g.LatencyN != 50 ||
		!slices.Equal(g.Backends, cfg.Backends) || g.Results != "-" || g.ConnDuration != cfg.ConnDuration {
		t.Errorf("guest config %+v from %+v", g, cfg)
	}
}

func TestDecodeLine(t *testing.T) {
	r := run("ipip", 2, 0.4, 900)
	b, _ := json.Marshal(r)
	got, info, ok, err := decodeLine(markRun + base64.StdEncoding.EncodeToString(b) + "\r")
	if err != nil || !ok || info != nil || got == nil || got.Backend != "ipip" || got.Round != 2 || got.Figures["rtt_p50_us"] != 900 {
		t.Errorf("run line: %+v %+v %v %v", got, info, ok, err)
	}
	b, _ = json.Marshal(guestInfo{Unavailable: map[string]string{"x": "y"}})
	if _, info, ok, err := decodeLine(markInfo + base64.StdEncoding.EncodeToString(b)); err != nil || !ok || info == nil || info.Unavailable["x"] != "y" {
		t.Errorf("info line: %+v %v %v", info, ok, err)
	}
	if _, _, ok, err := decodeLine("KPROXY-VM-T init uptime=1.9"); ok || err != nil {
		t.Errorf("console line: %v %v", ok, err)
	}
	if _, _, ok, err := decodeLine(markRun + "!!!"); !ok || err == nil {
		t.Errorf("garbled line: %v %v", ok, err)
	}
}
