package ipvs

import (
	"slices"
	"strconv"

	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
)

// The chains of upstream's IPVS mode (pkg/proxy/ipvs/proxier.go).
const (
	chainServices       iptables.Chain = "KUBE-SERVICES"
	chainPostrouting    iptables.Chain = "KUBE-POSTROUTING"
	chainNodePort       iptables.Chain = "KUBE-NODE-PORT"
	chainLoadBalancer   iptables.Chain = "KUBE-LOAD-BALANCER"
	chainMarkMasq       iptables.Chain = "KUBE-MARK-MASQ"
	chainForward        iptables.Chain = "KUBE-FORWARD"
	chainProxyFirewall  iptables.Chain = "KUBE-PROXY-FIREWALL"
	chainSourceRangesFW iptables.Chain = "KUBE-SOURCE-RANGES-FIREWALL"
	chainIPVSFilter     iptables.Chain = "KUBE-IPVS-FILTER"
	chainIPVSOutFilter  iptables.Chain = "KUBE-IPVS-OUT-FILTER"
	// kproxy's own: externalTrafficPolicy=Local short-circuit (shortcut.go)
	chainExtShortcut          iptables.Chain = "KPROXY-EXT-SHORTCUT"
	chainExtToClusterIP       iptables.Chain = "KPROXY-EXT-TO-CLUSTERIP"
	targetMasquerade                         = "MASQUERADE"
	targetReturn                             = "RETURN"
	targetAccept                             = "ACCEPT"
	matchDstDst                              = "dst,dst"
	matchDst                                 = "dst"
	matchDstDstSrc                           = "dst,dst,src"
	commentServicePortals                    = "kubernetes service portals"
	commentIPVSAccessFilter                  = "kubernetes ipvs access filter"
	commentProxyFirewallRules                = "kube-proxy firewall rules"
	commentForwardingRules                   = "kubernetes forwarding rules"
)

// ChainRules is one owned chain and its rules (each the arguments after "-A CHAIN").
type ChainRules struct {
	Table iptables.Table
	Chain iptables.Chain
	Rules []iptables.Rule
}

func (c ChainRules) equal(o ChainRules) bool {
	return c.Table == o.Table && c.Chain == o.Chain && slices.EqualFunc(c.Rules, o.Rules, slices.Equal[iptables.Rule])
}

// ownedChains is upstream's iptablesChains, every chain the IPVS mode declares, in order,
// plus kproxy's two externalTrafficPolicy=Local chains.
var ownedChains = []struct {
	table iptables.Table
	chain iptables.Chain
}{
	{iptables.TableNAT, chainServices},
	{iptables.TableNAT, chainPostrouting},
	{iptables.TableNAT, chainNodePort},
	{iptables.TableNAT, chainLoadBalancer},
	{iptables.TableNAT, chainMarkMasq},
	{iptables.TableNAT, chainExtShortcut},
	{iptables.TableNAT, chainExtToClusterIP},
	{iptables.TableFilter, chainForward},
	{iptables.TableFilter, chainNodePort},
	{iptables.TableFilter, chainProxyFirewall},
	{iptables.TableFilter, chainSourceRangesFW},
	{iptables.TableFilter, chainIPVSFilter},
	{iptables.TableFilter, chainIPVSOutFilter},
}

// baseJump is a jump from a built-in chain to an owned chain, ensured at the top of the
// built-in chain (upstream's iptablesJumpChain, in its order).
type baseJump struct {
	table    iptables.Table
	from, to iptables.Chain
	comment  string
}

var baseJumps = []baseJump{
	{iptables.TableNAT, iptables.ChainOutput, chainServices, commentServicePortals},
	{iptables.TableNAT, iptables.ChainPrerouting, chainServices, commentServicePortals},
	{iptables.TableNAT, iptables.ChainPostrouting, chainPostrouting, "kubernetes postrouting rules"},
	{iptables.TableFilter, iptables.ChainForward, chainForward, commentForwardingRules},
	{iptables.TableFilter, iptables.ChainInput, chainNodePort, "kubernetes health check rules"},
	{iptables.TableFilter, iptables.ChainInput, chainProxyFirewall, commentProxyFirewallRules},
	{iptables.TableFilter, iptables.ChainForward, chainProxyFirewall, commentProxyFirewallRules},
	{iptables.TableFilter, iptables.ChainInput, chainIPVSFilter, commentIPVSAccessFilter},
	{iptables.TableFilter, iptables.ChainOutput, chainIPVSOutFilter, commentIPVSAccessFilter},
}

func (j baseJump) rule() iptables.Rule {
	return iptables.Rule{"-m", "comment", "--comment", j.comment, "-j", string(j.to)}
}

// setJump is upstream's ipsetWithIptablesChain: for each non-empty set, one rule in `from`
// matching the set and jumping to `to`. The -LOCAL node-port sets come before the others.
var setJumps = []struct {
	set       string
	table     iptables.Table
	from      iptables.Chain
	to        string
	matchType string
	proto     string
}{
	{ipset.KubeLoopBack, iptables.TableNAT, chainPostrouting, targetMasquerade, matchDstDstSrc, ""},
	{ipset.KubeLoadBalancer, iptables.TableNAT, chainServices, string(chainLoadBalancer), matchDstDst, ""},
	{ipset.KubeLoadBalancerLocal, iptables.TableNAT, chainLoadBalancer, targetReturn, matchDstDst, ""},
	{ipset.KubeNodePortLocalTCP, iptables.TableNAT, chainNodePort, targetReturn, matchDst, ipset.ProtocolTCP},
	{ipset.KubeNodePortTCP, iptables.TableNAT, chainNodePort, string(chainMarkMasq), matchDst, ipset.ProtocolTCP},
	{ipset.KubeNodePortLocalUDP, iptables.TableNAT, chainNodePort, targetReturn, matchDst, ipset.ProtocolUDP},
	{ipset.KubeNodePortUDP, iptables.TableNAT, chainNodePort, string(chainMarkMasq), matchDst, ipset.ProtocolUDP},
	{ipset.KubeNodePortLocalSCTP, iptables.TableNAT, chainNodePort, targetReturn, matchDstDst, ipset.ProtocolSCTP},
	{ipset.KubeNodePortSCTP, iptables.TableNAT, chainNodePort, string(chainMarkMasq), matchDstDst, ipset.ProtocolSCTP},
	{ipset.KubeLoadBalancerFW, iptables.TableFilter, chainProxyFirewall, string(chainSourceRangesFW), matchDstDst, ""},
	{ipset.KubeLoadBalancerSourceCIDR, iptables.TableFilter, chainSourceRangesFW, targetReturn, matchDstDstSrc, ""},
	{ipset.KubeLoadBalancerSourceIP, iptables.TableFilter, chainSourceRangesFW, targetReturn, matchDstDstSrc, ""},
}

// ruleSet collects rules per owned chain.
type ruleSet struct {
	cfg    Config
	chains map[iptables.Table]map[iptables.Chain][]iptables.Rule
}

func (rs *ruleSet) add(t iptables.Table, c iptables.Chain, args ...string) {
	rs.chains[t][c] = append(rs.chains[t][c], iptables.Rule(args))
}

// matchSet is "-m set --match-set NAME FLAGS" for a kube-proxy set of the family.
func (rs *ruleSet) matchSet(name, flags string) []string {
	return []string{"-m", "set", "--match-set", rs.cfg.setName(name), flags}
}

// setComment is the "-m comment" of a kube-proxy set.
func setComment(name string) []string {
	return []string{"-m", "comment", "--comment", kubeSet(name, ipset.FamilyIPv4).Comment}
}

func cat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ruleInput is what the rules depend on besides the Config.
type ruleInput struct {
	// nonEmpty says which sets have entries (by IPv4 name).
	nonEmpty map[string]bool
	// lbNoNodeAccess are the load-balancer entries the node may not reach.
	lbNoNodeAccess []ipset.Entry
	// shortcuts are the externalTrafficPolicy=Local addresses, sorted.
	shortcuts []shortcut
}

// renderRules is upstream's writeIptablesRules (the rules of every owned chain) plus
// kproxy's externalTrafficPolicy=Local short-circuit right after the loopback RETURN.
func renderRules(cfg Config, in ruleInput) []ChainRules {
	rs := &ruleSet{cfg: cfg, chains: map[iptables.Table]map[iptables.Chain][]iptables.Rule{
		iptables.TableNAT: {}, iptables.TableFilter: {},
	}}
	nat, filter := iptables.TableNAT, iptables.TableFilter
	nonEmpty, lbNoNodeAccess := in.nonEmpty, in.lbNoNodeAccess
	loAddr := "127.0.0.0/8"
	if cfg.Family == iptables.IPv6 {
		loAddr = "::1/128"
	}
	rs.add(nat, chainServices, "-s", loAddr, "-j", targetReturn)
	rs.renderShortcuts(nonEmpty, in.shortcuts, lbNoNodeAccess)
	for _, j := range setJumps {
		if !nonEmpty[j.set] {
			continue
		}
		var args []string
		if j.proto != "" {
			args = []string{"-p", j.proto}
		}
		rs.add(j.table, j.from, cat(args, setComment(j.set), rs.matchSet(j.set, j.matchType), []string{"-j", j.to})...)
	}
	rs.renderServiceMasquerade(nonEmpty)
	rs.add(nat, chainServices, "-m", "addrtype", "--dst-type", "LOCAL", "-j", string(chainNodePort))
	rs.add(nat, chainLoadBalancer, "-j", string(chainMarkMasq))
	rs.add(filter, chainSourceRangesFW, "-j", "DROP")
	for _, e := range lbNoNodeAccess {
		rs.add(filter, chainIPVSOutFilter, "-s", e.IP.String(), "-m", "ipvs", "--vaddr", e.IP.String(),
			"--vproto", e.Protocol, "--vport", strconv.Itoa(int(e.Port)), "-j", "DROP")
	}
	for _, set := range []string{ipset.KubeClusterIP, ipset.KubeLoadBalancer} {
		if nonEmpty[set] {
			rs.add(nat, chainServices, cat(rs.matchSet(set, matchDstDst), []string{"-j", targetAccept})...)
		}
	}
	rs.renderFixed()
	var out []ChainRules
	for _, oc := range ownedChains {
		out = append(out, ChainRules{Table: oc.table, Chain: oc.chain, Rules: rs.chains[oc.table][oc.chain]})
	}
	return out
}

// renderServiceMasquerade writes the KUBE-CLUSTER-IP masquerade rule and the externalIP
// rules of KUBE-SERVICES.
func (rs *ruleSet) renderServiceMasquerade(nonEmpty map[string]bool) {
	nat := iptables.TableNAT
	mark := []string{"-j", string(chainMarkMasq)}
	if nonEmpty[ipset.KubeClusterIP] {
		base := cat(setComment(ipset.KubeClusterIP), []string{"-m", "set", "--match-set", rs.cfg.setName(ipset.KubeClusterIP)})
		switch notLocal := rs.cfg.localDetector().ifNotLocal(); {
		case rs.cfg.MasqueradeAll:
			rs.add(nat, chainServices, cat(base, []string{matchDstDst}, mark)...)
		case notLocal != nil:
			rs.add(nat, chainServices, cat(base, []string{matchDstDst}, notLocal, mark)...)
		default:
			// Node traffic to a VIP picks a VIP as its source (kube-ipvs0 holds them all):
			// masquerade traffic from a service ip:port.
			rs.add(nat, chainServices, cat(base, []string{"src,dst"}, mark)...)
		}
	}
	externalIPRules := func(args []string) {
		// traffic from off the node (not bridged, not local) and to local addresses stays
		// out of KUBE-NODE-PORT
		rs.add(nat, chainServices, cat(args, []string{"-m", "physdev", "!", "--physdev-is-in",
			"-m", "addrtype", "!", "--src-type", "LOCAL", "-j", targetAccept})...)
		rs.add(nat, chainServices, cat(args, []string{"-m", "addrtype", "--dst-type", "LOCAL", "-j", targetAccept})...)
	}
	if nonEmpty[ipset.KubeExternalIP] {
		args := cat(setComment(ipset.KubeExternalIP), rs.matchSet(ipset.KubeExternalIP, matchDstDst))
		rs.add(nat, chainServices, cat(args, mark)...)
		externalIPRules(args)
	}
	if nonEmpty[ipset.KubeExternalIPLocal] {
		externalIPRules(cat(setComment(ipset.KubeExternalIPLocal), rs.matchSet(ipset.KubeExternalIPLocal, matchDstDst)))
	}
}

// renderFixed writes the rules that do not depend on the services.
func (rs *ruleSet) renderFixed() {
	nat, filter := iptables.TableNAT, iptables.TableFilter
	mark := rs.cfg.masqueradeMark()
	rs.add(filter, chainForward, "-m", "comment", "--comment", commentForwardingRules,
		"-m", "mark", "--mark", mark+"/"+mark, "-j", targetAccept)
	rs.add(filter, chainForward, "-m", "comment", "--comment", "kubernetes forwarding conntrack rule",
		"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", targetAccept)
	rs.add(filter, chainNodePort, cat(setComment(ipset.KubeHealthCheckNodePort),
		rs.matchSet(ipset.KubeHealthCheckNodePort, matchDst), []string{"-j", targetAccept})...)
	for _, f := range []struct{ set, flags string }{
		{ipset.KubeLoadBalancer, matchDstDst},
		{ipset.KubeClusterIP, matchDstDst},
		{ipset.KubeExternalIP, matchDstDst},
		{ipset.KubeExternalIPLocal, matchDstDst},
		{ipset.KubeHealthCheckNodePort, matchDst},
	} {
		rs.add(filter, chainIPVSFilter, cat(rs.matchSet(f.set, f.flags), []string{"-j", targetReturn})...)
	}
	rs.add(filter, chainIPVSFilter, cat([]string{"-m", "conntrack", "--ctstate", "NEW"},
		rs.matchSet(ipset.KubeIPVSIPs, matchDst), []string{"-j", "REJECT"})...)
	rs.add(nat, chainPostrouting, "-m", "mark", "!", "--mark", mark+"/"+mark, "-j", targetReturn)
	rs.add(nat, chainPostrouting, "-j", "MARK", "--xor-mark", mark)
	rs.add(nat, chainPostrouting, "-m", "comment", "--comment", "kubernetes service traffic requiring SNAT",
		"-j", targetMasquerade, "--random-fully")
	rs.add(nat, chainMarkMasq, "-j", "MARK", "--or-mark", mark)
}

// RenderRestore is the iptables-restore input that writes every owned chain, as upstream's
// IPVS mode writes it each sync (nat, then filter).
func RenderRestore(chains []ChainRules) []byte {
	tx := &iptables.Transaction{}
	for _, c := range chains {
		tx.Declare(c.Table, c.Chain)
	}
	for _, c := range chains {
		for _, r := range c.Rules {
			tx.Append(c.Table, c.Chain, r)
		}
	}
	return tx.Bytes()
}
