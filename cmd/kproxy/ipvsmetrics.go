package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kproxy/kproxy/ipvs"
)

// ipvsCollector exports the IPVS mode's kube-proxy metrics, read from the proxier at scrape
// time. Upstream's IPVS mode exports the first two (plus the sync durations and timestamps
// every mode has, in proxier.Metrics); kproxy adds the iptables rule count upstream's
// iptables mode exports, and the size of the IPVS table, which upstream does not export.
type ipvsCollector struct {
	p      *ipvs.Proxier
	family string

	restoreFailures, noLocal, rules, virtualServers, realServers, draining *prometheus.Desc
}

func newIPVSCollector(p *ipvs.Proxier, family string) *ipvsCollector {
	fam := []string{"ip_family"}
	return &ipvsCollector{
		p: p, family: family,
		restoreFailures: prometheus.NewDesc("kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
			"Cumulative proxy iptables restore failures", fam, nil),
		noLocal: prometheus.NewDesc("kubeproxy_sync_proxy_rules_no_local_endpoints_total",
			"Number of services with a Local traffic policy and no endpoints", []string{"traffic_policy", "ip_family"}, nil),
		rules: prometheus.NewDesc("kubeproxy_sync_proxy_rules_iptables_total",
			"Total number of iptables rules owned by kube-proxy", []string{"table", "ip_family"}, nil),
		virtualServers: prometheus.NewDesc("kubeproxy_sync_proxy_rules_ipvs_virtual_servers",
			"Number of IPVS virtual servers programmed by the last sync (kproxy)", fam, nil),
		realServers: prometheus.NewDesc("kubeproxy_sync_proxy_rules_ipvs_real_servers",
			"Number of IPVS real servers (weight 1) programmed by the last sync (kproxy)", fam, nil),
		draining: prometheus.NewDesc("kubeproxy_sync_proxy_rules_ipvs_draining_real_servers",
			"Number of IPVS real servers at weight 0 waiting for their connections to end (kproxy)", fam, nil),
	}
}

func (c *ipvsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.restoreFailures, c.noLocal, c.rules, c.virtualServers, c.realServers, c.draining} {
		ch <- d
	}
}

func (c *ipvsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.LastSync()
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), append(labels, c.family)...)
	}
	ch <- prometheus.MustNewConstMetric(c.restoreFailures, prometheus.CounterValue, float64(c.p.RestoreFailures()), c.family)
	gauge(c.noLocal, st.NoLocalEndpointsInternal, "internal")
	gauge(c.noLocal, st.NoLocalEndpointsExternal, "external")
	gauge(c.rules, st.NATRules, "nat")
	gauge(c.rules, st.FilterRules, "filter")
	gauge(c.virtualServers, st.VirtualServers)
	gauge(c.realServers, st.RealServers)
	gauge(c.draining, st.Draining)
}
