package main

import (
	"context"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/iptables"
)

func TestOtherModeMarks(t *testing.T) {
	ctx := context.Background()
	tables := func(nat []iptables.Chain, filter ...iptables.Chain) iptables.Interface {
		t.Helper()
		var b strings.Builder
		for table, chains := range map[iptables.Table][]iptables.Chain{iptables.TableNAT: nat, iptables.TableFilter: filter} {
			b.WriteString("*" + string(table) + "\n")
			for _, c := range chains {
				b.WriteString(":" + string(c) + " - [0:0]\n")
			}
			b.WriteString("COMMIT\n")
		}
		f := iptables.NewFake(iptables.IPv4)
		if err := f.Restore(ctx, []byte(b.String())); err != nil {
			t.Fatal(err)
		}
		return f
	}
	shared := []iptables.Chain{"KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KPROXY-POSTROUTING", "CNI-HOSTPORT-DNAT"}
	for _, tc := range []struct {
		name  string
		ipt   iptables.Interface
		marks map[iptables.Table][]iptables.Chain
		want  bool
	}{
		{"ipvs start, only shared chains", tables(shared), iptablesModeMarks, false},
		{"ipvs start, own chains", tables(append(shared, "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER")), iptablesModeMarks, false},
		{"ipvs start, own filter chains", tables(shared, "KUBE-NODE-PORT", "KUBE-IPVS-FILTER", "KUBE-PROXY-FIREWALL"), iptablesModeMarks, false},
		{"ipvs start over iptables mode", tables(append(shared, "KUBE-SVC-ABCDEF"), "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"), iptablesModeMarks, true},
		{"iptables start, own chains", tables(append(shared, "KUBE-SVC-ABCDEF", "KUBE-NODEPORTS"), "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"), ipvsModeMarks, false},
		{"iptables start over ipvs mode", tables(shared, "KUBE-IPVS-FILTER", "KUBE-NODE-PORT"), ipvsModeMarks, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, got, err := otherModeMarked(ctx, tc.ipt, tc.marks)
			if err != nil || got != tc.want {
				t.Errorf("marked = %v, %v; want %v", got, err, tc.want)
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
