package datapath

import (
	"net/netip"
)

// MasqueradeChain is the nat chain holding the egress masquerade rules; JumpRule sends
// POSTROUTING to it.
const MasqueradeChain = "KPROXY-POSTROUTING"

// Masquerade is the egress masquerade of table nat, per family. Equivalent to (IPv4,
// cluster 100.64.0.0/16, nodes 192.0.2.11 and .12):
//
//	-A POSTROUTING -m comment --comment "kproxy datapath egress masquerade" -j KPROXY-POSTROUTING
//	-A KPROXY-POSTROUTING -s 100.64.0.0/16 -d 100.64.0.0/16 -m comment --comment "pod to pod keeps its source" -j RETURN
//	-A KPROXY-POSTROUTING -s 100.64.0.0/16 -d 192.0.2.11/32 -m comment --comment "pod to node keeps its source" -j RETURN
//	-A KPROXY-POSTROUTING -s 100.64.0.0/16 -d 192.0.2.12/32 -m comment --comment "pod to node keeps its source" -j RETURN
//	-A KPROXY-POSTROUTING -s 100.64.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "pod egress leaves as the node" -j MASQUERADE --random-fully
//
// One RETURN per node IP: a peer's node reaches this node's pods by the datapath's own
// routes, so its replies need no NAT. Packets to this node itself never reach POSTROUTING.
type Masquerade struct {
	V4, V6 []Rule
}

// JumpRule is the POSTROUTING rule that jumps to MasqueradeChain (both families).
func JumpRule() Rule {
	return Rule{Chain: "POSTROUTING", Args: []string{
		"-m", "comment", "--comment", "kproxy datapath egress masquerade", "-j", MasqueradeChain}}
}

// computeMasquerade renders the rules of MasqueradeChain; empty when there is no cluster CIDR
// of a family.
func computeMasquerade(cluster []netip.Prefix, nodeIPs []netip.Addr) Masquerade {
	var m Masquerade
	for _, is4 := range []bool{true, false} {
		var rules []Rule
		for _, c := range cluster {
			if c.Addr().Is4() != is4 {
				continue
			}
			rules = append(rules, masqueradeRules(c.Masked(), cluster, nodeIPs)...)
		}
		if is4 {
			m.V4 = rules
		} else {
			m.V6 = rules
		}
	}
	return m
}

func masqueradeRules(src netip.Prefix, cluster []netip.Prefix, nodeIPs []netip.Addr) []Rule {
	var out []Rule
	ret := func(dst, why string) {
		out = append(out, Rule{Chain: MasqueradeChain, Args: []string{
			"-s", src.String(), "-d", dst, "-m", "comment", "--comment", why, "-j", "RETURN"}})
	}
	for _, d := range cluster {
		if d.Addr().Is4() == src.Addr().Is4() {
			ret(d.Masked().String(), "pod to pod keeps its source")
		}
	}
	for _, ip := range nodeIPs {
		if ip.Is4() == src.Addr().Is4() {
			ret(netip.PrefixFrom(ip, ip.BitLen()).String(), "pod to node keeps its source")
		}
	}
	multicast := "224.0.0.0/4"
	if src.Addr().Is6() {
		multicast = "ff00::/8"
	}
	out = append(out, Rule{Chain: MasqueradeChain, Args: []string{
		"-s", src.String(), "!", "-d", multicast, "-m", "comment", "--comment", "pod egress leaves as the node",
		"-j", "MASQUERADE", "--random-fully"}})
	return out
}
