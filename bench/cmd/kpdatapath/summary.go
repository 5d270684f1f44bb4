package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/kproxy/kproxy/bench/internal/stats"
)

// The pure part: percentiles, medians over rounds, ratios to the limit, the table.

// limitBackend is the reference every ratio divides by: two pod namespaces joined by one
// veth pair, no node, no bridge, no route.
const limitBackend = "veth-limit"

// figureDef is one row of the table.
type figureDef struct {
	Key    string
	Figure string
	Unit   string
}

// figureDefs are the table's rows, in order; runResult.Figures is keyed by Key.
var figureDefs = []figureDef{
	{"throughput_gbps", "TCP throughput, 1 connection", "Gbit/s"},
	{"rtt_p50_us", "1-byte request/response RTT, p50", "µs"},
	{"rtt_p99_us", "1-byte request/response RTT, p99", "µs"},
	{"conn_rate", "new connections (connect + 1-byte echo + close)", "conns/s"},
	{"connect_p50_us", "connect time, p50", "µs"},
	{"connect_p99_us", "connect time, p99", "µs"},
}

// roundOrder is the order of the backends in round r (0-based): as given in even rounds,
// reversed in odd ones, so that no backend always runs first or last.
func roundOrder(backends []string, r int) []string {
	out := slices.Clone(backends)
	if r%2 == 1 {
		slices.Reverse(out)
	}
	return out
}

// series is one backend's figure over the rounds: the median and each round's value, in
// round order (rounds without a value, e.g. a failed run, are left out).
type series struct {
	Median float64   `json:"median"`
	Rounds []float64 `json:"rounds"`
	// RoundNumbers are the rounds (1-based) the values come from.
	RoundNumbers []int `json:"roundNumbers"`
}

// summaryRow is one figure across backends.
type summaryRow struct {
	Key    string             `json:"key"`
	Figure string             `json:"figure"`
	Unit   string             `json:"unit"`
	Values map[string]*series `json:"values"`
	// Ratios: backend / veth-limit, computed per round (the two ran back to back in that
	// round), then the median over rounds.
	Ratios map[string]*series `json:"ratiosToLimit,omitempty"`
}

// figureOf returns the figure key of backend's run in round (1-based), if that run has it.
func figureOf(runs []*runResult, backend string, round int, key string) (float64, bool) {
	for _, r := range runs {
		if r.Backend == backend && r.Round == round {
			v, ok := r.Figures[key]
			return v, ok
		}
	}
	return 0, false
}

// summarise computes each figure's median per backend and its ratio to veth-limit.
func summarise(runs []*runResult, backends []string, rounds int) []summaryRow {
	var rows []summaryRow
	for _, fd := range figureDefs {
		row := summaryRow{Key: fd.Key, Figure: fd.Figure, Unit: fd.Unit,
			Values: map[string]*series{}, Ratios: map[string]*series{}}
		for _, b := range backends {
			var v, rt series
			for r := 1; r <= rounds; r++ {
				x, ok := figureOf(runs, b, r, fd.Key)
				if !ok {
					continue
				}
				v.Rounds = append(v.Rounds, x)
				v.RoundNumbers = append(v.RoundNumbers, r)
				if b == limitBackend {
					continue
				}
				if l, ok := figureOf(runs, limitBackend, r, fd.Key); ok && l != 0 {
					rt.Rounds = append(rt.Rounds, x/l)
					rt.RoundNumbers = append(rt.RoundNumbers, r)
				}
			}
			if len(v.Rounds) > 0 {
				v.Median = stats.Median(v.Rounds)
				row.Values[b] = &v
			}
			if len(rt.Rounds) > 0 {
				rt.Median = stats.Median(rt.Rounds)
				row.Ratios[b] = &rt
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// num formats a figure with about three significant digits.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// cell is "median (round 1, round 2, ...)"; a single round is just its value.
func cell(s *series, format func(float64) string) string {
	if s == nil {
		return "–"
	}
	if len(s.Rounds) == 1 {
		return format(s.Median)
	}
	parts := make([]string, len(s.Rounds))
	for i, x := range s.Rounds {
		parts[i] = format(x)
	}
	return format(s.Median) + " (" + strings.Join(parts, ", ") + ")"
}

func ratio(v float64) string { return fmt.Sprintf("%.2f", v) }

// printTable writes the Markdown table: one row per figure, one column per backend (median,
// then each round's value), then one ratio column per backend other than veth-limit. A
// backend in unavailable gets "n/a" cells and its reason under the table.
func printTable(w io.Writer, rows []summaryRow, backends []string, unavailable map[string]string) error {
	var b strings.Builder
	head := []string{"figure", "unit"}
	head = append(head, backends...)
	var others []string
	for _, be := range backends {
		if be != limitBackend {
			others = append(others, be)
		}
	}
	hasLimit := slices.Contains(backends, limitBackend)
	if hasLimit {
		for _, be := range others {
			head = append(head, be+" / limit")
		}
	}
	b.WriteString("| " + strings.Join(head, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat(" --- |", len(head)) + "\n")
	for _, row := range rows {
		cells := []string{row.Figure, row.Unit}
		for _, be := range backends {
			if _, na := unavailable[be]; na {
				cells = append(cells, "n/a")
				continue
			}
			cells = append(cells, cell(row.Values[be], num))
		}
		if hasLimit {
			for _, be := range others {
				if _, na := unavailable[be]; na {
					cells = append(cells, "n/a")
					continue
				}
				cells = append(cells, cell(row.Ratios[be], ratio))
			}
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	for _, be := range backends {
		if why, ok := unavailable[be]; ok {
			fmt.Fprintf(&b, "\n%s: %s\n", be, why)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// snmpValue reads one counter of /proc/net/snmp's text: the value under key in the pair
// of lines starting with "<group>: ".
func snmpValue(text, group, key string) (int64, error) {
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], group+": ") || !strings.HasPrefix(lines[i+1], group+": ") {
			continue
		}
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for k := range keys {
			if keys[k] == key && k < len(vals) {
				var n int64
				_, err := fmt.Sscan(vals[k], &n)
				return n, err
			}
		}
	}
	return 0, fmt.Errorf("no %s %s in snmp", group, key)
}

// podMTULine names each backend's pod MTU, as the runs recorded it.
func podMTULine(runs []*runResult, backends []string) string {
	var parts []string
	for _, b := range backends {
		for _, r := range runs {
			if r.Backend == b && r.PodMTU > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", b, r.PodMTU))
				break
			}
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "pod MTU: " + strings.Join(parts, ", ") + " (underlay 1500)\n\n"
}
