package main

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	"github.com/kproxy/kproxy/ipvs"
)

// TestIPVSCollector: the IPVS mode's metrics are exported under kube-proxy's names with
// kube-proxy's labels.
func TestIPVSCollector(t *testing.T) {
	p, err := ipvs.NewProxier(ipvs.Writers{IPVS: ipvs.NewFakeIPVS(), Links: ipvs.NewFakeLinks(), IPSet: ipset.NewFake(),
		IPTables: iptables.NewFake(iptables.IPv4)}, ipvs.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newIPVSCollector(p, "IPv4"))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()] = append(got[mf.GetName()], labels...)
		}
		slices.Sort(got[mf.GetName()])
	}
	want := map[string][]string{
		"kubeproxy_sync_proxy_rules_iptables_restore_failures_total": {"ip_family=IPv4"},
		"kubeproxy_sync_proxy_rules_no_local_endpoints_total":        {"ip_family=IPv4", "ip_family=IPv4", "traffic_policy=external", "traffic_policy=internal"},
		"kubeproxy_sync_proxy_rules_iptables_total":                  {"ip_family=IPv4", "ip_family=IPv4", "table=filter", "table=nat"},
		"kubeproxy_sync_proxy_rules_ipvs_virtual_servers":            {"ip_family=IPv4"},
		"kubeproxy_sync_proxy_rules_ipvs_real_servers":               {"ip_family=IPv4"},
		"kubeproxy_sync_proxy_rules_ipvs_draining_real_servers":      {"ip_family=IPv4"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}
