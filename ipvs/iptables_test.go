package ipvs

import (
	"testing"

	"github.com/kproxy/kproxy/iptables"
)

// TestCanonicalRule: the forms iptables-save 1.8.9 (nft) printed in the VM for the matches
// iptables.CanonicalRule does not know (see the vmtest restart check).
func TestCanonicalRule(t *testing.T) {
	tests := []struct {
		rule iptables.Rule
		want string
	}{
		{iptables.Rule{"-m", "comment", "--comment", "c d", "-m", "set", "--match-set", "KUBE-CLUSTER-IP", "dst,dst", "!", "-s", "100.64.0.0/16", "-j", "KUBE-MARK-MASQ"},
			`! -s 100.64.0.0/16 -m comment --comment "c d" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ`},
		{iptables.Rule{"-m", "set", "--match-set", "KUBE-EXTERNAL-IP", "dst,dst", "-m", "physdev", "!", "--physdev-is-in", "-m", "addrtype", "!", "--src-type", "LOCAL", "-j", "ACCEPT"},
			`-m set --match-set KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT`},
		{iptables.Rule{"-s", "198.51.100.10", "-m", "ipvs", "--vaddr", "198.51.100.10", "--vproto", "tcp", "--vport", "80", "-j", "DROP"},
			`-s 198.51.100.10/32 -m ipvs --vproto 6 --vaddr 198.51.100.10 --vport 80 -j DROP`},
		{iptables.Rule{"-m", "conntrack", "--ctstate", "NEW", "-m", "set", "--match-set", "KUBE-IPVS-IPS", "dst", "-j", "REJECT"},
			`-m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable`},
	}
	for _, tc := range tests {
		if got := canonicalRule(iptables.IPv4, iptables.TableFilter, tc.rule); got != tc.want {
			t.Errorf("canonicalRule(%v)\n got %s\nwant %s", tc.rule, got, tc.want)
		}
	}
}
