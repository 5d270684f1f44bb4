package main

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/kproxy/kproxy/bench/internal/stats"
)

// Targets of a loop.
const (
	targetVIP = "vip" // the target Service's ClusterIP:80
	targetPod = "pod" // the backend pod's IP:port, no service
)

// noProxy is the run with no proxy and no rules in the node: the limit.
const noProxy = "no proxy"

// figure is one row of the table: a metric of the loops with one target and one worker count.
type figure struct {
	Target  string `json:"target"`
	Workers int    `json:"workers"`
	Metric  string `json:"metric"` // rate, connect.p50, connect.p99, rr.p50, rr.p99, first.p50, first.p99
}

func (f figure) label() string {
	t := "VIP"
	if f.Target == targetPod {
		t = "pod IP"
	}
	w := fmt.Sprintf("%d worker", f.Workers)
	if f.Workers != 1 {
		w += "s"
	}
	switch f.Metric {
	case "rate":
		return fmt.Sprintf("%s: new connections, %s", t, w)
	case "connect.p50", "connect.p99":
		return fmt.Sprintf("%s: connect() %s, %s", t, strings.TrimPrefix(f.Metric, "connect."), w)
	case "first.p50", "first.p99":
		return fmt.Sprintf("%s: connect + first request/response %s, %s", t, strings.TrimPrefix(f.Metric, "first."), w)
	default:
		return fmt.Sprintf("%s: first request/response %s, %s", t, strings.TrimPrefix(f.Metric, "rr."), w)
	}
}

func (f figure) unit() string {
	if f.Metric == "rate" {
		return "conns/s"
	}
	return "µs"
}

// figures are the table's rows: per target, the rates, then the latencies per worker count.
func figures(workers []int) []figure {
	var out []figure
	for _, t := range []string{targetVIP, targetPod} {
		for _, w := range workers {
			out = append(out, figure{t, w, "rate"})
		}
		for _, w := range workers {
			for _, m := range []string{"connect.p50", "connect.p99", "rr.p50", "rr.p99", "first.p50", "first.p99"} {
				out = append(out, figure{t, w, m})
			}
		}
	}
	return out
}

// value is figure f of one run, if the run measured it.
func (r *runResult) value(f figure) (float64, bool) {
	for _, l := range r.Loops {
		if l.Target != f.Target || l.Workers != f.Workers || l.Conns == 0 {
			continue
		}
		switch f.Metric {
		case "rate":
			return l.Rate, true
		case "connect.p50":
			return l.Connect.P50, true
		case "connect.p99":
			return l.Connect.P99, true
		case "rr.p50":
			return l.RR.P50, true
		case "rr.p99":
			return l.RR.P99, true
		case "first.p50":
			return l.First.P50, true
		case "first.p99":
			return l.First.P99, true
		}
	}
	return 0, false
}

// summaryRow is one figure over the rounds: each proxy's median, the median of the per-round
// ratios kproxy / other (the two measured in the same round, minutes apart), the limit (the
// same figure against the pod IP with no proxy) and kproxy / limit per round, median.
type summaryRow struct {
	Figure     figure             `json:"figure"`
	Label      string             `json:"label"`
	Unit       string             `json:"unit"`
	Median     map[string]float64 `json:"median"`
	Rounds     map[string]int     `json:"rounds"`
	Ratio      map[string]float64 `json:"ratioKproxyOver,omitempty"`
	Limit      float64            `json:"limit,omitempty"`
	LimitRatio float64            `json:"ratioKproxyOverLimit,omitempty"`
}

// summarise builds the rows of one background size from its runs.
func summarise(runs []*runResult, proxyNames []string, workers []int) []summaryRow {
	var rows []summaryRow
	byRound := map[int]map[string]*runResult{}
	for _, r := range runs {
		if r.Error != "" {
			continue
		}
		if byRound[r.Round] == nil {
			byRound[r.Round] = map[string]*runResult{}
		}
		byRound[r.Round][r.Proxy] = r
	}
	var rounds []int
	for k := range byRound {
		rounds = append(rounds, k)
	}
	sort.Ints(rounds)
	for _, f := range figures(workers) {
		row := summaryRow{Figure: f, Label: f.label(), Unit: f.unit(), Median: map[string]float64{},
			Rounds: map[string]int{}, Ratio: map[string]float64{}}
		limitF := figure{targetPod, f.Workers, f.Metric}
		var limits, limitRatios []float64
		ratios := map[string][]float64{}
		for _, p := range proxyNames {
			var vs []float64
			for _, rn := range rounds {
				if r := byRound[rn][p]; r != nil {
					if v, ok := r.value(f); ok {
						vs = append(vs, v)
					}
				}
			}
			if len(vs) > 0 {
				row.Median[p] = stats.Median(vs)
				row.Rounds[p] = len(vs)
			}
		}
		for _, rn := range rounds {
			k := byRound[rn]["kproxy"]
			kv, kok := 0.0, false
			if k != nil {
				kv, kok = k.value(f)
			}
			if np := byRound[rn][noProxy]; np != nil {
				if lv, ok := np.value(limitF); ok {
					limits = append(limits, lv)
					if kok && lv != 0 {
						limitRatios = append(limitRatios, kv/lv)
					}
				}
			}
			if !kok {
				continue
			}
			for _, p := range proxyNames {
				if p == "kproxy" || p == noProxy {
					continue
				}
				if o := byRound[rn][p]; o != nil {
					if ov, ok := o.value(f); ok && ov != 0 {
						ratios[p] = append(ratios[p], kv/ov)
					}
				}
			}
		}
		for p, rs := range ratios {
			row.Ratio[p] = stats.Round(stats.Median(rs), 3)
		}
		if len(limits) > 0 {
			row.Limit = stats.Median(limits)
		}
		if len(limitRatios) > 0 {
			row.LimitRatio = stats.Round(stats.Median(limitRatios), 3)
		}
		rows = append(rows, row)
	}
	return rows
}

// fmtValue prints a figure: conns/s and µs from 100 up as integers, below with one decimal.
func fmtValue(v float64, ok bool) string {
	if !ok || math.IsNaN(v) {
		return "–"
	}
	if math.Abs(v) >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func fmtRatio(v float64, ok bool) string {
	if !ok || math.IsNaN(v) || v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

// printTable writes the markdown table of one background size: figure, unit, each proxy's
// median, kproxy / each upstream mode, the limit and kproxy / limit.
func printTable(w *strings.Builder, rows []summaryRow, proxyNames []string) {
	var shown, others []string
	hasK := false
	for _, p := range proxyNames {
		if p == noProxy {
			continue
		}
		shown = append(shown, p)
		if p == "kproxy" {
			hasK = true
		} else {
			others = append(others, p)
		}
	}
	hdr := []string{"figure", "unit"}
	hdr = append(hdr, shown...)
	if hasK {
		for _, o := range others {
			hdr = append(hdr, "kproxy / "+o)
		}
	}
	hdr = append(hdr, "limit: pod IP, no proxy")
	if hasK {
		hdr = append(hdr, "kproxy / limit")
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(hdr, " | "))
	seps := make([]string, len(hdr))
	for i := range seps {
		seps[i] = "---"
		if i >= 2 {
			seps[i] = "---:"
		}
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(seps, " | "))
	for _, r := range rows {
		cells := []string{r.Label, r.Unit}
		for _, p := range shown {
			v, ok := r.Median[p]
			cells = append(cells, fmtValue(v, ok))
		}
		if hasK {
			for _, o := range others {
				v, ok := r.Ratio[o]
				cells = append(cells, fmtRatio(v, ok))
			}
		}
		cells = append(cells, fmtValue(r.Limit, r.Limit != 0))
		if hasK {
			cells = append(cells, fmtRatio(r.LimitRatio, r.LimitRatio != 0))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}

// printRuns writes every loop of every run: the rounds behind the medians.
func printRuns(w *strings.Builder, runs []*runResult) {
	fmt.Fprintln(w, "| round | # | proxy | target | workers | conns/s | connect p50 / p99 µs | first req/resp p50 / p99 µs | connect + req/resp p50 / p99 µs | errors | conntrack after | proxy CPU s | target rule in KUBE-SERVICES | load average |")
	fmt.Fprintln(w, "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
	for _, r := range runs {
		load, _, _ := strings.Cut(r.LoadAvg, " ")
		if r.Error != "" {
			fmt.Fprintf(w, "| %d | %d | %s | error: %s | | | | | | | | | | %s |\n", r.Round, r.Position, r.Proxy, strings.ReplaceAll(r.Error, "|", "/"), load)
			continue
		}
		for _, l := range r.Loops {
			fmt.Fprintf(w, "| %d | %d | %s | %s | %d | %.0f | %s / %s | %s / %s | %s / %s | %d | %d | %.2f | %s | %s |\n",
				r.Round, r.Position, r.Proxy, l.Target, l.Workers, l.Rate,
				fmtValue(l.Connect.P50, true), fmtValue(l.Connect.P99, true),
				fmtValue(l.RR.P50, true), fmtValue(l.RR.P99, true),
				fmtValue(l.First.P50, true), fmtValue(l.First.P99, true), l.Errors, l.ConntrackAfter, l.ProxyCPUS, l.RulePosition, load)
		}
	}
}
