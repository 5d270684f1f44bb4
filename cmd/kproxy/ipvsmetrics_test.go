package main

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	iptproxy "github.com/kproxy/kproxy/iptables/proxy"
	"github.com/kproxy/kproxy/ipvs"
	"github.com/kproxy/kproxy/proxier"
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
	c := newIPVSCollector()
	c.add(p, "IPv4")
	reg.MustRegister(c)
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

// TestModeCollectorsDualStack: a dual-stack node registers one collector per mode for both
// families (registering one per family made the registry panic: "duplicate metrics
// collector registration attempted"), and every metric has a sample per family.
func TestModeCollectorsDualStack(t *testing.T) {
	for _, mode := range []string{"ipvs", "iptables"} {
		t.Run(mode, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := &modeCollectors{}
			for fam, label := range map[iptables.Family]string{iptables.IPv4: "IPv4", iptables.IPv6: "IPv6"} {
				var b proxier.Backend
				if mode == "ipvs" {
					p, err := ipvs.NewProxier(ipvs.Writers{IPVS: ipvs.NewFakeIPVS(), Links: ipvs.NewFakeLinks(), IPSet: ipset.NewFake(),
						IPTables: iptables.NewFake(fam)}, ipvs.Config{Family: fam})
					if err != nil {
						t.Fatal(err)
					}
					b = p
				} else {
					b = iptproxy.NewProxier(iptables.NewFake(fam), iptproxy.Config{Family: fam})
				}
				m.add(reg, b, label)
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				fams := map[string]int{}
				for _, metric := range mf.GetMetric() {
					for _, l := range metric.GetLabel() {
						if l.GetName() == "ip_family" {
							fams[l.GetValue()]++
						}
					}
				}
				if len(fams) != 2 || fams["IPv4"] != fams["IPv6"] {
					t.Errorf("%s: samples per ip_family %v, want as many for IPv4 as for IPv6", mf.GetName(), fams)
				}
			}
			if len(mfs) == 0 {
				t.Error("no metrics")
			}
		})
	}
}
