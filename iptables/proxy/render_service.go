package proxy

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// svcPlan is what upstream's syncProxyRules decides for one service port before writing its
// rules: which endpoints each traffic policy uses, which chains exist, and where traffic to
// each of the service's addresses goes.
type svcPlan struct {
	sp          *endpoints.ServicePort
	name, proto string

	clusterEPs, localEPs, allEPs []endpoints.Endpoint
	// hasEndpoints: a usable endpoint exists somewhere in the cluster.
	hasEndpoints bool

	clusterChain, localChain, extChain, fwChain iptables.Chain
	usesClusterChain, usesLocalChain            bool
	usesExtChain, usesFWChain                   bool

	internalChain                iptables.Chain // KUBE-SVC or KUBE-SVL
	hasInternal, hasExternal     bool
	lbChain                      iptables.Chain // KUBE-EXT or KUBE-FW
	internalTarget, internalNote string         // filter verdict and comment without endpoints
	externalTarget, externalNote string
}

// planServicePort categorises the endpoints and makes upstream's decisions.
func (r *renderer) planServicePort(sp *endpoints.ServicePort, eps []endpoints.Endpoint, node endpoints.NodeInfo) *svcPlan {
	proto := protocolName(sp)
	p := &svcPlan{
		sp: sp, name: sp.Name.String(), proto: proto,
		clusterChain: serviceChainName(sp.Name, proto), localChain: localChainName(sp.Name, proto),
		extChain: externalChainName(sp.Name, proto), fwChain: firewallChainName(sp.Name, proto),
	}
	eps = slices.DeleteFunc(slices.Clone(eps), func(ep endpoints.Endpoint) bool {
		return !r.cfg.ofFamily(ep.IP) || !validPort(ep.Port)
	})
	cat := endpoints.CategorizeEndpoints(eps, sp, node)
	usesCluster := !sp.InternalPolicyLocal || sp.ExternallyAccessible()
	usesLocal := sp.InternalPolicyLocal || (sp.ExternalPolicyLocal && sp.ExternallyAccessible())
	if usesCluster {
		p.clusterEPs = cat.Cluster
	}
	if usesLocal {
		p.localEPs = cat.Local
	}
	p.allEPs = cat.AllReachable
	p.hasEndpoints = cat.HasAnyEndpoints
	p.usesClusterChain = len(p.clusterEPs) > 0
	p.usesLocalChain = len(p.localEPs) > 0

	p.internalChain, p.hasInternal = p.clusterChain, p.hasEndpoints && p.usesClusterChain
	if sp.InternalPolicyLocal {
		p.internalChain, p.hasInternal = p.localChain, p.usesLocalChain
	}
	p.hasExternal = p.hasEndpoints
	if sp.ExternalPolicyLocal {
		p.hasExternal = p.usesLocalChain
	}
	p.usesExtChain = p.hasEndpoints && sp.ExternallyAccessible()
	p.lbChain = p.extChain
	p.usesFWChain = p.hasEndpoints && len(sp.LoadBalancerIPs) > 0 && len(sp.LoadBalancerSourceRanges) > 0
	if p.usesFWChain {
		p.lbChain = p.fwChain
	}
	p.decideFilterTargets(r)
	return p
}

// decideFilterTargets chooses what the filter table does with traffic nat did not capture:
// REJECT when the service has no endpoints at all, DROP when a Local policy has no local
// endpoint (the client must not think the service is gone).
func (p *svcPlan) decideFilterTargets(r *renderer) {
	if !p.hasEndpoints {
		note := p.name + " has no endpoints"
		p.internalTarget, p.internalNote = "REJECT", note
		p.externalTarget, p.externalNote = "REJECT", note
		return
	}
	if !p.hasInternal {
		p.internalTarget, p.internalNote = "DROP", p.name+" has no local endpoints"
		r.port.noLocalInternal++
	}
	if !p.hasExternal {
		p.externalTarget, p.externalNote = "DROP", p.name+" has no local endpoints"
		r.port.noLocalExternal++
	}
}

// servicePort renders everything of one service port: its captures in the shared chains, the
// filter rule for other ports of its ClusterIP, and its own chains.
func (r *renderer) servicePort(sp *endpoints.ServicePort, eps []endpoints.Endpoint, node endpoints.NodeInfo) *portRules {
	r.port = &portRules{clusterIP: sp.ClusterIP}
	defer func() { r.port = nil }()
	p := r.planServicePort(sp, eps, node)
	r.port.endpoints = len(p.allEPs)
	if r.rejects() {
		r.port.rejectOther.Rules = []iptables.Rule{{
			"-m", "comment", "--comment", sp.Name.NamespacedName.String() + " cluster IP: port not in use",
			"-d", hostPrefix(sp.ClusterIP), "-j", "REJECT"}}
	}
	r.captureClusterIP(p)
	r.captureExternalIPs(p)
	r.captureLoadBalancerIPs(p)
	r.captureNodePort(p)
	r.serviceChains(p)
	return r.port
}

// add appends a rule of the service port being rendered to one of the shared chains.
func (r *renderer) add(slot sharedSlot, rule iptables.Rule) {
	r.port.shared[slot].Rules = append(r.port.shared[slot].Rules, rule)
}

// portMatch is "-p proto -m proto --dport port".
func portMatch(proto string, port int32) iptables.Rule {
	return iptables.Rule{"-p", proto, "-m", proto, "--dport", strconv.Itoa(int(port))}
}

// destMatch is the match of traffic to addr on the service port.
func (p *svcPlan) destMatch(addr string) iptables.Rule {
	return append(iptables.Rule{"-d", addr}, portMatch(p.proto, p.sp.Port)...)
}

func comment(text string) iptables.Rule { return iptables.Rule{"-m", "comment", "--comment", text} }

func jump(c iptables.Chain) iptables.Rule { return iptables.Rule{"-j", string(c)} }

func (r *renderer) captureClusterIP(p *svcPlan) {
	dest := p.destMatch(hostPrefix(p.sp.ClusterIP))
	if p.hasInternal {
		r.add(slotNATServices, slices.Concat(comment(p.name+" cluster IP"), dest, jump(p.internalChain)))
		return
	}
	r.add(slotFilterServices, slices.Concat(comment(p.internalNote), dest, iptables.Rule{"-j", p.internalTarget}))
}

func (r *renderer) captureExternalIPs(p *svcPlan) {
	for _, ip := range p.sp.ExternalIPs {
		if !r.cfg.ofFamily(ip) {
			continue
		}
		dest := p.destMatch(hostPrefix(ip))
		if p.hasEndpoints {
			r.add(slotNATServices, slices.Concat(comment(p.name+" external IP"), dest, jump(p.extChain)))
		}
		if !p.hasExternal {
			r.add(slotFilterExternal, slices.Concat(comment(p.externalNote), dest, iptables.Rule{"-j", p.externalTarget}))
		}
	}
}

func (r *renderer) captureLoadBalancerIPs(p *svcPlan) {
	for _, ip := range p.sp.LoadBalancerIPs {
		if !r.cfg.ofFamily(ip) {
			continue
		}
		dest := p.destMatch(hostPrefix(ip))
		if p.hasEndpoints {
			r.add(slotNATServices, slices.Concat(comment(p.name+" loadbalancer IP"), dest, jump(p.lbChain)))
		}
		if p.usesFWChain {
			r.add(slotFilterFirewall, slices.Concat(
				comment(fmt.Sprintf("%s traffic not accepted by %s", p.name, p.fwChain)), dest, iptables.Rule{"-j", "DROP"}))
		}
	}
	if p.hasExternal {
		return
	}
	for _, ip := range p.sp.LoadBalancerIPs {
		if r.cfg.ofFamily(ip) {
			r.add(slotFilterExternal, slices.Concat(
				comment(p.externalNote), p.destMatch(hostPrefix(ip)), iptables.Rule{"-j", p.externalTarget}))
		}
	}
}

func (r *renderer) captureNodePort(p *svcPlan) {
	if np := p.sp.NodePort; validPort(np) {
		if p.hasEndpoints {
			r.add(slotNATNodePorts, slices.Concat(comment(p.name), portMatch(p.proto, np), jump(p.extChain)))
		}
		if !p.hasExternal {
			r.add(slotFilterExternal, slices.Concat(comment(p.externalNote),
				iptables.Rule{"-m", "addrtype", "--dst-type", "LOCAL"}, portMatch(p.proto, np), iptables.Rule{"-j", p.externalTarget}))
		}
	}
	if hc := p.sp.HealthCheckNodePort; validPort(hc) {
		r.add(slotFilterNodePorts, slices.Concat(comment(p.name+" health check node port"),
			portMatch("tcp", hc), iptables.Rule{"-j", "ACCEPT"}))
	}
}

// serviceChains renders the service port's own chains in upstream's order: KUBE-EXT, KUBE-FW,
// KUBE-SVC, KUBE-SVL, then one KUBE-SEP per endpoint reachable from this node.
func (r *renderer) serviceChains(p *svcPlan) {
	// The cache keeps the list for as long as the port exists: allocate it at its length.
	n := len(p.allEPs)
	for _, uses := range []bool{p.usesExtChain, p.usesFWChain, p.usesClusterChain, p.usesLocalChain} {
		if uses {
			n++
		}
	}
	chains := make([]ChainRules, 0, n)
	if p.usesExtChain {
		chains = append(chains, r.externalChain(p))
	}
	if p.usesFWChain {
		chains = append(chains, r.firewallChain(p))
	}
	if p.usesClusterChain {
		c := ChainRules{Chain: p.clusterChain}
		if !p.sp.InternalPolicyLocal {
			c.Rules = r.internalMasquerade(p)
		}
		c.Rules = append(c.Rules, r.endpointJumps(p, p.clusterEPs)...)
		chains = append(chains, c)
	}
	if p.usesLocalChain {
		c := ChainRules{Chain: p.localChain}
		if p.sp.InternalPolicyLocal {
			c.Rules = r.internalMasquerade(p)
		}
		c.Rules = append(c.Rules, r.endpointJumps(p, p.localEPs)...)
		chains = append(chains, c)
	}
	for _, ep := range p.allEPs {
		chains = append(chains, r.endpointChain(p, ep))
	}
	for i := range chains {
		chains[i].Service = p.sp.Name.NamespacedName
	}
	r.port.chains = chains
}

// internalMasquerade is the first rule of the internal traffic chain: mark for masquerade
// everything (--masquerade-all) or what does not come from a pod.
func (r *renderer) internalMasquerade(p *svcPlan) []iptables.Rule {
	if !p.hasInternal {
		return nil
	}
	match := slices.Concat(comment(p.name+" cluster IP"), p.destMatch(hostPrefix(p.sp.ClusterIP)))
	switch {
	case r.cfg.MasqueradeAll:
		return []iptables.Rule{slices.Concat(match, jumpMarkMasq)}
	case r.det.implemented():
		return []iptables.Rule{slices.Concat(match, r.det.ifNotLocal(), jumpMarkMasq)}
	}
	return nil
}

// externalChain is KUBE-EXT: with externalTrafficPolicy Cluster, masquerade and go to
// KUBE-SVC; with Local, short-circuit pod and node traffic to KUBE-SVC (as if it went out to
// the load balancer and came back) and send the rest to KUBE-SVL, keeping the source IP.
func (r *renderer) externalChain(p *svcPlan) ChainRules {
	c := ChainRules{Chain: p.extChain}
	if !p.sp.ExternalPolicyLocal {
		c.Rules = append(c.Rules, slices.Concat(comment("masquerade traffic for "+p.name+" external destinations"), jumpMarkMasq))
	} else {
		if r.det.implemented() && p.usesClusterChain {
			c.Rules = append(c.Rules, slices.Concat(comment("pod traffic for "+p.name+" external destinations"),
				r.det.ifLocal(), jump(p.clusterChain)))
		}
		c.Rules = append(c.Rules, slices.Concat(comment("masquerade LOCAL traffic for "+p.name+" external destinations"),
			iptables.Rule{"-m", "addrtype", "--src-type", "LOCAL"}, jumpMarkMasq))
		if p.usesClusterChain {
			c.Rules = append(c.Rules, slices.Concat(comment("route LOCAL traffic for "+p.name+" external destinations"),
				iptables.Rule{"-m", "addrtype", "--src-type", "LOCAL"}, jump(p.clusterChain)))
		}
	}
	switch {
	case p.hasExternal && p.sp.ExternalPolicyLocal:
		c.Rules = append(c.Rules, jump(p.localChain))
	case p.hasExternal && p.usesClusterChain:
		c.Rules = append(c.Rules, jump(p.clusterChain))
	}
	return c
}

// firewallChain is KUBE-FW: traffic to the load-balancer IPs from loadBalancerSourceRanges
// (and from the load-balancer IPs themselves when a range holds the node IP) goes on to
// KUBE-EXT; the rest falls through undNATed and KUBE-PROXY-FIREWALL drops it.
func (r *renderer) firewallChain(p *svcPlan) ChainRules {
	c := ChainRules{Chain: p.fwChain}
	note := comment(p.name + " loadbalancer IP")
	allowFromNode := false
	for _, cidr := range p.sp.LoadBalancerSourceRanges {
		if !cidr.IsValid() || !r.cfg.ofFamily(cidr.Addr()) {
			continue
		}
		c.Rules = append(c.Rules, slices.Concat(note, iptables.Rule{"-s", cidr.Masked().String()}, jump(p.extChain)))
		allowFromNode = allowFromNode || (r.cfg.NodeIP.IsValid() && cidr.Contains(r.cfg.NodeIP))
	}
	if allowFromNode {
		for _, ip := range p.sp.LoadBalancerIPs {
			if r.cfg.ofFamily(ip) {
				c.Rules = append(c.Rules, slices.Concat(note, iptables.Rule{"-s", hostPrefix(ip)}, jump(p.extChain)))
			}
		}
	}
	c.Rules = append(c.Rules, comment("other traffic to "+p.name+" will be dropped by KUBE-PROXY-FIREWALL"))
	return c
}

// endpointJumps are a policy chain's rules: with ClientIP affinity first one "recently seen
// this client" jump per endpoint, then the random spread, the i-th of n endpoints with
// probability 1/(n-i), the last always.
func (r *renderer) endpointJumps(p *svcPlan, eps []endpoints.Endpoint) []iptables.Rule {
	var rules []iptables.Rule
	if timeout := affinitySeconds(p.sp); timeout > 0 {
		for _, ep := range eps {
			sep := endpointChainName(p.sp.Name, p.proto, ep)
			rules = append(rules, slices.Concat(r.endpointComment(p.name+" -> "+ep.String()),
				iptables.Rule{"-m", "recent", "--name", string(sep), "--rcheck", "--seconds", strconv.Itoa(timeout), "--reap"},
				jump(sep)))
		}
	}
	for i, ep := range eps {
		rule := r.endpointComment(p.name + " -> " + ep.String())
		if left := len(eps) - i; left > 1 {
			rule = append(rule, "-m", "statistic", "--mode", "random", "--probability", probability(left))
		}
		rules = append(rules, append(rule, jump(endpointChainName(p.sp.Name, p.proto, ep))...))
	}
	return rules
}

// endpointChain is KUBE-SEP: mark hairpin traffic (the endpoint reaching itself) for
// masquerade, remember the client for affinity, DNAT.
func (r *renderer) endpointChain(p *svcPlan, ep endpoints.Endpoint) ChainRules {
	sep := endpointChainName(p.sp.Name, p.proto, ep)
	note := r.endpointComment(p.name)
	dnat := slices.Clone(note)
	if affinitySeconds(p.sp) > 0 {
		dnat = append(dnat, "-m", "recent", "--name", string(sep), "--set")
	}
	dnat = append(dnat, "-p", p.proto, "-m", p.proto, "-j", "DNAT", "--to-destination", ep.String())
	return ChainRules{Chain: sep, ruleList: ruleList{Rules: []iptables.Rule{
		slices.Concat(note, iptables.Rule{"-s", hostPrefix(ep.IP)}, jumpMarkMasq),
		dnat,
	}}}
}

// endpointComment is a per-endpoint rule's comment, left out in large-cluster mode.
func (r *renderer) endpointComment(text string) iptables.Rule {
	if r.large {
		return iptables.Rule{}
	}
	return comment(text)
}

// affinitySeconds is the ClientIP affinity timeout in whole seconds, 0 without affinity.
func affinitySeconds(sp *endpoints.ServicePort) int {
	if sp.SessionAffinityTimeout <= 0 {
		return 0
	}
	return max(1, int(sp.SessionAffinityTimeout.Seconds()))
}

// probabilities caches upstream's "%0.10f" of 1/n for small n.
var probabilities = func() []string {
	out := make([]string, 101)
	for n := 1; n < len(out); n++ {
		out[n] = fmt.Sprintf("%0.10f", 1.0/float64(n))
	}
	return out
}()

func probability(n int) string {
	if n < len(probabilities) {
		return probabilities[n]
	}
	return fmt.Sprintf("%0.10f", 1.0/float64(n))
}
