package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/bench/internal/load"
	"github.com/kproxy/kproxy/iptables"
	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
)

// The one-service probe computes kube-proxy's chain names itself; they must be the ones
// kproxy's renderer writes for the load.
func TestProbeChainNamesMatchRenderer(t *testing.T) {
	in, names := floorInput(3, 2)
	rules := iptproxy.Render(in)
	for i, nn := range names {
		s := &benchService{name: nn.Name}
		var chains []iptables.Chain
		for _, c := range rules.NAT {
			if c.Service == nn {
				chains = append(chains, c.Chain)
			}
		}
		if !slices.Contains(chains, iptables.Chain(svcChain(s))) {
			t.Errorf("%s: %s not among the rendered chains %v", nn, svcChain(s), chains)
		}
		ep := netip.AddrPortFrom(load.EndpointAddr(i*2), targetPort).String()
		if !slices.Contains(chains, iptables.Chain(sepChain(s, ep))) {
			t.Errorf("%s: %s (%s) not among the rendered chains %v", nn, sepChain(s, ep), ep, chains)
		}
	}
}

func TestChurnAddresses(t *testing.T) {
	lastLoad := load.EndpointAddr(50000 - 1)
	if first := churnAddr(0); first.Compare(lastLoad) <= 0 {
		t.Errorf("first churn address %s is inside the load (ends at %s)", first, lastLoad)
	}
	if last, change := churnAddr(maxChurnChanges-1), changeAddr(0); last.Compare(change) >= 0 {
		t.Errorf("last churn address %s reaches the one-change addresses (%s)", last, change)
	}
}

func TestLastSyncMetric(t *testing.T) {
	body := "# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds x\n" +
		"kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 1.7e+09\n" +
		"kubeproxy_sync_proxy_rules_last_timestamp_seconds_other 2e+09\n"
	if got := lastSyncMetric(body); got.Unix() != 1700000000 {
		t.Errorf("labelled: %v", got)
	}
	if got := lastSyncMetric("kubeproxy_sync_proxy_rules_last_timestamp_seconds 1.8e+09\n"); got.Unix() != 1800000000 {
		t.Errorf("plain: %v", got)
	}
	if got := lastSyncMetric("nothing 1\n"); !got.IsZero() {
		t.Errorf("absent: %v", got)
	}
}

func TestMonitorLines(t *testing.T) {
	m := &nftMonitor{adds: map[string]time.Time{}, marker: "kpbench-monitor-ready", ready: make(chan struct{}), done: make(chan struct{})}
	lines := "add table ip kpbench-monitor-ready\n" +
		"add rule ip nat KUBE-SEP-ABC meta l4proto tcp counter packets 0 bytes 0 dnat to 100.64.240.1:8080\n" +
		"add rule ip kube-proxy service-X meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 100.64.240.2 . 8080, 1 : 100.64.10.1 . 8080 }\n" +
		"delete rule ip nat KUBE-SEP-DEF handle 7 dnat to 100.64.240.3:8080\n" +
		"add rule ip nat KUBE-SVC-X comment \"kpb/svc -> 100.64.240.4:8080\" counter jump KUBE-SEP-Y\n"
	m.read(strings.NewReader(lines))
	select {
	case <-m.ready:
	default:
		t.Error("the marker table did not make the monitor ready")
	}
	for addr, want := range map[string]bool{"100.64.240.1:8080": true, "100.64.240.2:8080": true,
		"100.64.10.1:8080": true, "100.64.240.3:8080": false, "100.64.240.4:8080": false} {
		if _, ok := m.firstAdd(addr); ok != want {
			t.Errorf("%s seen = %v, want %v", addr, ok, want)
		}
	}
}
