package main

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kproxy/kproxy/ipvs"
)

// ipvsCollector exports the IPVS mode's kube-proxy metrics, read from the proxiers at
// scrape time. Upstream's IPVS mode exports the first two (plus the sync durations and
// timestamps every mode has, in proxier.Metrics); kproxy adds the iptables rule count
// upstream's iptables mode exports, and the size of the IPVS table, which upstream does not
// export. One collector serves every IP family (add): a registry refuses a second
// collector with the same descriptors, which a dual-stack node would register.
type ipvsCollector struct {
	mu       sync.Mutex
	families []ipvsFamily

	restoreFailures, noLocal, rules, virtualServers, realServers, draining *prometheus.Desc
}

type ipvsFamily struct {
	p      *ipvs.Proxier
	family string
}

func newIPVSCollector() *ipvsCollector {
	fam := []string{"ip_family"}
	return &ipvsCollector{
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

// add exports p's metrics with the ip_family label family.
func (c *ipvsCollector) add(p *ipvs.Proxier, family string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.families = append(c.families, ipvsFamily{p: p, family: family})
}

func (c *ipvsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.restoreFailures, c.noLocal, c.rules, c.virtualServers, c.realServers, c.draining} {
		ch <- d
	}
}

func (c *ipvsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	families := c.families
	c.mu.Unlock()
	for _, f := range families {
		st := f.p.LastSync()
		gauge := func(d *prometheus.Desc, v int, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), append(labels, f.family)...)
		}
		ch <- prometheus.MustNewConstMetric(c.restoreFailures, prometheus.CounterValue, float64(f.p.RestoreFailures()), f.family)
		gauge(c.noLocal, st.NoLocalEndpointsInternal, "internal")
		gauge(c.noLocal, st.NoLocalEndpointsExternal, "external")
		gauge(c.rules, st.NATRules, "nat")
		gauge(c.rules, st.FilterRules, "filter")
		gauge(c.virtualServers, st.VirtualServers)
		gauge(c.realServers, st.RealServers)
		gauge(c.draining, st.Draining)
	}
}
