package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/kproxy/kproxy/e2e/harness"
)

// Reading "programmed" from the node's kernel, as kpbench does (bench/cmd/kpbench/kernel.go,
// readState; copied, kpbench is a main package): a Service is programmed when its ClusterIP
// has its capture rule and each of its endpoints its DNAT.

// Which kernel interface a proxy programs.
const (
	kernelIPTables = "iptables" // iptables-save -t nat
	kernelNFT      = "nftables" // nft list table ip kube-proxy
)

// state is what one whole-table read found: DNAT targets ("ip:port") and ClusterIPs with a
// service rule.
type state struct {
	eps  map[string]bool
	vips map[string]bool
}

var (
	// iptables: -A KUBE-SEP-XXX ... -j DNAT --to-destination 100.64.10.1:8080
	iptDNAT = regexp.MustCompile(`-j DNAT --to-destination (\d+\.\d+\.\d+\.\d+:\d+)`)
	// iptables: -A KUBE-SERVICES -d 100.100.3.4/32 ... -j KUBE-SVC-XXX
	iptVIP = regexp.MustCompile(`^-A KUBE-SERVICES -d (\d+\.\d+\.\d+\.\d+)/32 .*-j KUBE-SVC-`)
	// nftables endpoint maps (numgen, several endpoints): { 0 : 100.64.10.1 . 8080, 1 : ... }
	nftEP = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. (\d+)\b`)
	// nftables endpoint chain of a single endpoint: dnat to 100.64.1.12:7790
	nftDNAT = regexp.MustCompile(`dnat to (\d+\.\d+\.\d+\.\d+:\d+)`)
	// nftables service-ips map: 100.100.3.4 . tcp . 80 : goto service-...
	nftVIP = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. tcp \. \d+ : goto (service-[^ ,}\n]+)`)
)

// parseIPTablesSave reads the VIPs and DNAT targets of iptables-save -t nat output.
func parseIPTablesSave(out string) state {
	st := state{eps: map[string]bool{}, vips: map[string]bool{}}
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "-A KUBE-") {
			continue
		}
		if m := iptDNAT.FindStringSubmatch(l); m != nil {
			st.eps[m[1]] = true
		} else if m := iptVIP.FindStringSubmatch(l); m != nil {
			st.vips[m[1]] = true
		}
	}
	return st
}

// parseNFT reads the VIPs and DNAT targets of nft list table ip kube-proxy output.
func parseNFT(out string) state {
	st := state{eps: map[string]bool{}, vips: map[string]bool{}}
	for _, m := range nftVIP.FindAllStringSubmatch(out, -1) {
		st.vips[m[1]] = true
	}
	for _, m := range nftEP.FindAllStringSubmatch(out, -1) {
		st.eps[m[1]+":"+m[2]] = true
	}
	for _, m := range nftDNAT.FindAllStringSubmatch(out, -1) {
		st.eps[m[1]] = true
	}
	return st
}

// readState reads the node's whole service table once.
func readState(ctx context.Context, node, kind string) (state, error) {
	switch kind {
	case kernelIPTables:
		out, err := harness.Exec(ctx, node, "iptables-save", "-t", "nat")
		if err != nil {
			return state{}, err
		}
		return parseIPTablesSave(out), nil
	case kernelNFT:
		out, err := harness.Exec(ctx, node, "nft", "list", "table", "ip", "kube-proxy")
		if err != nil && strings.Contains(out, "No such file or directory") {
			return parseNFT(""), nil
		}
		if err != nil {
			return state{}, err
		}
		return parseNFT(out), nil
	}
	return state{}, fmt.Errorf("kernel kind %q", kind)
}

// missing counts the VIPs and endpoints of want that st does not hold.
func missing(st state, vips, eps []string) int {
	n := 0
	for _, v := range vips {
		if !st.vips[v] {
			n++
		}
	}
	for _, e := range eps {
		if !st.eps[e] {
			n++
		}
	}
	return n
}

// positionIn finds the rule of vip among the -A KUBE-SERVICES rules of iptables -S output:
// "k/n", or "-/n" when it is not there.
func positionIn(out, vip string) string {
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
