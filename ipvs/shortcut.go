package ipvs

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
)

// shortcut is one externalTrafficPolicy=Local address (a load-balancer IP, an externalIP
// or a node IP with the node port) whose traffic from pods and from the node is sent to the
// service's ClusterIP, so that it reaches every endpoint (see the package documentation).
type shortcut struct {
	from    VSKey          // the external address, port and protocol
	to      netip.AddrPort // the ClusterIP and service port
	service endpoints.ServicePortName
}

// shortcutGates are the sets whose entries are externalTrafficPolicy=Local addresses: a
// packet to one of them enters KPROXY-EXT-SHORTCUT. The node-port bitmaps hold bare ports,
// so their gate also wants a local destination (as upstream's jump to KUBE-NODE-PORT).
var shortcutGates = []struct {
	set, proto, flags string
	localDst          bool
}{
	{set: ipset.KubeLoadBalancerLocal, flags: matchDstDst},
	{set: ipset.KubeExternalIPLocal, flags: matchDstDst},
	{set: ipset.KubeNodePortLocalTCP, proto: ipset.ProtocolTCP, flags: matchDst, localDst: true},
	{set: ipset.KubeNodePortLocalUDP, proto: ipset.ProtocolUDP, flags: matchDst, localDst: true},
	{set: ipset.KubeNodePortLocalSCTP, proto: ipset.ProtocolSCTP, flags: matchDstDst},
}

const (
	commentShortcutGate = "kproxy: pod and node traffic to externalTrafficPolicy=Local addresses"
	commentShortcutPod  = "kproxy: pod traffic to externalTrafficPolicy=Local addresses uses every endpoint"
	commentShortcutNode = "kproxy: node traffic to externalTrafficPolicy=Local addresses uses every endpoint"
	commentShortcutFW   = "kproxy: loadBalancerSourceRanges still apply"
)

// renderShortcuts writes the externalTrafficPolicy=Local short-circuit, in the order the
// packet meets it:
//
//	KUBE-SERVICES            (right after the loopback RETURN) one gate per non-empty -LOCAL
//	                         set: -m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j KPROXY-EXT-SHORTCUT
//	KPROXY-EXT-SHORTCUT      RETURN when loadBalancerSourceRanges refuse the source (or
//	                         the node, for its own traffic from the address itself); pod
//	                         traffic (the local detector) -j KPROXY-EXT-TO-CLUSTERIP; node
//	                         traffic (--src-type LOCAL) -j KUBE-MARK-MASQ, -j KPROXY-EXT-TO-CLUSTERIP
//	KPROXY-EXT-TO-CLUSTERIP  one DNAT per address: -d IP -p PROTO --dport PORT -j DNAT --to-destination CLUSTERIP:PORT
//
// Whatever returns (traffic from outside, refused sources, addresses without a rule) goes
// on through upstream's rules to the address's own virtual server, which holds the local
// endpoints only.
func (rs *ruleSet) renderShortcuts(nonEmpty map[string]bool, shortcuts []shortcut, lbNoNodeAccess []ipset.Entry) {
	if len(shortcuts) == 0 {
		return
	}
	nat := iptables.TableNAT
	for _, g := range shortcutGates {
		if !nonEmpty[g.set] {
			continue
		}
		var args []string
		if g.proto != "" {
			args = []string{"-p", g.proto}
		}
		args = cat(args, []string{"-m", "comment", "--comment", commentShortcutGate}, rs.matchSet(g.set, g.flags))
		if g.localDst {
			args = append(args, "-m", "addrtype", "--dst-type", "LOCAL")
		}
		rs.add(nat, chainServices, cat(args, []string{"-j", string(chainExtShortcut)})...)
	}
	if nonEmpty[ipset.KubeLoadBalancerFW] {
		// A load-balancer address with source ranges: a source they refuse is not short-
		// circuited, so that KUBE-PROXY-FIREWALL / KUBE-IPVS-OUT-FILTER (filter table,
		// which sees the address after DNAT) still drop it on the address's own path.
		rs.add(nat, chainExtShortcut, cat([]string{"-m", "comment", "--comment", commentShortcutFW},
			rs.matchSet(ipset.KubeLoadBalancerFW, matchDstDst),
			rs.notMatchSet(ipset.KubeLoadBalancerSourceCIDR, matchDstDstSrc),
			rs.notMatchSet(ipset.KubeLoadBalancerSourceIP, matchDstDstSrc),
			[]string{"-j", targetReturn})...)
		// The node's own traffic (from the address itself) to a load-balancer IP whose
		// ranges exclude the node IP: KUBE-IPVS-OUT-FILTER drops it on its own path, even
		// when the ranges happen to contain the load-balancer IP.
		for _, e := range lbNoNodeAccess {
			if !slices.ContainsFunc(shortcuts, func(s shortcut) bool { return s.matches(e) }) {
				continue
			}
			host := netip.PrefixFrom(e.IP, e.IP.BitLen()).String()
			rs.add(nat, chainExtShortcut, "-s", host, "-d", host, "-p", e.Protocol, "-m", e.Protocol,
				"--dport", strconv.Itoa(int(e.Port)), "-m", "comment", "--comment", commentShortcutFW, "-j", targetReturn)
		}
	}
	if local := rs.cfg.localDetector().ifLocal(); local != nil {
		rs.add(nat, chainExtShortcut, cat(local, []string{"-m", "comment", "--comment", commentShortcutPod,
			"-j", string(chainExtToClusterIP)})...)
	}
	srcLocal := []string{"-m", "addrtype", "--src-type", "LOCAL"}
	rs.add(nat, chainExtShortcut, cat([]string{"-m", "comment", "--comment", commentShortcutNode}, srcLocal,
		[]string{"-j", string(chainMarkMasq)})...)
	rs.add(nat, chainExtShortcut, cat(srcLocal, []string{"-j", string(chainExtToClusterIP)})...)
	for _, s := range shortcuts {
		proto := strings.ToLower(string(s.from.Protocol))
		rs.add(nat, chainExtToClusterIP, "-d", netip.PrefixFrom(s.from.IP, s.from.IP.BitLen()).String(),
			"-p", proto, "-m", proto, "--dport", strconv.Itoa(int(s.from.Port)),
			"-m", "comment", "--comment", s.service.String(),
			"-j", "DNAT", "--to-destination", s.to.String())
	}
}

// matches reports whether the ip,proto:port entry e is the short-circuit's address.
func (s shortcut) matches(e ipset.Entry) bool {
	return s.from.IP == e.IP && s.from.Port == e.Port && strings.EqualFold(string(s.from.Protocol), e.Protocol)
}

// notMatchSet is "-m set ! --match-set NAME FLAGS".
func (rs *ruleSet) notMatchSet(name, flags string) []string {
	return []string{"-m", "set", "!", "--match-set", rs.cfg.setName(name), flags}
}
