//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/e2e/harness"
)

// The reliability scenarios (issue 9): a proxy killed and restarted under traffic, an
// apiserver outage, state tampered with by hand. Helpers are at the end of the file.

// A proxy killed with SIGKILL and started again, with a held TCP connection and a loop of new
// connections running through a ClusterIP: the held connection keeps its backend, not one new
// connection fails, and the restart changes no kernel object: iptables-save is the same line
// for line, no rule counter went back (a rewritten chain starts again from zero), `nft
// monitor` sees no change to the ruleset, and the datapath's devices, routes, neighbours and
// FDB entries are the same with no netlink event on them. Upstream kube-proxy rewrites its
// chains at start: for it the kernel checks are only logged.
func TestProxyRestartKeepsConnectionsAndRules(t *testing.T) {
	if cluster.Opts.Proxy == harness.ProxyNone {
		t.Skip("no proxy to restart")
	}
	const ns = "restart"
	ctx := setup(t, ns)
	n1 := cluster.Nodes[0]
	client := cluster.Pod(1, 1)
	backends := []*harness.Pod{cluster.Pod(1, 2), cluster.Pod(2, 1), cluster.Pod(2, 2)}
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP), harness.Endpoints(backends...))
	addr := clusterIPAddr(svc)
	untilAllSeen(ctx, t, client.Name, harness.TCP, addr, names(backends...), programTimeout)
	conn, r0, err := harness.Hold(ctx, client.Name, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	loop := startConnLoop(client.Name, addr, 50*time.Millisecond)
	time.Sleep(2 * time.Second) // let any sync queued by this test's changes run
	before := captureKernel(ctx, t, n1)
	mon := startKernelMonitor(t, n1)

	t0 := time.Now()
	if err := cluster.KillProxy(n1); err != nil {
		t.Fatal(err)
	}
	killed := time.Since(t0)
	if err := cluster.StartProxyWith(ctx, n1); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: proxy killed (SIGKILL, reaped in %v) and started again, /healthz 200 after %v", n1.Name, killed.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	time.Sleep(3 * time.Second) // the new proxy's first (full) sync, and a possible second one
	events := mon.stop()
	after := captureKernel(ctx, t, n1)
	ok, failed, errs := loop.stop()

	if failed > 0 {
		t.Errorf("%d of %d new connections to %s failed across the restart: %s", failed, ok+failed, addr, strings.Join(errs, "; "))
	} else {
		t.Logf("%d new connections from %s to %s across the kill and restart, none failed", ok, client.Name, addr)
	}
	r1, err := conn.Ping()
	if err != nil || r1.Name != r0.Name || r1.Client != r0.Client {
		t.Fatalf("held connection after the restart: %q %v, want the same as before: %q", r1.Raw, err, r0.Raw)
	}
	t.Logf("held connection %s → %s: before %q, after the restart %q", client.Name, addr, r0.Raw, r1.Raw)

	strict := cluster.Opts.Proxy == harness.ProxyKProxy
	report := t.Errorf
	if !strict {
		report = t.Logf
	}
	if gone, added := lineDiff(before.rules, after.rules); len(gone)+len(added) > 0 {
		report("%s: iptables-save changed across the restart:\nremoved:\n%s\nadded:\n%s", n1.Name, strings.Join(gone, "\n"), strings.Join(added, "\n"))
	} else {
		t.Logf("%s: the same %d iptables-save lines across the restart (identical order: %v)", n1.Name, strings.Count(after.rules, "\n")+1, before.rules == after.rules)
	}
	if reset := countersReset(before.counters, after.counters); len(reset) > 0 {
		report("%s: %d rules' counters went back across the restart (their chains were rewritten), e.g.:\n%s", n1.Name, len(reset), strings.Join(head(reset, 5), "\n"))
	} else {
		t.Logf("%s: no rule counter went back (%d rules with packets)", n1.Name, countNonZero(after.counters))
	}
	if len(events) > 0 {
		report("%s: %d kernel changes during the restart:\n%s", n1.Name, len(events), strings.Join(head(events, 20), "\n"))
	} else {
		t.Logf("%s: nft monitor, ip monitor and bridge monitor saw no change during the restart", n1.Name)
	}
	if before.datapath != after.datapath {
		report("%s: datapath state changed across the restart:\nbefore:\n%s\nafter:\n%s", n1.Name, before.datapath, after.datapath)
	} else if before.datapath != "" {
		t.Logf("%s: datapath devices, routes, neighbours and FDB entries unchanged (%d lines)", n1.Name, strings.Count(before.datapath, "\n"))
	}
}

// The apiserver stopped for 60 s. Node 1's proxy runs with --iptables-sync-period=10s.
// Meanwhile a held connection and a loop of new connections keep flowing on the rules in
// place, the proxy keeps syncing (kubeproxy_sync_proxy_rules_last_timestamp_seconds moves),
// and /healthz turns 503 with checks.apiserver once the apiserver has not answered for 2 ×
// the sync period (not before one period, at most 2 periods plus one probe interval and slack
// after the stop), while /livez stays 200. When the apiserver is back, a change made at once
// is programmed within one sync period, by a partial sync (no full sync counted, and the rule
// counters of another service's chains do not go back: they were not rewritten), and
// /healthz is 200 again.
func TestAPIServerOutage(t *testing.T) {
	if cluster.Opts.Proxy != harness.ProxyKProxy {
		t.Skip("kproxy's apiserver contact check (upstream kube-proxy stays healthy through an outage)")
	}
	const ns, period, outage = "outage", 10 * time.Second, 60 * time.Second
	setup(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n1 := cluster.Nodes[0]
	client := cluster.Pod(1, 1)
	restartProxy(t, n1, fmt.Sprintf("--iptables-sync-period=%v", period))
	steady := createService(ctx, t, newService(ns, "steady", corev1.ServiceTypeClusterIP), harness.Endpoints(cluster.Pod(2, 1), cluster.Pod(2, 2)))
	other := createService(ctx, t, newService(ns, "other", corev1.ServiceTypeClusterIP), harness.Endpoints(cluster.Pod(1, 2)))
	untilAllSeen(ctx, t, client.Name, harness.TCP, clusterIPAddr(steady), names(cluster.Pod(2, 1), cluster.Pod(2, 2)), programTimeout)
	firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(other), programTimeout)
	conn, r0, err := harness.Hold(ctx, client.Name, clusterIPAddr(steady))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	loop := startConnLoop(client.Name, clusterIPAddr(steady), 200*time.Millisecond)
	defer loop.stop()
	if h, err := getHealthz(ctx, n1); err != nil || h.code != http.StatusOK {
		t.Fatalf("%s /healthz before the outage: %+v %v", n1.Name, h, err)
	}
	lastSync0 := metricValue(ctx, t, n1, "kubeproxy_sync_proxy_rules_last_timestamp_seconds")

	t0 := time.Now()
	if err := cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := cluster.StartAPIServer(sctx); err != nil {
				t.Errorf("start the apiserver again: %v", err)
			}
		}
	})
	t.Logf("apiserver stopped")
	var unhealthyAt time.Duration
	var unhealthy healthz
	for time.Since(t0) < outage {
		h, err := getHealthz(ctx, n1)
		if err != nil {
			t.Fatalf("%s /healthz during the outage: %v", n1.Name, err)
		}
		if h.code != http.StatusOK && unhealthyAt == 0 {
			unhealthyAt, unhealthy = time.Since(t0), h
		}
		if h.code == http.StatusOK && unhealthyAt != 0 {
			t.Errorf("%s /healthz 200 again at %v without the apiserver: %s", n1.Name, time.Since(t0).Round(time.Second), h.body)
		}
		time.Sleep(time.Second)
	}
	switch {
	case unhealthyAt == 0:
		t.Errorf("%s /healthz stayed 200 through a %v outage, want 503 after 2 × %v", n1.Name, outage, period)
	case unhealthyAt < period || unhealthyAt > 2*period+period/2+3*time.Second:
		t.Errorf("%s /healthz 503 %v after the stop, want between %v and %v: %s", n1.Name, unhealthyAt.Round(time.Second), period, 2*period+period/2+3*time.Second, unhealthy.body)
	default:
		t.Logf("%s /healthz 503 %v after the stop: %s", n1.Name, unhealthyAt.Round(time.Second), unhealthy.body)
	}
	if !strings.Contains(unhealthy.body, `"apiserver"`) || !strings.Contains(unhealthy.body, `"IPv4":{"lastUpdated"`) {
		t.Errorf("%s /healthz body %s: want checks.apiserver and the family status", n1.Name, unhealthy.body)
	}
	if code, body, err := harness.HTTPGet(ctx, n1.Name, fmt.Sprintf("http://127.0.0.1:%d/livez", harness.HealthzPort)); err != nil || code != http.StatusOK {
		t.Errorf("%s /livez at the end of the outage: %d %s %v, want 200 (syncs go on)", n1.Name, code, body, err)
	}
	if lastSync := metricValue(ctx, t, n1, "kubeproxy_sync_proxy_rules_last_timestamp_seconds"); lastSync <= lastSync0 {
		t.Errorf("%s: no sync during the outage (last sync timestamp %v, before %v)", n1.Name, lastSync, lastSync0)
	} else {
		t.Logf("%s: the proxy kept syncing: last sync %.0f s after the stop", n1.Name, lastSync-float64(t0.Unix()))
	}
	ok, failed, errs := loop.stop()
	if failed > 0 {
		t.Errorf("%d of %d new connections to %s failed during the outage: %s", failed, ok+failed, clusterIPAddr(steady), strings.Join(errs, "; "))
	} else {
		t.Logf("%d new connections to %s during the %v outage, none failed", ok, clusterIPAddr(steady), outage)
	}
	if r1, err := conn.Ping(); err != nil || r1.Name != r0.Name {
		t.Errorf("held connection at the end of the outage: %q %v, want %s", r1.Raw, err, r0.Name)
	}

	// The apiserver back: one change, made at once.
	otherBefore := chainCounters(ctx, t, n1, ns+"/other:tcp")
	full0 := metricValue(ctx, t, n1, "kubeproxy_sync_full_proxy_rules_duration_seconds_count")
	t1 := time.Now()
	if err := cluster.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	ready := time.Since(t1)
	setEndpoints(ctx, t, steady, harness.Endpoints(cluster.Pod(2, 1), cluster.Pod(2, 2), cluster.Pod(1, 2)))
	_, took := untilAllSeen(ctx, t, client.Name, harness.TCP, clusterIPAddr(steady), names(cluster.Pod(1, 2)), period, cluster.Pod(2, 1).Name, cluster.Pod(2, 2).Name)
	t.Logf("apiserver ready %v after the start; an endpoint added then answered %v after the change (limit: one sync period, %v)", ready.Round(time.Millisecond), took.Round(time.Millisecond), period)
	if full := metricValue(ctx, t, n1, "kubeproxy_sync_full_proxy_rules_duration_seconds_count"); full != full0 {
		t.Errorf("%s: %v full syncs after the apiserver came back, want none (partial only)", n1.Name, full-full0)
	}
	otherAfter := chainCounters(ctx, t, n1, ns+"/other:tcp")
	if reset := countersReset(otherBefore, otherAfter); len(reset) > 0 || len(otherBefore) == 0 {
		t.Errorf("%s: rules of %s/other rewritten after the apiserver came back (%d counters went back; %d rules before):\n%s", n1.Name, ns, len(reset), len(otherBefore), strings.Join(reset, "\n"))
	} else {
		t.Logf("%s: the %d rules of %s/other kept their counters (not rewritten)", n1.Name, len(otherBefore), ns)
	}
	var h healthz
	back := harness.Eventually(t, period, func() error {
		var err error
		if h, err = getHealthz(ctx, n1); err != nil {
			return err
		}
		if h.code != http.StatusOK {
			return fmt.Errorf("%s /healthz %d %s", n1.Name, h.code, h.body)
		}
		return nil
	})
	t.Logf("%s /healthz 200 again %v after the change (%v after the apiserver start)", n1.Name, back.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
	for _, n := range cluster.Nodes[1:] {
		waitHealthz(ctx, t, n, http.StatusOK, true, 3*period)
	}
}

// State tampered with by hand on node 1 (proxy with --iptables-sync-period=5s): every chain
// of the nat table flushed (kproxy's, the base chains' jumps and the datapath's egress
// masquerade) and, with the VXLAN datapath, the FDB entry of node 2's VTEP deleted. Within
// one sync period (plus slack) pod → ClusterIP → pod on node 2 and pod → pod across nodes
// answer again, and the nat table and the FDB are back as they were.
func TestTamperedStateRepairedWithinSyncPeriod(t *testing.T) {
	if cluster.Opts.Proxy != harness.ProxyKProxy {
		t.Skip("kproxy's verification at every sync period (upstream only repairs at its next change or when a canary chain goes)")
	}
	const ns, period = "tamper", 5 * time.Second
	ctx := setup(t, ns)
	n1, n2 := cluster.Nodes[0], cluster.Nodes[1]
	client, backend := cluster.Pod(1, 1), cluster.Pod(2, 1)
	restartProxy(t, n1, fmt.Sprintf("--iptables-sync-period=%v", period))
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP), harness.Endpoints(backend))
	addr := clusterIPAddr(svc)
	firstReply(ctx, t, client.Name, harness.TCP, addr, programTimeout)
	direct := cluster.Pod(2, 2).Addr(harness.EchoPort)
	firstReply(ctx, t, client.Name, harness.TCP, direct, programTimeout)
	time.Sleep(time.Second)
	nat0 := iptablesSave(ctx, t, n1, "-t", "nat")
	vxlan := cluster.Opts.Datapath == "vxlan"
	var fdb0, fdbEntry string
	if vxlan {
		fdb0 = execOut(ctx, t, n1, "bridge", "fdb", "show", "dev", "kproxy.1")
		for _, l := range strings.Split(fdb0, "\n") {
			if strings.Contains(l, "dst "+n2.IP.String()) {
				fdbEntry = strings.TrimSpace(l)
			}
		}
		if fdbEntry == "" {
			t.Fatalf("%s: no FDB entry for %s on kproxy.1:\n%s", n1.Name, n2.IP, fdb0)
		}
	}

	script := "iptables -t nat -F"
	if vxlan {
		mac := strings.Fields(fdbEntry)[0]
		script += fmt.Sprintf(" && bridge fdb del %s dev kproxy.1 dst %s self", mac, n2.IP)
	}
	execSh(t, n1, script)
	t0 := time.Now()
	_, errSvc := cluster.Request(ctx, client.Name, harness.TCP, addr, requestTimeout)
	_, errPod := cluster.Request(ctx, client.Name, harness.TCP, direct, requestTimeout)
	t.Logf("%s: %q; right after: ClusterIP %s: %v; pod %s on %s: %v", n1.Name, script, addr, errSvc, direct, n2.Name, errPod)
	limit := period + 3*time.Second
	_, tookSvc := firstReply(ctx, t, client.Name, harness.TCP, addr, limit)
	_, tookPod := firstReply(ctx, t, client.Name, harness.TCP, direct, limit)
	t.Logf("ClusterIP answers again %v after the flush; pod across nodes %v (limit %v)", tookSvc.Round(time.Millisecond), tookPod.Round(time.Millisecond), limit)
	harness.Eventually(t, limit-time.Since(t0)+time.Second, func() error {
		if gone, added := lineDiff(nat0, iptablesSave(ctx, t, n1, "-t", "nat")); len(gone)+len(added) > 0 {
			return fmt.Errorf("nat table not back:\nmissing:\n%s\nextra:\n%s", strings.Join(gone, "\n"), strings.Join(added, "\n"))
		}
		return nil
	})
	t.Logf("%s: the %d lines of the nat table are back", n1.Name, strings.Count(nat0, "\n")+1)
	if vxlan {
		fdb := execOut(ctx, t, n1, "bridge", "fdb", "show", "dev", "kproxy.1")
		if !strings.Contains(fdb, fdbEntry) {
			t.Errorf("%s: FDB entry %q not back:\n%s", n1.Name, fdbEntry, fdb)
		} else {
			t.Logf("%s: FDB entry back: %s", n1.Name, fdbEntry)
		}
	}
}

// Chains, rules, routes and an ipset made by someone else on node 1 survive kproxy's syncs
// (--iptables-sync-period=2s), a SIGKILL restart and `kproxy --cleanup`, which removes
// kproxy's own chains. The foreign state: a nat chain jumped to from PREROUTING ahead of
// KUBE-SERVICES, a filter chain jumped to from INPUT, kubelet's KUBE-KUBELET-CANARY (nat) and
// KUBE-FIREWALL (filter) chains, a route and a blackhole route, and an ipset. The proxy is
// started again afterwards and a service answers.
func TestForeignStateSurvives(t *testing.T) {
	if cluster.Opts.Proxy != harness.ProxyKProxy {
		t.Skip("kproxy's --cleanup")
	}
	const ns = "foreign"
	ctx := setup(t, ns)
	n1 := cluster.Nodes[0]
	client, backend := cluster.Pod(1, 1), cluster.Pod(2, 1)
	restartProxy(t, n1, "--iptables-sync-period=2s")
	const add = `set -e
iptables -t nat -N FOREIGN-NAT
iptables -t nat -A FOREIGN-NAT -d 203.0.113.250/32 -p tcp --dport 9 -j RETURN
iptables -t nat -I PREROUTING 1 -m comment --comment "foreign jump" -j FOREIGN-NAT
iptables -t nat -N KUBE-KUBELET-CANARY
iptables -t filter -N FOREIGN-FILTER
iptables -t filter -A FOREIGN-FILTER -s 198.51.100.250/32 -j DROP
iptables -t filter -A INPUT -j FOREIGN-FILTER
iptables -t filter -N KUBE-FIREWALL
iptables -t filter -A KUBE-FIREWALL -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
ip route add 203.0.113.250/32 via 192.0.2.100 dev eth0 proto static
ip route add blackhole 198.51.100.250/32
ipset create foreign-set hash:ip
ipset add foreign-set 198.51.100.250`
	const remove = `iptables -t nat -D PREROUTING -m comment --comment "foreign jump" -j FOREIGN-NAT
iptables -t nat -F FOREIGN-NAT; iptables -t nat -X FOREIGN-NAT; iptables -t nat -X KUBE-KUBELET-CANARY
iptables -t filter -D INPUT -j FOREIGN-FILTER
iptables -t filter -F FOREIGN-FILTER; iptables -t filter -X FOREIGN-FILTER
iptables -t filter -F KUBE-FIREWALL; iptables -t filter -X KUBE-FIREWALL
ip route del 203.0.113.250/32; ip route del blackhole 198.51.100.250/32
ipset destroy foreign-set
true`
	t.Cleanup(func() {
		if out, err := harness.Exec(context.Background(), n1.Name, "sh", "-c", remove); err != nil {
			t.Logf("remove the foreign state: %v %s", err, out)
		}
	})
	execSh(t, n1, add)
	foreign := func() string {
		t.Helper()
		var lines []string
		for _, l := range strings.Split(iptablesSave(ctx, t, n1), "\n") {
			if strings.Contains(l, "FOREIGN") || strings.Contains(l, "KUBE-KUBELET-CANARY") || strings.Contains(l, "KUBE-FIREWALL") {
				lines = append(lines, l)
			}
		}
		for _, l := range strings.Split(execOut(ctx, t, n1, "ip", "route", "show"), "\n") {
			if strings.Contains(l, ".250") {
				lines = append(lines, strings.TrimSpace(l))
			}
		}
		lines = append(lines, strings.TrimSpace(execOut(ctx, t, n1, "ipset", "list", "foreign-set")))
		return strings.Join(lines, "\n")
	}
	want := foreign()
	if strings.Count(want, "\n") < 10 {
		t.Fatalf("%s: foreign state not in place:\n%s", n1.Name, want)
	}
	check := func(after string) {
		t.Helper()
		if got := foreign(); got != want {
			t.Errorf("%s: foreign state changed %s:\nbefore:\n%s\nafter:\n%s", n1.Name, after, want, got)
		} else {
			t.Logf("%s: foreign state intact %s (%d lines)", n1.Name, after, strings.Count(want, "\n")+1)
		}
	}
	svc := createService(ctx, t, newService(ns, "echo", corev1.ServiceTypeClusterIP), harness.Endpoints(backend))
	firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), programTimeout)
	time.Sleep(5 * time.Second) // two periodic (verifying) syncs
	check("after a change and two periodic syncs")

	if err := cluster.KillProxy(n1); err != nil {
		t.Fatal(err)
	}
	if err := cluster.StartProxyWith(ctx, n1, "--iptables-sync-period=2s"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	check("after a SIGKILL restart")

	if err := cluster.StopProxy(n1); err != nil {
		t.Fatal(err)
	}
	out, err := harness.Exec(ctx, n1.Name, cluster.Opts.ProxyBin, "--cleanup")
	if err != nil {
		t.Fatalf("kproxy --cleanup: %v", err)
	}
	t.Logf("kproxy --cleanup: %s", lastLines(out, 3))
	check("after kproxy --cleanup")
	if left := rulesMentioning(iptablesSave(ctx, t, n1), "KUBE-SERVICES"); len(left) > 0 {
		t.Errorf("%s: kproxy's chains left after --cleanup:\n%s", n1.Name, strings.Join(left, "\n"))
	}
	if err := cluster.StartProxyWith(ctx, n1, "--iptables-sync-period=2s"); err != nil {
		t.Fatal(err)
	}
	_, took := firstReply(ctx, t, client.Name, harness.TCP, clusterIPAddr(svc), programTimeout)
	t.Logf("proxy started again: %s answers after %v", clusterIPAddr(svc), took.Round(time.Millisecond))
	check("after the proxy started again")
}

// kernelState is what a restart must leave alone on a node.
type kernelState struct {
	rules    string         // iptables-save without counters
	counters map[string]int // packets per rule ("table chain rule" → packets)
	datapath string         // kproxy.* devices, proto 107 routes, neighbours and FDB of kproxy.1
}

func captureKernel(ctx context.Context, t *testing.T, n *harness.Node) kernelState {
	t.Helper()
	ks := kernelState{rules: iptablesSave(ctx, t, n), counters: ruleCounters(ctx, t, n, "")}
	if cluster.Opts.Datapath == "" {
		return ks
	}
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-d", "-o", "link", "show", "type", "vxlan"},
		{"ip", "route", "show", "proto", "107"},
		{"ip", "neigh", "show", "nud", "permanent"},
		{"bridge", "fdb", "show", "dev", "kproxy.1"},
	} {
		out, err := harness.Exec(ctx, n.Name, args...)
		if err != nil && cluster.Opts.Datapath == "vxlan" {
			t.Fatal(err)
		}
		b.WriteString(out)
	}
	ks.datapath = b.String()
	return ks
}

var counterLineRE = regexp.MustCompile(`^\[(\d+):\d+\] (.*)$`)

// ruleCounters maps each rule of iptables-save -c (nat and filter) that mentions s to its
// packet count.
func ruleCounters(ctx context.Context, t *testing.T, n *harness.Node, s string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range []string{"nat", "filter"} {
		dump := execOut(ctx, t, n, "iptables-save", "-c", "-t", table)
		for _, l := range strings.Split(dump, "\n") {
			m := counterLineRE.FindStringSubmatch(l)
			if m == nil || !strings.Contains(m[2], s) {
				continue
			}
			p, _ := strconv.Atoi(m[1])
			out[table+" "+m[2]] = p
		}
	}
	return out
}

// chainCounters are the counters of every rule of the per-service chains (KUBE-SVC-,
// KUBE-SEP-, ...) of a service port ("ns/name:port"), found by their comments.
func chainCounters(ctx context.Context, t *testing.T, n *harness.Node, spn string) map[string]int {
	t.Helper()
	all := ruleCounters(ctx, t, n, "")
	chains := map[string]bool{}
	for rule := range all {
		if !strings.Contains(rule, `"`+spn) && !strings.Contains(rule, spn+" ") {
			continue
		}
		f := strings.Fields(rule)
		if len(f) > 2 && f[1] == "-A" && perServiceChain(f[2]) {
			chains[f[2]] = true
		}
		for i, w := range f {
			if w == "-j" && i+1 < len(f) && strings.HasPrefix(f[i+1], "KUBE-SEP-") {
				chains[f[i+1]] = true
			}
		}
	}
	out := map[string]int{}
	for rule, p := range all {
		if f := strings.Fields(rule); len(f) > 2 && chains[f[2]] {
			out[rule] = p
		}
	}
	return out
}

// perServiceChain reports whether a chain is one of a service port's own (not a shared chain
// such as KUBE-SERVICES, which a partial sync rewrites whole).
func perServiceChain(c string) bool {
	for _, p := range []string{"KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"} {
		if strings.HasPrefix(c, p) {
			return true
		}
	}
	return false
}

// countersReset lists the rules whose packet count is lower after than before, or gone.
func countersReset(before, after map[string]int) []string {
	var out []string
	for rule, p := range before {
		if q, ok := after[rule]; !ok || q < p {
			out = append(out, fmt.Sprintf("%s: %d → %d", rule, p, q))
		}
	}
	return out
}

func countNonZero(m map[string]int) int {
	n := 0
	for _, p := range m {
		if p > 0 {
			n++
		}
	}
	return n
}

func head(lines []string, n int) []string {
	if len(lines) > n {
		return append(lines[:n:n], fmt.Sprintf("... and %d more", len(lines)-n))
	}
	return lines
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// execOut runs a command in node n's namespace and returns its output.
func execOut(ctx context.Context, t *testing.T, n *harness.Node, args ...string) string {
	t.Helper()
	out, err := harness.Exec(ctx, n.Name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// metricValue is the value of a metric without labels, or the sum over its samples, on node
// n's /metrics.
func metricValue(ctx context.Context, t *testing.T, n *harness.Node, name string) float64 {
	t.Helper()
	code, body, err := harness.HTTPGet(ctx, n.Name, fmt.Sprintf("http://127.0.0.1:%d/metrics", harness.MetricsPort))
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s /metrics: %d %v", n.Name, code, err)
	}
	var sum float64
	for _, s := range metricLines(body, name, "") {
		f := strings.Fields(s)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%s /metrics: %q: %v", n.Name, s, err)
		}
		sum += v
	}
	return sum
}

// connLoop opens a new TCP connection every interval, each a one-line exchange with an echo
// server, and counts the outcomes.
type connLoop struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	ok, failed int
	errs       []string
}

func startConnLoop(from, addr string, every time.Duration) *connLoop {
	ctx, cancel := context.WithCancel(context.Background())
	l := &connLoop{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			err := exchangeOnce(ctx, from, addr)
			if ctx.Err() != nil {
				return
			}
			l.mu.Lock()
			if err != nil {
				l.failed++
				if len(l.errs) < 10 {
					l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
				}
			} else {
				l.ok++
			}
			l.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return l
}

// stop ends the loop (once) and returns its counts.
func (l *connLoop) stop() (ok, failed int, errs []string) {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.failed, l.errs
}

// exchangeOnce connects from the namespace ns to addr, sends one line and reads the reply,
// within 2 s.
func exchangeOnce(ctx context.Context, ns, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := harness.DialIn(ctx, ns, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	_, err = harness.ParseReply(line)
	return err
}

// kernelMonitor records the ruleset changes (nft monitor) and the netlink events on kproxy's
// datapath objects (ip monitor, bridge monitor: lines mentioning kproxy) of a node.
type kernelMonitor struct {
	cmds []*exec.Cmd
	outs []*bytes.Buffer
}

func startKernelMonitor(t *testing.T, n *harness.Node) *kernelMonitor {
	t.Helper()
	for _, tool := range []string{"nft", "ip", "bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run 'make deps' (it installs nftables and iproute2)", tool)
		}
	}
	m := &kernelMonitor{}
	for _, args := range [][]string{
		{"nft", "monitor", "ruleset"},
		{"ip", "-o", "monitor", "link", "address", "route", "neigh"},
		{"bridge", "monitor", "fdb"},
	} {
		cmd := exec.Command("nsenter", append([]string{"--net=" + harness.NetnsPath(n.Name), "--"}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("%s: %v", strings.Join(args, " "), err)
		}
		m.cmds = append(m.cmds, cmd)
		m.outs = append(m.outs, &out)
	}
	time.Sleep(200 * time.Millisecond) // the monitors subscribe
	return m
}

// stop ends the monitors and returns the changes they saw.
func (m *kernelMonitor) stop() []string {
	var events []string
	for i, cmd := range m.cmds {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for _, l := range strings.Split(m.outs[i].String(), "\n") {
			l = strings.TrimSpace(l)
			if l == "" {
				continue
			}
			if i == 0 || strings.Contains(l, "kproxy") {
				events = append(events, l)
			}
		}
	}
	return events
}
