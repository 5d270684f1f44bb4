package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// rowDef is one figure of the table.
type rowDef struct {
	Key, Label, Unit string
	Digits           int
}

var rows = []rowDef{
	{"bulk.api_s", "bulk create: API writes done (loader)", "s", 2},
	{"bulk.programmed_s", "bulk create: first write → all N in kernel", "s", 2},
	{"bulk.after_api_s", "bulk create: last write → all N in kernel", "s", 2},
	{"bulk.cpu_s", "bulk create: proxy CPU (self + children)", "s", 2},
	{"bulk.rss_mb", "bulk create: proxy peak RSS", "MiB", 0},
	{"warm.healthz_s", "restart, rules kept: start → /healthz 200", "s", 2},
	{"warm.lines_changed", "restart, rules kept: rule lines changed", "lines", 0},
	{"warm.objects_changed", "restart, rules kept: nft objects changed", "objs", 0},
	{"warm.cpu_s", "restart, rules kept: proxy CPU", "s", 2},
	{"warm.rss_mb", "restart, rules kept: proxy peak RSS", "MiB", 0},
	{"cold.programmed_s", "restart, rules flushed: start → all N in kernel", "s", 2},
	{"cold.cpu_s", "restart, rules flushed: proxy CPU", "s", 2},
	{"cold.rss_mb", "restart, rules flushed: proxy peak RSS", "MiB", 0},
	{"change.p50_ms", "one change: API write → new DNAT, p50", "ms", 0},
	{"change.p99_ms", "one change: API write → new DNAT, p99", "ms", 0},
	{"change.cpu_s", "one change: proxy CPU over the phase", "s", 2},
	{"change.rss_mb", "one change: proxy peak RSS", "MiB", 0},
	{"delete.api_s", "bulk delete: API deletes done", "s", 2},
	{"delete.removed_s", "bulk delete: first delete → all rules gone", "s", 2},
	{"delete.after_api_s", "bulk delete: last delete → all rules gone", "s", 2},
	{"delete.cpu_s", "bulk delete: proxy CPU", "s", 2},
	{"poll.mean_ms", "kernel read (one poll), mean", "ms", 0},
	{"sandbox.start_s", "fresh sandbox start (etcd, apiserver, node, proxy)", "s", 2},
	{"sandbox.cleanup_s", "sandbox cleanup", "s", 2},
}

// noRatio: figures of the instrument, not of the proxy.
var noRatio = map[string]bool{"bulk.api_s": true, "delete.api_s": true, "poll.mean_ms": true,
	"sandbox.start_s": true, "sandbox.cleanup_s": true}

// summaryRow is one figure: per proxy the median over rounds, and per upstream proxy the
// median over rounds of the per-round ratio kproxy / upstream.
type summaryRow struct {
	Key     string               `json:"key"`
	Label   string               `json:"label"`
	Unit    string               `json:"unit"`
	Median  map[string]float64   `json:"median"`
	Rounds  map[string]int       `json:"rounds"`
	Capped  map[string]bool      `json:"capped,omitempty"`
	Ratio   map[string]float64   `json:"ratioKProxyOver,omitempty"`
	AllRuns map[string][]float64 `json:"allRounds"`
}

func (r *results) summarise(sel []proxyCfg) {
	for _, d := range rows {
		s := summaryRow{Key: d.Key, Label: d.Label, Unit: d.Unit, Median: map[string]float64{},
			Rounds: map[string]int{}, Capped: map[string]bool{}, Ratio: map[string]float64{}, AllRuns: map[string][]float64{}}
		for _, p := range sel {
			var xs []float64
			for _, run := range r.Runs {
				if run.Proxy != p.Name {
					continue
				}
				if v, ok := run.Figures[d.Key]; ok {
					xs = append(xs, v)
				}
				for _, c := range run.Capped {
					if c == d.Key {
						s.Capped[p.Name] = true
					}
				}
			}
			if len(xs) > 0 {
				s.Median[p.Name] = median(xs)
				s.Rounds[p.Name] = len(xs)
				s.AllRuns[p.Name] = xs
			}
		}
		if !noRatio[d.Key] {
			for _, p := range sel[1:] {
				if sel[0].Name != "kproxy" {
					break
				}
				var ratios []float64
				for round := 1; ; round++ {
					k, okk := figure(r.Runs, "kproxy", round, d.Key)
					u, oku := figure(r.Runs, p.Name, round, d.Key)
					if !okk && !oku && !roundExists(r.Runs, round) {
						break
					}
					if okk && oku && u > 0 {
						ratios = append(ratios, k/u)
					}
				}
				if len(ratios) > 0 {
					s.Ratio[p.Name] = math.Round(median(ratios)*100) / 100
				}
			}
		}
		r.Summary = append(r.Summary, s)
	}
}

func roundExists(runs []*runResult, round int) bool {
	for _, r := range runs {
		if r.Round == round {
			return true
		}
	}
	return false
}

func figure(runs []*runResult, proxy string, round int, key string) (float64, bool) {
	for _, r := range runs {
		if r.Proxy == proxy && r.Round == round {
			v, ok := r.Figures[key]
			return v, ok
		}
	}
	return 0, false
}

func (r *results) printTable(out io.Writer, cfg config) error {
	var b strings.Builder
	w := &b
	names := make([]string, 0, len(r.Proxies))
	for _, p := range r.Proxies {
		names = append(names, p.Name)
	}
	fmt.Fprintf(w, "\nkpbench: %d services × %d endpoints, %d round(s), 1 node; median over rounds; ratio = median of per-round kproxy/upstream\n",
		cfg.N, cfg.E, cfg.Rounds)
	fmt.Fprintf(w, "machine: %v CPUs, kernel %v, %v GiB; %s; %s\n\n", r.Machine["nproc"], r.Machine["kernel"], r.Machine["memoryGiB"], r.Versions["kube-proxy"], r.Versions["iptables"])
	hdr := []string{"figure", "unit"}
	hdr = append(hdr, names...)
	var ups []string
	if len(names) > 1 && names[0] == "kproxy" {
		for _, n := range names[1:] {
			ups = append(ups, n)
			hdr = append(hdr, "kproxy/"+strings.TrimPrefix(n, "kube-proxy "))
		}
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(hdr, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat(" --- |", len(hdr)))
	for i, d := range rows {
		s := r.Summary[i]
		cells := []string{d.Label, d.Unit}
		for _, n := range names {
			switch v, ok := s.Median[n]; {
			case s.Capped[n]:
				cells = append(cells, "> cap")
			case ok:
				cells = append(cells, fmt.Sprintf("%.*f", d.Digits, v))
			default:
				cells = append(cells, "–")
			}
		}
		for _, u := range ups {
			if v, ok := s.Ratio[u]; ok {
				cells = append(cells, fmt.Sprintf("%.2f", v))
			} else {
				cells = append(cells, "–")
			}
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	for _, run := range r.Runs {
		if run.Error != "" {
			fmt.Fprintf(w, "\nround %d %s: %s\n", run.Round, run.Proxy, run.Error)
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}
