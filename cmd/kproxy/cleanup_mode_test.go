package main

import (
	"testing"

	"github.com/kproxy/kproxy/iptables"
)

func TestOtherModeMarks(t *testing.T) {
	saved := func(nat []iptables.Chain, filter ...iptables.Chain) map[iptables.Table]map[iptables.Chain][]string {
		m := map[iptables.Table]map[iptables.Chain][]string{iptables.TableNAT: {}, iptables.TableFilter: {}}
		for _, c := range nat {
			m[iptables.TableNAT][c] = nil
		}
		for _, c := range filter {
			m[iptables.TableFilter][c] = nil
		}
		return m
	}
	shared := []iptables.Chain{"KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KPROXY-POSTROUTING", "CNI-HOSTPORT-DNAT"}
	for _, tc := range []struct {
		name  string
		saved map[iptables.Table]map[iptables.Chain][]string
		marks map[iptables.Table][]string
		want  bool
	}{
		{"ipvs start, only shared chains", saved(shared), iptablesModeMarks, false},
		{"ipvs start, own chains", saved(append(shared, "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER")), iptablesModeMarks, false},
		{"ipvs start, own filter chains", saved(shared, "KUBE-NODE-PORT", "KUBE-IPVS-FILTER", "KUBE-PROXY-FIREWALL"), iptablesModeMarks, false},
		{"ipvs start over iptables mode", saved(append(shared, "KUBE-SVC-ABCDEF"), "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"), iptablesModeMarks, true},
		{"iptables start, own chains", saved(append(shared, "KUBE-SVC-ABCDEF", "KUBE-NODEPORTS"), "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"), ipvsModeMarks, false},
		{"iptables start over ipvs mode", saved(shared, "KUBE-IPVS-FILTER", "KUBE-NODE-PORT"), ipvsModeMarks, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, got := otherModeMarked(tc.saved, tc.marks); got != tc.want {
				t.Errorf("marked = %v, want %v", got, tc.want)
			}
		})
	}
	for c, want := range map[iptables.Chain]bool{"KPROXY-POSTROUTING": false, "KPROXY-EXT-SHORTCUT": true,
		"KUBE-SERVICES": true, "KUBE-SVC-ABC": true, "CNI-FOREIGN": false} {
		if got := modeSwitchOwned(iptables.TableNAT, c); got != want {
			t.Errorf("modeSwitchOwned(nat, %s) = %v, want %v", c, got, want)
		}
	}
}
