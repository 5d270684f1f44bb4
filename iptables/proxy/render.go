package proxy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// Input is everything Render needs: values only.
type Input struct {
	Services  endpoints.ServiceMap
	Endpoints endpoints.EndpointsMap
	Node      endpoints.NodeInfo
	Config    Config
}

// Rules is the desired content of every chain the iptables mode owns.
type Rules struct {
	NAT    []ChainRules
	Filter []ChainRules
	// ServicePorts and Endpoints count what was rendered (service ports with a ClusterIP of
	// the proxier's family, and the endpoints they use).
	ServicePorts, Endpoints int
}

// ChainRules is one chain and its rules in order.
type ChainRules struct {
	Chain iptables.Chain
	Rules []iptables.Rule
}

const (
	commentNodePorts = "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
	commentSNAT      = "kubernetes service traffic requiring SNAT"
)

// Render computes the rules for a snapshot. It is pure: same input, same output, service
// ports in name order.
func Render(in Input) Rules {
	cfg := in.Config
	out := Rules{}
	natServices := ChainRules{Chain: iptables.ChainKubeServices}
	filterServices := ChainRules{Chain: iptables.ChainKubeServices}
	var perService []ChainRules
	for _, name := range sortedServicePorts(in.Services) {
		sp := in.Services[name]
		if !sp.ClusterIP.IsValid() || sp.ClusterIP.Is4() != (cfg.Family == iptables.IPv4) || !validPort(sp.Port) {
			continue
		}
		out.ServicePorts++
		eps, anywhere := usableEndpoints(sp, in.Endpoints[name], in.Node)
		if len(eps) == 0 {
			filterServices.Rules = append(filterServices.Rules, noEndpointsRule(sp, anywhere))
			continue
		}
		out.Endpoints += len(eps)
		natServices.Rules = append(natServices.Rules, clusterIPRule(sp))
		perService = append(perService, renderServicePort(cfg, sp, eps)...)
	}
	natServices.Rules = append(natServices.Rules, iptables.Rule{
		"-m", "comment", "--comment", commentNodePorts,
		"-m", "addrtype", "--dst-type", "LOCAL", "-j", string(iptables.ChainKubeNodePorts),
	})
	mark := cfg.masqueradeMark()
	out.NAT = append([]ChainRules{
		natServices,
		{Chain: iptables.ChainKubeNodePorts},
		{Chain: iptables.ChainKubeMarkMasq, Rules: []iptables.Rule{{"-j", "MARK", "--or-mark", mark}}},
		postroutingChain(cfg, mark),
	}, perService...)
	out.Filter = []ChainRules{filterServices}
	return out
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

// usableEndpoints returns the endpoints ClusterIP traffic goes to, the cluster set of
// endpoints.CategorizeEndpoints (ready, else serving-terminating, narrowed by topology hints;
// the node's own for internalTrafficPolicy Local), without the ones whose address or port
// iptables cannot take; and whether the service port has usable endpoints anywhere.
func usableEndpoints(sp *endpoints.ServicePort, eps []endpoints.Endpoint, node endpoints.NodeInfo) ([]endpoints.Endpoint, bool) {
	cat := endpoints.CategorizeEndpoints(eps, sp, node)
	var out []endpoints.Endpoint
	for _, ep := range cat.Cluster {
		if ep.IP.IsValid() && ep.IP.Is4() == sp.ClusterIP.Is4() && validPort(ep.Port) {
			out = append(out, ep)
		}
	}
	return out, cat.HasAnyEndpoints
}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// clusterIPMatch is the match of a service port's ClusterIP traffic.
func clusterIPMatch(sp *endpoints.ServicePort) iptables.Rule {
	proto := protocolName(sp)
	return iptables.Rule{"-d", hostPrefix(sp.ClusterIP), "-p", proto, "-m", proto, "--dport", strconv.Itoa(int(sp.Port))}
}

// clusterIPRule is KUBE-SERVICES' jump to a service port's KUBE-SVC chain.
func clusterIPRule(sp *endpoints.ServicePort) iptables.Rule {
	r := iptables.Rule{"-m", "comment", "--comment", sp.Name.String() + " cluster IP"}
	r = append(r, clusterIPMatch(sp)...)
	return append(r, "-j", string(serviceChainName(sp.Name, protocolName(sp))))
}

// noEndpointsRule is the filter KUBE-SERVICES rule of a service port without usable
// endpoints: REJECT, or DROP when internalTrafficPolicy is Local and only other nodes have
// endpoints (as upstream: the client must not be told the service is gone).
func noEndpointsRule(sp *endpoints.ServicePort, anywhere bool) iptables.Rule {
	comment, target := sp.Name.String()+" has no endpoints", "REJECT"
	if anywhere && sp.InternalPolicyLocal {
		comment, target = sp.Name.String()+" has no local endpoints", "DROP"
	}
	r := iptables.Rule{"-m", "comment", "--comment", comment}
	r = append(r, clusterIPMatch(sp)...)
	return append(r, "-j", target)
}

// renderServicePort returns a service port's KUBE-SVC chain and its KUBE-SEP chains.
func renderServicePort(cfg Config, sp *endpoints.ServicePort, eps []endpoints.Endpoint) []ChainRules {
	name, proto := sp.Name.String(), protocolName(sp)
	svc := ChainRules{Chain: serviceChainName(sp.Name, proto)}
	masq := iptables.Rule{"-m", "comment", "--comment", name + " cluster IP"}
	cidr, haveCIDR := cfg.clusterCIDR()
	switch {
	case cfg.MasqueradeAll:
		svc.Rules = append(svc.Rules, slices.Concat(masq, clusterIPMatch(sp), jumpMarkMasq))
	case haveCIDR:
		svc.Rules = append(svc.Rules, slices.Concat(masq, iptables.Rule{"!", "-s", cidr.String()}, clusterIPMatch(sp), jumpMarkMasq))
	}
	seps := make([]ChainRules, 0, len(eps))
	for i, ep := range eps {
		sep := endpointChainName(sp.Name, proto, ep)
		jump := iptables.Rule{"-m", "comment", "--comment", name + " -> " + ep.String()}
		if left := len(eps) - i; left > 1 {
			jump = append(jump, "-m", "statistic", "--mode", "random", "--probability", fmt.Sprintf("%0.10f", 1.0/float64(left)))
		}
		svc.Rules = append(svc.Rules, append(jump, "-j", string(sep)))
		seps = append(seps, ChainRules{Chain: sep, Rules: []iptables.Rule{
			slices.Concat(iptables.Rule{"-m", "comment", "--comment", name, "-s", hostPrefix(ep.IP)}, jumpMarkMasq),
			{"-m", "comment", "--comment", name, "-p", proto, "-m", proto, "-j", "DNAT", "--to-destination", ep.String()},
		}})
	}
	return append([]ChainRules{svc}, seps...)
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
