package ipvs

import (
	"net/netip"
	"reflect"
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
	// delta, when not nil, says that this plan (from PlanCache.Plan) differs from the one
	// the same cache returned before only in the real servers of these virtual servers.
	delta []VSKey
	// NoLocalEndpointsInternal and NoLocalEndpointsExternal count the services with an
	// internal (external) traffic policy of Local that have endpoints, none of them on this
	// node: kubeproxy_sync_proxy_rules_no_local_endpoints_total, as upstream counts them.
	NoLocalEndpointsInternal, NoLocalEndpointsExternal int
}

// fragment is the plan of one service port, computed alone: PlanCache keeps it until the
// service changes, and merge combines the fragments of every service port in name order.
type fragment struct {
	// order is the port's sort key: the name in its String form plus the protocol.
	order   string
	service types.NamespacedName
	// vs are its virtual servers in the order they were planned, each with the
	// externalTrafficPolicy=Local shortcut that goes with it (zero when none).
	vs []fragmentVS
	// bind are the addresses it binds to kube-ipvs0 (duplicates allowed).
	bind []netip.Addr
	// entries are its set entries, each with its `ipset list` form (the sort key).
	entries []fragmentEntry
	// lbNoNodeAccess are its load-balancer ip:port entries whose source ranges exclude the
	// node.
	lbNoNodeAccess []keyedEntry
	// noLocalInternal and noLocalExternal: an internal (external) traffic policy of Local
	// with endpoints, none on this node.
	noLocalInternal, noLocalExternal bool
}

type fragmentVS struct {
	vs       PlannedVS
	shortcut *shortcut
}

type fragmentEntry struct {
	set string // IPv4 name
	keyedEntry
}

// keyedEntry is an entry and its `ipset list` form, computed once.
type keyedEntry struct {
	key string
	e   ipset.Entry
}

func newKeyedEntry(e ipset.Entry) keyedEntry { return keyedEntry{key: e.String(), e: e} }

// planner fills the fragment of one service port.
type planner struct {
	in    PlanInput
	cfg   Config
	proto string // lower-case protocol of the service port
	f     *fragment
}

// ComputePlan computes the desired virtual servers, real servers, kube-ipvs0 addresses, set
// entries and iptables rules from the services and endpoints, as upstream's IPVS proxier
// would program them. It is pure.
func ComputePlan(in PlanInput) Plan {
	var c PlanCache
	return c.Plan(in, nil)
}

// PlanCache computes plans incrementally: it keeps the fragment of every service port and
// recomputes only those of the services a sync names as changed, so a sync's planning
// costs O(changed services) plus a merge of cheap comparisons, not a replan of every service.
// When the recomputed fragments differ from their previous versions only in real servers
// (an endpoint change, the common case), the previous plan is patched instead of merged
// again, and the plan says which virtual servers changed (Plan.delta). The zero value is
// empty; the first Plan computes every fragment. Not safe for concurrent use.
type PlanCache struct {
	frags map[endpoints.ServicePortName]*fragment
	node  endpoints.NodeInfo
	cfg   *Config // the Config the fragments were computed with (compared by pointer target)
	last  *Plan   // the plan returned last (never modified afterwards)
}

// Plan returns ComputePlan(in). changed names the services whose Service or endpoints
// changed since the previous call; nil means every service (a full replan). The caller must
// pass nil whenever it cannot vouch for changed (after a failed sync, say).
func (c *PlanCache) Plan(in PlanInput, changed map[types.NamespacedName]struct{}) Plan {
	all := changed == nil || c.frags == nil || c.last == nil || c.node != in.Node || c.cfg == nil || !sameConfig(*c.cfg, in.Config)
	if all {
		c.frags = make(map[endpoints.ServicePortName]*fragment, len(in.Services))
		c.node, c.cfg = in.Node, &in.Config
	}
	reshaped := all // a fragment changed in more than its real servers
	for name := range c.frags {
		if _, ok := in.Services[name]; !ok {
			delete(c.frags, name)
			reshaped = true
		}
	}
	var replaced []fragmentChange
	for name, sp := range in.Services {
		old, cached := c.frags[name]
		if _, ok := changed[name.NamespacedName]; !ok && !all && cached {
			continue
		}
		f := planFragment(in, sp)
		c.frags[name] = f
		if !reshaped {
			if cached && sameShape(old, f) {
				replaced = append(replaced, fragmentChange{old, f})
			} else {
				reshaped = true
			}
		}
	}
	var plan Plan
	if reshaped {
		plan = merge(in.Config, c.frags)
	} else {
		plan = c.last.patch(replaced)
	}
	c.last = &plan
	return plan
}

// fragmentChange is a fragment recomputed with the same shape.
type fragmentChange struct{ old, cur *fragment }

// sameShape reports whether two fragments differ at most in their virtual servers' real
// servers.
func sameShape(a, b *fragment) bool {
	if a.order != b.order || a.noLocalInternal != b.noLocalInternal || a.noLocalExternal != b.noLocalExternal ||
		len(a.vs) != len(b.vs) || !slices.Equal(a.bind, b.bind) || !slices.Equal(a.entries, b.entries) ||
		!slices.Equal(a.lbNoNodeAccess, b.lbNoNodeAccess) {
		return false
	}
	for i := range a.vs {
		x, y := a.vs[i], b.vs[i]
		if x.vs.VirtualServer != y.vs.VirtualServer || x.vs.Service != y.vs.Service ||
			(x.shortcut == nil) != (y.shortcut == nil) || x.shortcut != nil && *x.shortcut != *y.shortcut {
			return false
		}
	}
	return true
}

// patch returns a copy of the plan with the real servers of the changed fragments' virtual
// servers (those each fragment won in merge), and delta naming the virtual servers whose real
// servers differ.
func (p *Plan) patch(changes []fragmentChange) Plan {
	out := *p
	out.VirtualServers = slices.Clone(p.VirtualServers)
	out.delta = []VSKey{}
	for _, ch := range changes {
		for i, fv := range ch.cur.vs {
			key := fv.vs.VSKey
			if slices.Equal(fv.vs.RealServers, ch.old.vs[i].vs.RealServers) ||
				slices.ContainsFunc(ch.cur.vs[:i], func(o fragmentVS) bool { return o.vs.VSKey == key }) {
				continue // unchanged, or a key the fragment already had (merge keeps the first)
			}
			j, found := slices.BinarySearchFunc(out.VirtualServers, key, func(vs PlannedVS, k VSKey) int { return compareVSKey(vs.VSKey, k) })
			if !found || out.VirtualServers[j].Service != fv.vs.Service {
				continue // another service port has the key
			}
			out.VirtualServers[j].RealServers = fv.vs.RealServers
			out.delta = append(out.delta, key)
		}
	}
	return out
}

// find returns the planned virtual server with the key.
func (p *Plan) find(key VSKey) (PlannedVS, bool) {
	j, found := slices.BinarySearchFunc(p.VirtualServers, key, func(vs PlannedVS, k VSKey) int { return compareVSKey(vs.VSKey, k) })
	if !found {
		return PlannedVS{}, false
	}
	return p.VirtualServers[j], true
}

// sameConfig reports whether two configs plan alike (every field but the sync knobs and the
// service ranges, which only ownership reads).
func sameConfig(a, b Config) bool {
	a.KernelCheckInterval, b.KernelCheckInterval = 0, 0
	a.ServiceCIDRs, b.ServiceCIDRs = nil, nil
	return reflect.DeepEqual(a, b)
}

// planFragment plans one service port; a port of another family has an empty fragment.
func planFragment(in PlanInput, sp *endpoints.ServicePort) *fragment {
	f := &fragment{}
	if sp == nil {
		return f
	}
	f.order, f.service = sp.Name.String()+string(sp.Name.Protocol), sp.Name.NamespacedName
	if in.Config.ofFamily(sp.ClusterIP) {
		p := &planner{in: in, cfg: in.Config, f: f}
		p.addServicePort(sp)
	}
	return f
}

// addServicePort plans one service port: upstream's loop body of syncProxyRules.
func (p *planner) addServicePort(sp *endpoints.ServicePort) {
	p.proto = strings.ToLower(string(sp.Protocol))
	eps := p.in.Endpoints[sp.Name]
	cat := endpoints.CategorizeEndpoints(eps, sp, p.in.Node)
	port := uint16(sp.Port)
	if cat.HasAnyEndpoints && len(cat.Local) == 0 {
		p.f.noLocalInternal = sp.InternalPolicyLocal
		p.f.noLocalExternal = sp.ExternalPolicyLocal
	}

	// hairpin: a local endpoint reaching itself through the service is masqueraded.
	for _, ep := range eps {
		if ep.NodeName != "" && ep.NodeName == p.in.Node.Name && p.cfg.ofFamily(ep.IP) {
			p.add(ipset.KubeLoopBack, ipset.Entry{IP: ep.IP, Protocol: p.proto, Port: uint16(ep.Port), IP2: ep.IP})
		}
	}

	p.add(ipset.KubeClusterIP, p.ipPort(sp.ClusterIP, port))
	p.addVS(sp, sp.ClusterIP, port, cat.Internal(sp), nil)
	p.f.bind = append(p.f.bind, sp.ClusterIP)

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
			p.f.lbNoNodeAccess = append(p.f.lbNoNodeAccess, newKeyedEntry(e))
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
	for _, e := range es {
		p.f.entries = append(p.f.entries, fragmentEntry{set: set, keyedEntry: newKeyedEntry(e)})
	}
}

func (p *planner) bindUnlessNodeIP(ip netip.Addr) {
	if !slices.Contains(p.cfg.NodeIPs, ip) {
		p.f.bind = append(p.f.bind, ip)
	}
}

// addExternalVS adds the virtual server of an external address (node port, externalIP,
// load-balancer IP) of sp, with the endpoints for external traffic; with
// externalTrafficPolicy=Local, also the shortcut that sends pod and node traffic for it to
// the ClusterIP (every endpoint).
func (p *planner) addExternalVS(sp *endpoints.ServicePort, ip netip.Addr, port uint16, eps []endpoints.Endpoint) {
	var sc *shortcut
	if sp.ExternalPolicyLocal {
		sc = &shortcut{
			from:    VSKey{IP: ip, Port: port, Protocol: sp.Protocol},
			to:      netip.AddrPortFrom(sp.ClusterIP, uint16(sp.Port)),
			service: sp.Name,
		}
	}
	p.addVS(sp, ip, port, eps, sc)
}

// addVS adds the virtual server ip:port of sp with the endpoints eps as real servers, and
// the shortcut sc that goes with it (nil for none). Whether another service port already
// has the key is merge's to decide.
func (p *planner) addVS(sp *endpoints.ServicePort, ip netip.Addr, port uint16, eps []endpoints.Endpoint, sc *shortcut) {
	key := VSKey{IP: ip, Port: port, Protocol: sp.Protocol}
	vs := PlannedVS{VirtualServer: VirtualServer{VSKey: key, Scheduler: p.cfg.scheduler()}, Service: sp.Name}
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
	p.f.vs = append(p.f.vs, fragmentVS{vs: vs, shortcut: sc})
}

// merge combines the fragments in service port name order (a virtual server key wanted
// twice goes to the first port, the others count as Conflicts), sorts what was collected
// and renders the rules.
func merge(cfg Config, frags map[endpoints.ServicePortName]*fragment) Plan {
	ordered := make([]*fragment, 0, len(frags))
	nVS, nBind := 0, 0
	for _, f := range frags {
		ordered = append(ordered, f)
		nVS, nBind = nVS+len(f.vs), nBind+len(f.bind)
	}
	slices.SortFunc(ordered, func(a, b *fragment) int { return strings.Compare(a.order, b.order) })

	var plan Plan
	taken := make(map[VSKey]bool, nVS)
	plan.VirtualServers = make([]PlannedVS, 0, nVS)
	bind := make(map[netip.Addr]bool, nBind)
	entries := map[string][]keyedEntry{}
	var lbNoNodeAccess []keyedEntry
	var shortcuts []shortcut
	noLocalInternal, noLocalExternal := map[types.NamespacedName]bool{}, map[types.NamespacedName]bool{}
	for _, f := range ordered {
		for _, fv := range f.vs {
			if taken[fv.vs.VSKey] {
				plan.Conflicts++
				continue
			}
			taken[fv.vs.VSKey] = true
			plan.VirtualServers = append(plan.VirtualServers, fv.vs)
			if fv.shortcut != nil {
				shortcuts = append(shortcuts, *fv.shortcut)
			}
		}
		for _, ip := range f.bind {
			bind[ip] = true
		}
		for _, e := range f.entries {
			entries[e.set] = append(entries[e.set], e.keyedEntry)
		}
		lbNoNodeAccess = append(lbNoNodeAccess, f.lbNoNodeAccess...)
		if f.noLocalInternal {
			noLocalInternal[f.service] = true
		}
		if f.noLocalExternal {
			noLocalExternal[f.service] = true
		}
	}
	slices.SortFunc(plan.VirtualServers, func(a, b PlannedVS) int { return compareVSKey(a.VSKey, b.VSKey) })
	plan.Bind = make([]netip.Addr, 0, len(bind))
	for ip := range bind {
		plan.Bind = append(plan.Bind, ip)
	}
	slices.SortFunc(plan.Bind, netip.Addr.Compare)
	for _, ip := range plan.Bind {
		entries[ipset.KubeIPVSIPs] = append(entries[ipset.KubeIPVSIPs], newKeyedEntry(ipset.Entry{IP: ip}))
	}
	nonEmpty := map[string]bool{}
	for _, set := range ipset.KubeSets(ipset.FamilyIPv4) {
		es := sortedEntries(entries[set.Name])
		nonEmpty[set.Name] = len(es) > 0
		s := set
		if cfg.setFamily() == ipset.FamilyIPv6 {
			s = kubeSet(set.Name, ipset.FamilyIPv6)
		}
		plan.Sets = append(plan.Sets, ipset.SetState{Set: s, Entries: es})
	}
	slices.SortFunc(shortcuts, func(a, b shortcut) int { return compareVSKey(a.from, b.from) })
	plan.Chains = renderRules(cfg, ruleInput{
		nonEmpty: nonEmpty, lbNoNodeAccess: sortedEntries(lbNoNodeAccess), shortcuts: shortcuts,
	})
	plan.NoLocalEndpointsInternal, plan.NoLocalEndpointsExternal = len(noLocalInternal), len(noLocalExternal)
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

// sortedEntries sorts by the `ipset list` form (computed once per entry) and drops
// duplicates.
func sortedEntries(es []keyedEntry) []ipset.Entry {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b keyedEntry) int { return strings.Compare(a.key, b.key) })
	es = slices.CompactFunc(es, func(a, b keyedEntry) bool { return a.key == b.key })
	out := make([]ipset.Entry, len(es))
	for i, e := range es {
		out[i] = e.e
	}
	return out
}
