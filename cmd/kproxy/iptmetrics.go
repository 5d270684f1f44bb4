package main

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
)

// iptablesCollector exports the iptables mode's own kube-proxy metrics, read from the
// proxiers at scrape time. One collector serves every IP family (add): a registry refuses a
// second collector with the same descriptors, which a dual-stack node would register.
type iptablesCollector struct {
	mu       sync.Mutex
	families []iptablesFamily

	rules, restoreFailures, partialFailures, noLocal *prometheus.Desc
}

type iptablesFamily struct {
	p      *iptproxy.Proxier
	family string
}

func newIPTablesCollector() *iptablesCollector {
	return &iptablesCollector{
		rules: prometheus.NewDesc("kubeproxy_sync_proxy_rules_iptables_total",
			"Total number of iptables rules owned by kube-proxy", []string{"table", "ip_family"}, nil),
		restoreFailures: prometheus.NewDesc("kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
			"Cumulative proxy iptables restore failures", []string{"ip_family"}, nil),
		partialFailures: prometheus.NewDesc("kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
			"Cumulative proxy iptables partial restore failures", []string{"ip_family"}, nil),
		noLocal: prometheus.NewDesc("kubeproxy_sync_proxy_rules_no_local_endpoints_total",
			"Number of services with a Local traffic policy and no endpoints", []string{"traffic_policy", "ip_family"}, nil),
	}
}

// add exports p's metrics with the ip_family label family.
func (c *iptablesCollector) add(p *iptproxy.Proxier, family string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.families = append(c.families, iptablesFamily{p: p, family: family})
}

func (c *iptablesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rules
	ch <- c.restoreFailures
	ch <- c.partialFailures
	ch <- c.noLocal
}

func (c *iptablesCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	families := c.families
	c.mu.Unlock()
	for _, f := range families {
		counts, stats := f.p.LastRuleCount(), f.p.Stats()
		ch <- prometheus.MustNewConstMetric(c.rules, prometheus.GaugeValue, float64(counts.NATRules), "nat", f.family)
		ch <- prometheus.MustNewConstMetric(c.rules, prometheus.GaugeValue, float64(counts.FilterRules), "filter", f.family)
		ch <- prometheus.MustNewConstMetric(c.restoreFailures, prometheus.CounterValue, float64(stats.RestoreFailures), f.family)
		ch <- prometheus.MustNewConstMetric(c.partialFailures, prometheus.CounterValue, float64(stats.PartialRestoreFailures), f.family)
		ch <- prometheus.MustNewConstMetric(c.noLocal, prometheus.GaugeValue, float64(counts.NoLocalEndpointsInternal), "internal", f.family)
		ch <- prometheus.MustNewConstMetric(c.noLocal, prometheus.GaugeValue, float64(counts.NoLocalEndpointsExternal), "external", f.family)
	}
}
