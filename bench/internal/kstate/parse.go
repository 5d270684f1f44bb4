package kstate

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	// iptables: -A KUBE-SEP-XXX ... -j DNAT --to-destination 100.64.10.1:8080
	iptDNAT = regexp.MustCompile(`-j DNAT --to-destination (\d+\.\d+\.\d+\.\d+:\d+)`)
	// iptables: -A KUBE-SERVICES -d 100.100.3.4/32 ... -j KUBE-SVC-XXX
	iptVIP = regexp.MustCompile(`^-A KUBE-SERVICES -d (\d+\.\d+\.\d+\.\d+)/32 .*-j KUBE-SVC-`)
	// nftables endpoint maps (numgen, several endpoints): { 0 : 100.64.10.1 . 8080, 1 : ... }
	nftEP = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. (\d+)\b`)
	// nftables endpoint chain of a single endpoint (no map): dnat to 100.64.1.12:7790
	nftDNAT = regexp.MustCompile(`dnat to (\d+\.\d+\.\d+\.\d+:\d+)`)
	// nftables service-ips map: 100.100.3.4 . tcp . 80 : goto service-...
	nftVIP = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. tcp \. \d+ : goto (service-[^ ,}\n]+)`)
)

// ParseIPTablesSave reads the VIPs and DNAT targets of iptables-save -t nat output.
func ParseIPTablesSave(out string) State {
	st := newState()
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "-A KUBE-") {
			continue
		}
		if m := iptDNAT.FindStringSubmatch(l); m != nil {
			st.Endpoints[m[1]] = true
		} else if m := iptVIP.FindStringSubmatch(l); m != nil {
			st.VIPs[m[1]] = true
		}
	}
	return st
}

// ParseIPTablesVIPs reads the VIPs of iptables -t nat -S KUBE-SERVICES output; Endpoints is
// nil.
func ParseIPTablesVIPs(out string) State {
	st := State{VIPs: map[string]bool{}}
	for _, l := range strings.Split(out, "\n") {
		if m := iptVIP.FindStringSubmatch(l); m != nil {
			st.VIPs[m[1]] = true
		}
	}
	return st
}

// ParseNFT reads the VIPs and DNAT targets of nft list table ip kube-proxy output: the
// endpoints of a Service with several are elements of a numgen map ("ip . port"), the one of
// a Service with a single endpoint is a plain "dnat to ip:port" in its endpoint chain.
func ParseNFT(out string) State {
	st := newState()
	for _, m := range nftVIP.FindAllStringSubmatch(out, -1) {
		st.VIPs[m[1]] = true
	}
	for _, m := range nftEP.FindAllStringSubmatch(out, -1) {
		st.Endpoints[m[1]+":"+m[2]] = true
	}
	for _, m := range nftDNAT.FindAllStringSubmatch(out, -1) {
		st.Endpoints[m[1]] = true
	}
	return st
}

// ParseNFTVIPs reads the VIPs of nft list map ip kube-proxy service-ips output; Endpoints is
// nil.
func ParseNFTVIPs(out string) State {
	st := State{VIPs: map[string]bool{}}
	for _, m := range nftVIP.FindAllStringSubmatch(out, -1) {
		st.VIPs[m[1]] = true
	}
	return st
}

// PositionIn finds the rule of vip among the -A KUBE-SERVICES rules of iptables -S output:
// "k/n", or "-/n" when it is not there.
func PositionIn(out, vip string) string {
	n, k := 0, 0
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "-A KUBE-SERVICES ") {
			continue
		}
		n++
		if k == 0 && strings.HasPrefix(l, "-A KUBE-SERVICES -d "+vip+"/32 ") {
			k = n
		}
	}
	if k == 0 {
		return fmt.Sprintf("-/%d", n)
	}
	return fmt.Sprintf("%d/%d", k, n)
}
