package ipvs

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/ipset"
)

// PlanInput is everything ComputePlan reads.
type PlanInput struct {
	Services  endpoints.ServiceMap
	Endpoints endpoints.EndpointsMap
	Node      endpoints.NodeInfo
	Config    Config
}

// PlannedVS is one desired virtual server and its real servers (all of weight 1).
type PlannedVS struct {
	VirtualServer
	// Service is the service port the virtual server belongs to.
	Service endpoints.ServicePortName
	// RealServers are the endpoints, sorted, without duplicates.
	RealServers []netip.AddrPort
}

// Plan is the whole desired state of the IPVS mode for one family.
type Plan struct {
	// VirtualServers, sorted by key. A key wanted by two service ports goes to the first by
	// name; the other is counted in Conflicts.
	VirtualServers []PlannedVS
	// Bind holds the addresses to bind on kube-ipvs0 (ClusterIPs, externalIPs and
	// load-balancer IPs that are not node addresses), sorted.
	Bind []netip.Addr
	// Sets holds kube-proxy's sets for the family (ipset.KubeSets order) with their entries.
	Sets []ipset.SetState
	// Chains holds the owned iptables chains in upstream's declaration order with their rules.
	Chains []ChainRules
	// Conflicts counts virtual servers dropped because another service port had the key.
	Conflicts int
	// NoLocalEndpointsInternal and NoLocalEndpointsExternal count the services with an
	// internal (external) traffic policy of Local that have endpoints, none of them on this
	// node: kubeproxy_sync_proxy_rules_no_local_endpoints_total, as upstream counts them.
	NoLocalEndpointsInternal, NoLocalEndpointsExternal int
}

// planner accumulates the plan; one per ComputePlan call.
type planner struct {
	in      PlanInput
	cfg     Config
	proto   string // lower-case protocol of the current service port
	vs      map[VSKey]*PlannedVS
	bind    map[netip.Addr]bool
	entries map[string][]ipset.Entry // by base (IPv4) set name
	// lbNoNodeAccess are load-balancer ip:port entries whose source ranges exclude the node.
	lbNoNodeAccess []ipset.Entry
	// shortcuts are the externalTrafficPolicy=Local addresses pod and node traffic reaches
	// through the ClusterIP (shortcut.go).
	shortcuts []shortcut
	conflicts int
	// noLocalInternal and noLocalExternal are the services counted in the Plan's
	// NoLocalEndpoints* (a service once, whatever its ports).
	noLocalInternal, noLocalExternal map[types.NamespacedName]bool
}

// ComputePlan computes the desired virtual servers, real servers, kube-ipvs0 addresses, set
// entries and iptables rules from the services and endpoints, as upstream's IPVS proxier
// would program them. It is pure.
func ComputePlan(in PlanInput) Plan {
	p := &planner{
		in: in, cfg: in.Config,
		vs: map[VSKey]*PlannedVS{}, bind: map[netip.Addr]bool{}, entries: map[string][]ipset.Entry{},
		noLocalInternal: map[types.NamespacedName]bool{}, noLocalExternal: map[types.NamespacedName]bool{},
	}
	names := make([]endpoints.ServicePortName, 0, len(in.Services))
	for name := range in.Services {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b endpoints.ServicePortName) int {
		return strings.Compare(a.String()+string(a.Protocol), b.String()+string(b.Protocol))
	})
	for _, name := range names {
		if sp := in.Services[name]; sp != nil && p.cfg.ofFamily(sp.ClusterIP) {
			p.addServicePort(sp)
		}
	}
	return p.finish()
}

// addServicePort plans one service port: upstream's loop body of syncProxyRules.
func (p *planner) addServicePort(sp *endpoints.ServicePort) {
	p.proto = strings.ToLower(string(sp.Protocol))
	eps := p.in.Endpoints[sp.Name]
	cat := endpoints.CategorizeEndpoints(eps, sp, p.in.Node)
	port := uint16(sp.Port)
	if cat.HasAnyEndpoints && len(cat.Local) == 0 {
		if sp.InternalPolicyLocal {
			p.noLocalInternal[sp.Name.NamespacedName] = true
		}
		if sp.ExternalPolicyLocal {
			p.noLocalExternal[sp.Name.NamespacedName] = true
		}
	}

	// hairpin: a local endpoint reaching itself through the service is masqueraded.
	for _, ep := range eps {
		if ep.NodeName != "" && ep.NodeName == p.in.Node.Name && p.cfg.ofFamily(ep.IP) {
			p.add(ipset.KubeLoopBack, ipset.Entry{IP: ep.IP, Protocol: p.proto, Port: uint16(ep.Port), IP2: ep.IP})
		}
	}

	p.add(ipset.KubeClusterIP, p.ipPort(sp.ClusterIP, port))
	p.addVS(sp, sp.ClusterIP, port, cat.Internal(sp))
	p.bind[sp.ClusterIP] = true

	for _, ip := range sp.ExternalIPs {
		if !p.cfg.ofFamily(ip) {
			continue
		}
		if sp.ExternalPolicyLocal {
			p.add(ipset.KubeExternalIPLocal, p.ipPort(ip, port))
		} else {
			p.add(ipset.KubeExternalIP, p.ipPort(ip, port))
		}
		p.addExternalVS(sp, ip, port, cat.External(sp))
		p.bindUnlessNodeIP(ip)
	}
	for _, ip := range sp.LoadBalancerIPs {
		if p.cfg.ofFamily(ip) {
			p.addLoadBalancerIP(sp, ip, cat.External(sp))
		}
	}
	if sp.NodePort != 0 {
		p.addNodePort(sp, cat.External(sp))
	}
	if sp.HealthCheckNodePort != 0 {
		p.add(ipset.KubeHealthCheckNodePort, ipset.Entry{Port: uint16(sp.HealthCheckNodePort)})
	}
}

func (p *planner) addLoadBalancerIP(sp *endpoints.ServicePort, ip netip.Addr, eps []endpoints.Endpoint) {
	port := uint16(sp.Port)
	e := p.ipPort(ip, port)
	p.add(ipset.KubeLoadBalancer, e)
	if sp.ExternalPolicyLocal {
		p.add(ipset.KubeLoadBalancerLocal, e)
	}
	if len(sp.LoadBalancerSourceRanges) > 0 {
		p.add(ipset.KubeLoadBalancerFW, e)
		allowFromNode := false
		for _, cidr := range sp.LoadBalancerSourceRanges {
			if !p.cfg.ofFamily(cidr.Addr()) || cidr.Bits() == 0 {
				continue // the kernel cannot store a /0 (upstream's validateEntry refuses it too)
			}
			p.add(ipset.KubeLoadBalancerSourceCIDR, ipset.Entry{IP: ip, Protocol: p.proto, Port: port, Net: cidr.Masked()})
			if p.cfg.NodeIP.IsValid() && cidr.Contains(p.cfg.NodeIP) {
				allowFromNode = true
			}
		}
		if allowFromNode {
			p.add(ipset.KubeLoadBalancerSourceIP, ipset.Entry{IP: ip, Protocol: p.proto, Port: port, IP2: ip})
		} else {
			p.lbNoNodeAccess = append(p.lbNoNodeAccess, e)
		}
	}
	p.addExternalVS(sp, ip, port, eps)
	p.bindUnlessNodeIP(ip)
}

func (p *planner) addNodePort(sp *endpoints.ServicePort, eps []endpoints.Endpoint) {
	var nodeIPs []netip.Addr
	for _, ip := range p.cfg.NodeIPs {
		if p.cfg.ofFamily(ip) && !ip.IsLoopback() {
			nodeIPs = append(nodeIPs, ip)
		}
	}
	if len(nodeIPs) == 0 {
		return // as upstream: no node address, no node port
	}
	port := uint16(sp.NodePort)
	set, local := "", ""
	var entries []ipset.Entry
	switch sp.Protocol {
	case v1.ProtocolTCP:
		set, local = ipset.KubeNodePortTCP, ipset.KubeNodePortLocalTCP
		entries = []ipset.Entry{{Port: port}}
	case v1.ProtocolUDP:
		set, local = ipset.KubeNodePortUDP, ipset.KubeNodePortLocalUDP
		entries = []ipset.Entry{{Port: port}}
	case v1.ProtocolSCTP:
		set, local = ipset.KubeNodePortSCTP, ipset.KubeNodePortLocalSCTP
		for _, ip := range nodeIPs {
			entries = append(entries, p.ipPort(ip, port))
		}
	default:
		return
	}
	p.add(set, entries...)
	if sp.ExternalPolicyLocal {
		p.add(local, entries...)
	}
	for _, ip := range nodeIPs {
		p.addExternalVS(sp, ip, port, eps)
	}
}

func (p *planner) ipPort(ip netip.Addr, port uint16) ipset.Entry {
	return ipset.Entry{IP: ip, Protocol: p.proto, Port: port}
}

func (p *planner) add(set string, es ...ipset.Entry) {
	p.entries[set] = append(p.entries[set], es...)
}

func (p *planner) bindUnlessNodeIP(ip netip.Addr) {
	if !slices.Contains(p.cfg.NodeIPs, ip) {
		p.bind[ip] = true
	}
}

// addExternalVS adds the virtual server of an external address (node port, externalIP,
// load-balancer IP) of sp, with the endpoints for external traffic; with
// externalTrafficPolicy=Local, also the shortcut that sends pod and node traffic for it to
// the ClusterIP (every endpoint).
func (p *planner) addExternalVS(sp *endpoints.ServicePort, ip netip.Addr, port uint16, eps []endpoints.Endpoint) {
	if p.addVS(sp, ip, port, eps) && sp.ExternalPolicyLocal {
		p.shortcuts = append(p.shortcuts, shortcut{
			from:    VSKey{IP: ip, Port: port, Protocol: sp.Protocol},
			to:      netip.AddrPortFrom(sp.ClusterIP, uint16(sp.Port)),
			service: sp.Name,
		})
	}
}

// addVS adds the virtual server ip:port of sp with the endpoints eps as real servers. It
// returns false when another service port already has the key.
func (p *planner) addVS(sp *endpoints.ServicePort, ip netip.Addr, port uint16, eps []endpoints.Endpoint) bool {
	key := VSKey{IP: ip, Port: port, Protocol: sp.Protocol}
	if _, dup := p.vs[key]; dup {
		p.conflicts++
		return false
	}
	vs := &PlannedVS{VirtualServer: VirtualServer{VSKey: key, Scheduler: p.cfg.scheduler()}, Service: sp.Name}
	if sp.SessionAffinityTimeout > 0 {
		vs.Flags |= FlagPersistent
		vs.Timeout = uint32(sp.SessionAffinityTimeout.Seconds())
	}
	if vs.Scheduler == "mh" {
		vs.Flags |= FlagSourceHash
	}
	for _, ep := range eps {
		if p.cfg.ofFamily(ep.IP) && ep.Port > 0 && ep.Port <= 65535 {
			vs.RealServers = append(vs.RealServers, netip.AddrPortFrom(ep.IP, uint16(ep.Port)))
		}
	}
	slices.SortFunc(vs.RealServers, netip.AddrPort.Compare)
	vs.RealServers = slices.Compact(vs.RealServers)
	p.vs[key] = vs
	return true
}

// finish sorts what was collected and renders the rules.
func (p *planner) finish() Plan {
	var plan Plan
	for _, vs := range p.vs {
		plan.VirtualServers = append(plan.VirtualServers, *vs)
	}
	slices.SortFunc(plan.VirtualServers, func(a, b PlannedVS) int { return compareVSKey(a.VSKey, b.VSKey) })
	for ip := range p.bind {
		plan.Bind = append(plan.Bind, ip)
	}
	slices.SortFunc(plan.Bind, netip.Addr.Compare)
	for _, ip := range plan.Bind {
		p.add(ipset.KubeIPVSIPs, ipset.Entry{IP: ip})
	}
	nonEmpty := map[string]bool{}
	for _, set := range ipset.KubeSets(ipset.FamilyIPv4) {
		es := sortedEntries(p.entries[set.Name])
		nonEmpty[set.Name] = len(es) > 0
		s := set
		if p.cfg.setFamily() == ipset.FamilyIPv6 {
			s = kubeSet(set.Name, ipset.FamilyIPv6)
		}
		plan.Sets = append(plan.Sets, ipset.SetState{Set: s, Entries: es})
	}
	slices.SortFunc(p.shortcuts, func(a, b shortcut) int { return compareVSKey(a.from, b.from) })
	plan.Chains = renderRules(p.cfg, ruleInput{
		nonEmpty: nonEmpty, lbNoNodeAccess: sortedEntries(p.lbNoNodeAccess), shortcuts: p.shortcuts,
	})
	plan.Conflicts = p.conflicts
	plan.NoLocalEndpointsInternal, plan.NoLocalEndpointsExternal = len(p.noLocalInternal), len(p.noLocalExternal)
	return plan
}

// kubeSet returns the kube-proxy set with the given IPv4 name, for family.
func kubeSet(name string, family ipset.Family) ipset.Set {
	for _, s := range ipset.KubeSets(family) {
		if s.Name == ipset.FamilyName(name, family) {
			return s
		}
	}
	return ipset.Set{}
}

// sortedEntries sorts by the `ipset list` form and drops duplicates.
func sortedEntries(es []ipset.Entry) []ipset.Entry {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b ipset.Entry) int { return cmp.Compare(a.String(), b.String()) })
	return slices.CompactFunc(es, func(a, b ipset.Entry) bool { return a.String() == b.String() })
}
