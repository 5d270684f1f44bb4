package proxy

import (
	"cmp"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// largeClusterEndpoints is upstream's largeClusterEndpointsThreshold: past this many endpoints
// (all service ports together) the per-endpoint rules carry no comment, which makes the
// tables up to 40% smaller.
const largeClusterEndpoints = 1000

// Input is everything Render needs: values only.
type Input struct {
	Services  endpoints.ServiceMap
	Endpoints endpoints.EndpointsMap
	Node      endpoints.NodeInfo
	Config    Config
	// NodePortIPs are the node's addresses inside Config.NodePortAddresses (the proxier
	// resolves them); unused when NodePortAddresses is empty.
	NodePortIPs []netip.Addr
}

// Rules is the desired content of every chain the iptables mode owns.
type Rules struct {
	// NAT holds the shared chains first, then each service's chains, services in name order.
	NAT    []ChainRules
	Filter []ChainRules
	// ServicePorts and Endpoints count what was rendered (service ports with a ClusterIP of
	// the proxier's family, and the endpoints they use).
	ServicePorts, Endpoints int
	// NoLocalEndpointsInternal and NoLocalEndpointsExternal count the service ports with an
	// internal (external) traffic policy of Local whose endpoints are all on other nodes:
	// kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"|"external"}.
	NoLocalEndpointsInternal, NoLocalEndpointsExternal int
	// LargeCluster is upstream's large-cluster mode: more than 1,000 endpoints, no
	// per-endpoint comments.
	LargeCluster bool
}

// ChainRules is one chain and its rules in order.
type ChainRules struct {
	Chain iptables.Chain
	Rules []iptables.Rule
	// Service is the service a per-service chain (KUBE-SVC-, KUBE-SVL-, KUBE-EXT-, KUBE-FW-,
	// KUBE-SEP-) belongs to; zero for the shared chains.
	Service types.NamespacedName
}

const (
	commentNodePorts = "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
	commentSNAT      = "kubernetes service traffic requiring SNAT"
)

// renderer accumulates the rules of one Render call.
type renderer struct {
	cfg   Config
	det   LocalDetector
	mark  string
	large bool

	natServices, natNodePorts                       ChainRules
	filterServices, filterExternal, filterNodePorts ChainRules
	filterFirewall                                  ChainRules
	perService                                      []ChainRules
	clusterIPs                                      map[netip.Addr]types.NamespacedName
	clusterIPOrder                                  []netip.Addr
	out                                             Rules
}

// Render computes the rules for a snapshot. It is pure: same input, same output, service
// ports in name order.
func Render(in Input) Rules {
	r := &renderer{
		cfg: in.Config, det: in.Config.localDetector(), mark: in.Config.masqueradeMark(),
		large:           countEndpoints(in) > largeClusterEndpoints,
		natServices:     ChainRules{Chain: iptables.ChainKubeServices},
		natNodePorts:    ChainRules{Chain: iptables.ChainKubeNodePorts},
		filterServices:  ChainRules{Chain: iptables.ChainKubeServices},
		filterExternal:  ChainRules{Chain: iptables.ChainKubeExternalServices},
		filterNodePorts: ChainRules{Chain: iptables.ChainKubeNodePorts},
		filterFirewall:  ChainRules{Chain: iptables.ChainKubeProxyFirewall},
		clusterIPs:      map[netip.Addr]types.NamespacedName{},
	}
	r.out.LargeCluster = r.large
	for _, name := range sortedServicePorts(in.Services) {
		sp := in.Services[name]
		if !r.cfg.ofFamily(sp.ClusterIP) || !validPort(sp.Port) {
			continue
		}
		r.out.ServicePorts++
		r.servicePort(sp, in.Endpoints[name], in.Node)
	}
	r.rejectOtherPorts()
	r.nodePortsJump(in.NodePortIPs)
	r.out.NAT = append([]ChainRules{
		r.natServices,
		r.natNodePorts,
		{Chain: iptables.ChainKubeMarkMasq, Rules: []iptables.Rule{{"-j", "MARK", "--or-mark", r.mark}}},
		postroutingChain(r.cfg, r.mark),
	}, r.perService...)
	r.out.Filter = []ChainRules{r.filterServices, r.filterExternal, forwardChain(r.cfg, r.mark),
		r.filterNodePorts, r.filterFirewall}
	if r.localhostNodePorts() {
		r.out.Filter = append(r.out.Filter, localnetFirewallChain())
	}
	return r.out
}

// countEndpoints counts every endpoint of every service port, as upstream does to choose
// large-cluster mode.
func countEndpoints(in Input) int {
	n := 0
	for name := range in.Services {
		n += len(in.Endpoints[name])
	}
	return n
}

func sortedServicePorts(m endpoints.ServiceMap) []endpoints.ServicePortName {
	names := make([]endpoints.ServicePortName, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b endpoints.ServicePortName) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
	})
	return names
}

func validPort(p int32) bool { return p > 0 && p <= 65535 }

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func (r *renderer) localhostNodePorts() bool {
	return r.cfg.LocalhostNodePorts && r.cfg.Family == iptables.IPv4
}

// rejectOtherPorts ends filter KUBE-SERVICES: traffic to a service address that no service
// port captured (so was not DNATed) is rejected at once instead of timing out. With service
// CIDRs that is one rule per CIDR (which also covers unallocated addresses); without, one
// per ClusterIP.
func (r *renderer) rejectOtherPorts() {
	var cidrs []netip.Prefix
	for _, p := range r.cfg.ServiceCIDRs {
		if p.IsValid() && r.cfg.ofFamily(p.Addr()) {
			cidrs = append(cidrs, p.Masked())
		}
	}
	if len(cidrs) > 0 {
		for _, p := range cidrs {
			r.filterServices.Rules = append(r.filterServices.Rules, iptables.Rule{
				"-m", "comment", "--comment", "kubernetes service CIDR: address or port not in use",
				"-d", p.String(), "-j", "REJECT"})
		}
		return
	}
	for _, ip := range r.clusterIPOrder {
		r.filterServices.Rules = append(r.filterServices.Rules, iptables.Rule{
			"-m", "comment", "--comment", r.clusterIPs[ip].String() + " cluster IP: port not in use",
			"-d", hostPrefix(ip), "-j", "REJECT"})
	}
}

// nodePortsJump ends nat KUBE-SERVICES with the jump to KUBE-NODEPORTS: for every local
// address, or for each address NodePorts are restricted to.
func (r *renderer) nodePortsJump(nodePortIPs []netip.Addr) {
	comment := iptables.Rule{"-m", "comment", "--comment", commentNodePorts}
	jump := iptables.Rule{"-j", string(iptables.ChainKubeNodePorts)}
	if !r.hasNodePortAddresses() {
		dest := iptables.Rule{"-m", "addrtype", "--dst-type", "LOCAL"}
		switch {
		case r.cfg.Family == iptables.IPv6:
			dest = append(dest, "!", "-d", "::1/128")
		case !r.cfg.LocalhostNodePorts:
			dest = append(dest, "!", "-d", "127.0.0.0/8")
		}
		r.natServices.Rules = append(r.natServices.Rules, slices.Concat(comment, dest, jump))
		return
	}
	ips := slices.Clone(nodePortIPs)
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range slices.Compact(ips) {
		if !r.cfg.ofFamily(ip) || (ip.IsLoopback() && !r.localhostNodePorts()) {
			continue
		}
		r.natServices.Rules = append(r.natServices.Rules, slices.Concat(comment, iptables.Rule{"-d", hostPrefix(ip)}, jump))
	}
}

func (r *renderer) hasNodePortAddresses() bool {
	for _, p := range r.cfg.NodePortAddresses {
		if p.IsValid() && r.cfg.ofFamily(p.Addr()) {
			return true
		}
	}
	return false
}

var jumpMarkMasq = iptables.Rule{"-j", string(iptables.ChainKubeMarkMasq)}

// postroutingChain masquerades the packets marked for it, clearing the mark so that a packet
// that goes through the node twice is not masqueraded twice.
func postroutingChain(cfg Config, mark string) ChainRules {
	masq := iptables.Rule{"-m", "comment", "--comment", commentSNAT, "-j", "MASQUERADE"}
	if cfg.MasqueradeRandomFully {
		masq = append(masq, "--random-fully")
	}
	return ChainRules{Chain: iptables.ChainKubePostrouting, Rules: []iptables.Rule{
		{"-m", "mark", "!", "--mark", mark + "/" + mark, "-j", "RETURN"},
		{"-j", "MARK", "--xor-mark", mark},
		masq,
	}}
}

// forwardChain is filter KUBE-FORWARD: drop packets conntrack finds INVALID (unless
// nf_conntrack_tcp_be_liberal is set), accept what kube-proxy marked and what belongs to an
// accepted connection, so that services work with a FORWARD policy of DROP.
func forwardChain(cfg Config, mark string) ChainRules {
	c := ChainRules{Chain: iptables.ChainKubeForward}
	if !cfg.ConntrackTCPBeLiberal {
		c.Rules = append(c.Rules, iptables.Rule{"-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"})
	}
	c.Rules = append(c.Rules,
		iptables.Rule{"-m", "comment", "--comment", "kubernetes forwarding rules", "-m", "mark", "--mark", mark + "/" + mark, "-j", "ACCEPT"},
		iptables.Rule{"-m", "comment", "--comment", "kubernetes forwarding conntrack rule", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
	)
	return c
}

// localnetFirewallChain is filter KUBE-FIREWALL as kube-proxy (and kubelet) write it when
// NodePorts are open on localhost: route_localnet must not let other hosts reach 127.0.0.0/8.
func localnetFirewallChain() ChainRules {
	return ChainRules{Chain: chainKubeFirewall, Rules: []iptables.Rule{{
		"-m", "comment", "--comment", "block incoming localnet connections",
		"-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8",
		"-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP",
	}}}
}

// chainKubeFirewall is kubelet's filter chain, which kube-proxy also writes.
const chainKubeFirewall iptables.Chain = "KUBE-FIREWALL"

// Transaction returns the restore that writes every chain of r from scratch.
func (r Rules) Transaction() *iptables.Transaction {
	tx := &iptables.Transaction{}
	for _, t := range []struct {
		table  iptables.Table
		chains []ChainRules
	}{{iptables.TableFilter, r.Filter}, {iptables.TableNAT, r.NAT}} {
		for _, c := range t.chains {
			writeChain(tx, t.table, c)
		}
	}
	return tx
}

// writeChain declares c (creating or flushing it) and appends its rules.
func writeChain(tx *iptables.Transaction, table iptables.Table, c ChainRules) {
	tx.Declare(table, c.Chain)
	for _, r := range c.Rules {
		tx.Append(table, c.Chain, r)
	}
}
