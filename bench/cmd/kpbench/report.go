package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/kproxy/kproxy/bench/internal/stats"
)

// rowDef is one figure of the table. Floor, when set, is the floor.* figure the row is
// compared with (kproxy / floor).
type rowDef struct {
	Key, Label, Unit string
	Digits           int
	Floor            string
}

var rows = []rowDef{
	{Key: "bulk.api_s", Label: "bulk create: API writes done (loader)", Unit: "s", Digits: 2},
	{Key: "bulk.programmed_s", Label: "bulk create: first write → all N in kernel", Unit: "s", Digits: 2},
	{Key: "bulk.after_api_s", Label: "bulk create: last write → all N in kernel", Unit: "s", Digits: 2, Floor: "floor.batched_s"},
	{Key: "bulk.cpu_s", Label: "bulk create: proxy CPU (self + children)", Unit: "s", Digits: 2},
	{Key: "bulk.rss_mb", Label: "bulk create: proxy peak RSS", Unit: "MiB"},
	{Key: "read.idle_ms", Label: "kernel read of the whole table, idle (median of 3)", Unit: "ms", Floor: "floor.save_nat_ms"},
	{Key: "warm.healthz_s", Label: "restart, rules kept: start → /healthz 200", Unit: "s", Digits: 2},
	{Key: "warm.synced_s", Label: "restart, rules kept: start → first sync done (proxy's metric)", Unit: "s", Digits: 2},
	{Key: "warm.lines_changed", Label: "restart, rules kept: rule lines changed", Unit: "lines"},
	{Key: "warm.objects_changed", Label: "restart, rules kept: nft objects changed", Unit: "objs"},
	{Key: "warm.cpu_s", Label: "restart, rules kept: proxy CPU", Unit: "s", Digits: 2},
	{Key: "warm.rss_mb", Label: "restart, rules kept: proxy peak RSS", Unit: "MiB"},
	{Key: "cold.programmed_s", Label: "restart, rules flushed: start → all N in kernel", Unit: "s", Digits: 2, Floor: "floor.batched_s"},
	{Key: "cold.cpu_s", Label: "restart, rules flushed: proxy CPU", Unit: "s", Digits: 2},
	{Key: "cold.rss_mb", Label: "restart, rules flushed: proxy peak RSS", Unit: "MiB"},
	{Key: "change.p50_ms", Label: "one change: API write → new DNAT, p50", Unit: "ms", Floor: "floor.one_service_ms"},
	{Key: "change.p99_ms", Label: "one change: API write → new DNAT, p99", Unit: "ms", Floor: "floor.one_service_ms"},
	{Key: "change.cpu_s", Label: "one change: proxy CPU over the phase", Unit: "s", Digits: 2},
	{Key: "change.rss_mb", Label: "one change: proxy peak RSS", Unit: "MiB"},
	{Key: "churn.rate_per_s", Label: "churn: endpoint changes written per s", Unit: "/s", Digits: 1},
	{Key: "churn.write_lag_p99_ms", Label: "churn: write start behind schedule, p99", Unit: "ms"},
	{Key: "churn.p50_ms", Label: "churn: API write → new DNAT, p50 (sampled)", Unit: "ms", Floor: "floor.one_service_ms"},
	{Key: "churn.p99_ms", Label: "churn: API write → new DNAT, p99 (sampled)", Unit: "ms", Floor: "floor.one_service_ms"},
	{Key: "churn.max_ms", Label: "churn: API write → new DNAT, max (sampled)", Unit: "ms"},
	{Key: "churn.superseded", Label: "churn: tracked changes superseded before seen", Unit: "count"},
	{Key: "churn.p99_first_third_ms", Label: "churn: p99 over the first third of the phase", Unit: "ms"},
	{Key: "churn.p99_last_third_ms", Label: "churn: p99 over the last third of the phase", Unit: "ms"},
	{Key: "churn.kept_up", Label: "churn: kept up (1 = yes: latency did not grow, all seen)", Unit: "bool"},
	{Key: "churn.drain_s", Label: "churn: last write → whole state in kernel", Unit: "s", Digits: 2},
	{Key: "churn.drain_read_ms", Label: "churn: duration of the whole-table read that saw it", Unit: "ms"},
	{Key: "churn.cpu_s", Label: "churn: proxy CPU over the phase", Unit: "s", Digits: 2},
	{Key: "churn.rss_mb", Label: "churn: proxy peak RSS", Unit: "MiB"},
	{Key: "delete.api_s", Label: "bulk delete: API deletes done", Unit: "s", Digits: 2},
	{Key: "delete.removed_s", Label: "bulk delete: first delete → all rules gone", Unit: "s", Digits: 2},
	{Key: "delete.after_api_s", Label: "bulk delete: last delete → all rules gone", Unit: "s", Digits: 2},
	{Key: "delete.cpu_s", Label: "bulk delete: proxy CPU", Unit: "s", Digits: 2},
	{Key: "poll.full_mean_ms", Label: "poller: whole-table read, mean", Unit: "ms"},
	{Key: "poll.vips_mean_ms", Label: "poller: service-rules read, mean", Unit: "ms"},
	{Key: "poll.endpoint_mean_ms", Label: "poller: one-service read, mean", Unit: "ms"},
	{Key: "sandbox.start_s", Label: "fresh sandbox start (etcd, apiserver, node, proxy)", Unit: "s", Digits: 2},
	{Key: "sandbox.cleanup_s", Label: "sandbox cleanup", Unit: "s", Digits: 2},
}

// floorRows are the floors, shown under the table.
var floorRows = []rowDef{
	{Key: "floor.one_piece_s", Label: "every chain in one iptables-restore, empty tables", Unit: "s", Digits: 2},
	{Key: "floor.batched_s", Label: "kproxy's first-sync restores (100 services each, then shared chains), empty tables", Unit: "s", Digits: 2},
	{Key: "floor.one_service_ms", Label: "one service's chains rewritten, whole load in place (median of 5)", Unit: "ms", Digits: 1},
	{Key: "floor.save_nat_ms", Label: "iptables-save -t nat of that table (median of 3)", Unit: "ms"},
}

// ipvsRows are the IPVS mode's figures (ipvs_guest.go), read in the VM.
var ipvsRows = []rowDef{
	{Key: "start.healthz_s", Label: "start, no services: → /healthz 200", Unit: "s", Digits: 2},
	{Key: "bulk.api_s", Label: "bulk create: API writes done (loader, on the host)", Unit: "s", Digits: 2},
	{Key: "bulk.programmed_s", Label: "bulk create: load request → all N in IPVS", Unit: "s", Digits: 2},
	{Key: "bulk.programmed_at_cap", Label: "bulk create: services in IPVS when the phase hit the cap", Unit: "services"},
	{Key: "bulk.after_api_s", Label: "bulk create: loader's reply → all N in IPVS", Unit: "s", Digits: 2, Floor: "floor.ipvs_s"},
	{Key: "bulk.full_after_api_s", Label: "bulk create: loader's reply → all N also on kube-ipvs0 and in KUBE-CLUSTER-IP", Unit: "s", Digits: 2, Floor: "floor.all_s"},
	{Key: "bulk.cpu_s", Label: "bulk create: proxy CPU (self + children)", Unit: "s", Digits: 2},
	{Key: "bulk.rss_mb", Label: "bulk create: proxy peak RSS", Unit: "MiB"},
	{Key: "read.idle_ms", Label: "read of /proc/net/ip_vs, idle (median of 3)", Unit: "ms"},
	{Key: "warm.quiet_s", Label: "restart, state kept: bulk create done → state stable (2 s apart) before the stop", Unit: "s", Digits: 2},
	{Key: "warm.healthz_s", Label: "restart, state kept: start → /healthz 200", Unit: "s", Digits: 2},
	{Key: "warm.synced_s", Label: "restart, state kept: start → first sync done (proxy's metric)", Unit: "s", Digits: 2},
	{Key: "warm.ipvs_changed", Label: "restart, state kept: ipvsadm -Sn lines changed", Unit: "lines"},
	{Key: "warm.ipset_changed", Label: "restart, state kept: ipset save lines changed", Unit: "lines"},
	{Key: "warm.iptables_changed", Label: "restart, state kept: iptables-save lines changed (both families)", Unit: "lines"},
	{Key: "warm.addrs_changed", Label: "restart, state kept: kube-ipvs0 addresses changed", Unit: "addrs"},
	{Key: "warm.cpu_s", Label: "restart, state kept: proxy CPU", Unit: "s", Digits: 2},
	{Key: "warm.rss_mb", Label: "restart, state kept: proxy peak RSS", Unit: "MiB"},
	{Key: "cold.programmed_s", Label: "restart, kernel flushed: start → all N in IPVS", Unit: "s", Digits: 2, Floor: "floor.ipvs_s"},
	{Key: "cold.full_s", Label: "restart, kernel flushed: start → all N also on kube-ipvs0 and in KUBE-CLUSTER-IP", Unit: "s", Digits: 2, Floor: "floor.all_s"},
	{Key: "cold.cpu_s", Label: "restart, kernel flushed: proxy CPU", Unit: "s", Digits: 2},
	{Key: "cold.rss_mb", Label: "restart, kernel flushed: proxy peak RSS", Unit: "MiB"},
	{Key: "change.p50_ms", Label: "one change: API write request → new real server, p50", Unit: "ms"},
	{Key: "change.p99_ms", Label: "one change: API write request → new real server, p99", Unit: "ms"},
	{Key: "change.cpu_s", Label: "one change: proxy CPU over the phase", Unit: "s", Digits: 2},
	{Key: "change.rss_mb", Label: "one change: proxy peak RSS", Unit: "MiB"},
	{Key: "churn.rate_per_s", Label: "churn: endpoint changes written per s (host)", Unit: "/s", Digits: 1},
	{Key: "churn.write_lag_p99_ms", Label: "churn: write start behind schedule, p99 (host)", Unit: "ms"},
	{Key: "churn.p50_ms", Label: "churn: write → new real server, p50 (sampled)", Unit: "ms"},
	{Key: "churn.p99_ms", Label: "churn: write → new real server, p99 (sampled)", Unit: "ms"},
	{Key: "churn.max_ms", Label: "churn: write → new real server, max (sampled)", Unit: "ms"},
	{Key: "churn.superseded", Label: "churn: tracked changes superseded before seen", Unit: "count"},
	{Key: "churn.p99_first_third_ms", Label: "churn: p99 over the first third of the phase", Unit: "ms"},
	{Key: "churn.p99_last_third_ms", Label: "churn: p99 over the last third of the phase", Unit: "ms"},
	{Key: "churn.kept_up", Label: "churn: kept up (1 = yes: latency did not grow, all seen)", Unit: "bool"},
	{Key: "churn.drain_s", Label: "churn: last write → every service's real servers in IPVS", Unit: "s", Digits: 2},
	{Key: "churn.cpu_s", Label: "churn: proxy CPU over the phase", Unit: "s", Digits: 2},
	{Key: "churn.rss_mb", Label: "churn: proxy peak RSS", Unit: "MiB"},
	{Key: "delete.api_s", Label: "bulk delete: API deletes done (on the host)", Unit: "s", Digits: 2},
	{Key: "delete.removed_s", Label: "bulk delete: delete request → no virtual server left", Unit: "s", Digits: 2},
	{Key: "delete.after_api_s", Label: "bulk delete: deleter's reply → no virtual server left", Unit: "s", Digits: 2},
	{Key: "delete.cpu_s", Label: "bulk delete: proxy CPU", Unit: "s", Digits: 2},
	{Key: "poll.full_mean_ms", Label: "poller: /proc/net/ip_vs read, mean", Unit: "ms"},
	{Key: "poll.extras_mean_ms", Label: "poller: /proc/net/ip_vs + kube-ipvs0 + KUBE-CLUSTER-IP read, mean", Unit: "ms"},
	{Key: "poll.endpoint_mean_ms", Label: "poller: one virtual server's real servers (netlink), mean", Unit: "ms", Digits: 2},
}

var ipvsFloorRows = []rowDef{
	{Key: "floor.ipvs_s", Label: "N virtual servers + N×E real servers (moby/ipvs, one request each)", Unit: "s", Digits: 2},
	{Key: "floor.addrs_s", Label: "N /32 addresses on a dummy device (netlink)", Unit: "s", Digits: 2},
	{Key: "floor.ipset_s", Label: "N entries in a hash:ip,port set (netlink)", Unit: "s", Digits: 2},
	{Key: "floor.all_s", Label: "the three together", Unit: "s", Digits: 2},
}

// noRatio: figures of the instrument, not of the proxy.
var noRatio = map[string]bool{"bulk.api_s": true, "bulk.programmed_at_cap": true, "delete.api_s": true, "poll.full_mean_ms": true,
	"poll.vips_mean_ms": true, "poll.endpoint_mean_ms": true, "poll.extras_mean_ms": true, "sandbox.start_s": true, "sandbox.cleanup_s": true,
	"churn.rate_per_s": true, "churn.write_lag_p99_ms": true, "churn.kept_up": true, "churn.superseded": true,
	"churn.drain_read_ms": true}

// summaryRow is one figure: per proxy the median over rounds, and per upstream proxy the
// median over rounds of the per-round ratio kproxy / upstream, and kproxy / floor.
type summaryRow struct {
	Key        string               `json:"key"`
	Label      string               `json:"label"`
	Unit       string               `json:"unit"`
	Median     map[string]float64   `json:"median"`
	Rounds     map[string]int       `json:"rounds"`
	Capped     map[string]bool      `json:"capped,omitempty"`
	Ratio      map[string]float64   `json:"ratioKProxyOver,omitempty"`
	FloorKey   string               `json:"floor,omitempty"`
	FloorRatio float64              `json:"ratioKProxyOverFloor,omitempty"`
	AllRuns    map[string][]float64 `json:"allRounds"`
}

// rowDefs are the rows of the section's mode.
func (sec *section) rowDefs() []rowDef {
	if sec.Backend == backendIPVS {
		return ipvsRows
	}
	return rows
}

func (sec *section) floorDefs() []rowDef {
	if sec.Backend == backendIPVS {
		return ipvsFloorRows
	}
	return floorRows
}

func (sec *section) summarise() {
	sec.Summary = nil
	for _, d := range sec.rowDefs() {
		s := summaryRow{Key: d.Key, Label: d.Label, Unit: d.Unit, Median: map[string]float64{},
			Rounds: map[string]int{}, Capped: map[string]bool{}, Ratio: map[string]float64{}, AllRuns: map[string][]float64{}}
		for _, p := range sec.Proxies {
			var xs []float64
			for _, run := range sec.Runs {
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
				s.Median[p.Name] = stats.Median(xs)
				s.Rounds[p.Name] = len(xs)
				s.AllRuns[p.Name] = xs
			}
		}
		if !noRatio[d.Key] && len(sec.Proxies) > 0 && sec.Proxies[0].Name == "kproxy" {
			for _, p := range sec.Proxies[1:] {
				var ratios []float64
				for round := 1; roundExists(sec.Runs, round); round++ {
					k, okk := figure(sec.Runs, "kproxy", round, d.Key)
					u, oku := figure(sec.Runs, p.Name, round, d.Key)
					if okk && oku && u > 0 {
						ratios = append(ratios, k/u)
					}
				}
				if len(ratios) > 0 {
					s.Ratio[p.Name] = math.Round(stats.Median(ratios)*100) / 100
				}
			}
		}
		if f, ok := sec.Floors[d.Floor]; ok && f > 0 {
			if k, ok := s.Median["kproxy"]; ok {
				s.FloorKey = d.Floor
				s.FloorRatio = math.Round(k/f*100) / 100
			}
		}
		sec.Summary = append(sec.Summary, s)
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

// printTable writes the section's table (Markdown).
func (sec *section) printTable(out io.Writer, res *results) error {
	var b strings.Builder
	w := &b
	names := make([]string, 0, len(sec.Proxies))
	for _, p := range sec.Proxies {
		names = append(names, p.Name)
	}
	rounds := 0
	for _, r := range sec.Runs {
		rounds = max(rounds, r.Round)
	}
	if sec.Backend == backendIPVS {
		fmt.Fprintf(w, "\n### IPVS mode, N = %d services × %v endpoints, in the VM, %d round(s)\n\n", sec.N,
			res.Config["endpointsPerService"], rounds)
		fmt.Fprintf(w, "VM: kernel %v, qemu TCG, 1 vCPU, %v; %s; %v; host: %v CPUs (shared), load average %v at start. Median over rounds; ratio = median of per-round kproxy/upstream; floor: below.\n\n",
			res.Machine["vmKernel"], res.Config["vmMem"], sec.IPTables, res.Versions["kube-proxy"], res.Machine["nproc"], res.Machine["loadavgAtStart"])
	} else {
		fmt.Fprintf(w, "\n### N = %d services × %v endpoints, iptables backend %s, %d round(s)\n\n", sec.N,
			res.Config["endpointsPerService"], sec.Backend, rounds)
		fmt.Fprintf(w, "%s; %v; machine: %v CPUs (shared), kernel %v, load average %v at start. Median over rounds; ratio = median of per-round kproxy/upstream; floor: below.\n\n",
			sec.IPTables, res.Versions["kube-proxy"], res.Machine["nproc"], res.Machine["kernel"], res.Machine["loadavgAtStart"])
	}
	hdr := []string{"figure", "unit"}
	hdr = append(hdr, names...)
	var ups []string
	if len(names) > 1 && names[0] == "kproxy" {
		for _, n := range names[1:] {
			ups = append(ups, n)
			hdr = append(hdr, "kproxy/"+strings.TrimPrefix(n, "kube-proxy "))
		}
	}
	hdr = append(hdr, "kproxy/floor")
	fmt.Fprintf(w, "| %s |\n", strings.Join(hdr, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat(" --- |", len(hdr)))
	for i, d := range sec.rowDefs() {
		s := sec.Summary[i]
		if len(s.Median) == 0 && len(s.Capped) == 0 {
			continue
		}
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
		if s.FloorKey != "" {
			cells = append(cells, fmt.Sprintf("%.2f", s.FloorRatio))
		} else {
			cells = append(cells, "–")
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	if sec.Backend == backendIPVS && len(sec.Floors) > 0 {
		fmt.Fprintf(w, "\nFloors (the load's kernel objects made with one netlink request each, no proxy, in a namespace of their own in the VM):\n\n")
		fmt.Fprintf(w, "| floor | unit | value |\n| --- | --- | --- |\n")
		for _, d := range sec.floorDefs() {
			if v, ok := sec.Floors[d.Key]; ok {
				fmt.Fprintf(w, "| %s | %s | %.*f |\n", d.Label, d.Unit, d.Digits, v)
			}
		}
	} else if len(sec.Floors) > 0 || len(sec.FloorsCapped) > 0 {
		fmt.Fprintf(w, "\nFloors (iptables-restore of the rules kproxy writes for this load, no proxy, %v nat chains, in a namespace of their own):\n\n",
			sec.Floors["floor.nat_chains"])
		fmt.Fprintf(w, "| floor | unit | value |\n| --- | --- | --- |\n")
		for _, d := range sec.floorDefs() {
			v, ok := sec.Floors[d.Key]
			switch {
			case contains(sec.FloorsCapped, d.Key):
				fmt.Fprintf(w, "| %s | %s | > cap (%v) |\n", d.Label, d.Unit, res.Config["floorCap"])
			case ok:
				fmt.Fprintf(w, "| %s | %s | %.*f |\n", d.Label, d.Unit, d.Digits, v)
			}
		}
	}
	for _, run := range sec.Runs {
		if run.Error != "" {
			fmt.Fprintf(w, "\nround %d %s: %s\n", run.Round, run.Proxy, run.Error)
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
