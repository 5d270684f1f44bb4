package main

import (
	"github.com/prometheus/client_golang/prometheus"

	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
)

// iptablesCollector exports the iptables mode's own kube-proxy metrics, read from the
// proxier at scrape time.
type iptablesCollector struct {
	p      *iptproxy.Proxier
	family string

	rules, restoreFailures, partialFailures, noLocal *prometheus.Desc
}

func newIPTablesCollector(p *iptproxy.Proxier, family string) *iptablesCollector {
	return &iptablesCollector{
		p: p, family: family,
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

func (c *iptablesCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rules
	ch <- c.restoreFailures
	ch <- c.partialFailures
	ch <- c.noLocal
}

func (c *iptablesCollector) Collect(ch chan<- prometheus.Metric) {
	counts, stats := c.p.LastRuleCount(), c.p.Stats()
	ch <- prometheus.MustNewConstMetric(c.rules, prometheus.GaugeValue, float64(counts.NATRules), "nat", c.family)
	ch <- prometheus.MustNewConstMetric(c.rules, prometheus.GaugeValue, float64(counts.FilterRules), "filter", c.family)
	ch <- prometheus.MustNewConstMetric(c.restoreFailures, prometheus.CounterValue, float64(stats.RestoreFailures), c.family)
	ch <- prometheus.MustNewConstMetric(c.partialFailures, prometheus.CounterValue, float64(stats.PartialRestoreFailures), c.family)
	ch <- prometheus.MustNewConstMetric(c.noLocal, prometheus.GaugeValue, float64(counts.NoLocalEndpointsInternal), "internal", c.family)
	ch <- prometheus.MustNewConstMetric(c.noLocal, prometheus.GaugeValue, float64(counts.NoLocalEndpointsExternal), "external", c.family)
}
