package proxy

import (
	"cmp"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// portCache keeps each service port's rendered and canonicalised rules (portRules) between
// syncs, so that a sync renders only the ports of the services that changed.
//
// A port is rendered again when its service is in the snapshot's Changed set, or when its
// *ServicePort or its endpoint slice is not the one it was rendered from (the tracker hands
// out immutable values, so an unchanged port keeps both; this catches a Changed set that
// misses something). Everything else a port's rules depend on is the same for every port:
// the Config (fixed for a Proxier but for its service CIDRs, of which a port's rules depend
// only on whether there are any: without, each ClusterIP has its own reject rule), the node
// and large-cluster mode. When one of these changes, every port is rendered again.
//
// The shared chains (nat KUBE-SERVICES, ...) are assembled from every port's rules in them;
// the cache keeps the last assembly and assembles again only when a port that changed has
// different rules there (or appeared, or is gone), or the node's NodePort addresses or the
// service CIDRs (the one Config field that changes, Proxier.SetServiceCIDRs) changed.
// The rule and chain counts are running totals.
//
// Per sync the cache costs one pass over the snapshot's service ports (a map lookup and two
// pointer comparisons each) plus rendering the changed ports; assembling the shared chains
// again costs one append per rule in them.
type portCache struct {
	node  endpoints.NodeInfo
	large bool
	// rejects is the renderer's: whether ports render their ClusterIP's reject rule.
	rejects bool
	ports   map[endpoints.ServicePortName]*cachedPort
	// sorted holds the entries of ports in service port name order.
	sorted []*cachedPort
	gen    uint64
	totals portTotals

	// shared is the last assembly of the shared chains (no service chains), from
	// nodePortIPs and serviceCIDRs; nil when a change made it stale.
	shared       *Rules
	nodePortIPs  []netip.Addr
	serviceCIDRs []netip.Prefix
}

// portTotals sums what the cached ports render.
type portTotals struct {
	servicePorts, endpoints, noLocalInternal, noLocalExternal int
	chains, rules                                             int
}

func (t *portTotals) add(pr *portRules, sign int) {
	if pr == nil {
		return
	}
	t.servicePorts += sign
	t.endpoints += sign * pr.endpoints
	t.noLocalInternal += sign * pr.noLocalInternal
	t.noLocalExternal += sign * pr.noLocalExternal
	t.chains += sign * len(pr.chains)
	for _, c := range pr.chains {
		t.rules += sign * len(c.lines)
	}
}

// cachedPort is one service port's rules and what they were rendered from.
type cachedPort struct {
	name  endpoints.ServicePortName
	sp    *endpoints.ServicePort
	eps   []endpoints.Endpoint
	rules *portRules
	// gen is the last update that saw the port in the snapshot; changed the last one whose
	// Changed set held its service.
	gen, changed uint64
}

// portChange is a service port rendered again (or gone) in one update: its chains before
// (old, nil for a new port) and after (cur, nil for a port that is gone).
type portChange struct {
	name     endpoints.ServicePortName
	old, cur *portRules
}

func newPortCache() *portCache {
	return &portCache{ports: map[endpoints.ServicePortName]*cachedPort{}}
}

// update brings the cache to in and returns the ports it rendered again (or dropped), in
// service port name order, and the renderer for in.
func (c *portCache) update(in Input, changed map[types.NamespacedName]struct{}) ([]portChange, *renderer) {
	c.gen++
	for nn := range changed {
		c.markChanged(nn)
	}
	type stale struct {
		name endpoints.ServicePortName
		sp   *endpoints.ServicePort
		eps  []endpoints.Endpoint
		e    *cachedPort
	}
	var todo []stale
	total, seen := 0, 0
	for name, sp := range in.Services {
		eps := in.Endpoints[name]
		total += len(eps)
		if !in.Config.ofFamily(sp.ClusterIP) || !validPort(sp.Port) {
			continue
		}
		seen++
		e := c.ports[name]
		if e != nil && e.changed != c.gen && e.sp == sp && sameSlice(e.eps, eps) {
			e.gen = c.gen
			continue
		}
		todo = append(todo, stale{name: name, sp: sp, eps: eps, e: e})
	}
	r := newRenderer(in.Config, total > largeClusterEndpoints)
	if in.Node != c.node || r.large != c.large || r.rejects() != c.rejects {
		// Every port renders differently: all of them again (keeping what they rendered
		// before, whose chains may have to go).
		c.node, c.large, c.rejects, c.shared = in.Node, r.large, r.rejects(), nil
		todo = todo[:0]
		for name, sp := range in.Services {
			if in.Config.ofFamily(sp.ClusterIP) && validPort(sp.Port) {
				todo = append(todo, stale{name: name, sp: sp, eps: in.Endpoints[name], e: c.ports[name]})
			}
		}
	}
	var out []portChange
	var added []*cachedPort
	for _, t := range todo {
		e := t.e
		if e == nil {
			e = &cachedPort{name: t.name}
			c.ports[t.name] = e
			added = append(added, e)
		}
		cur := r.servicePort(t.sp, t.eps, in.Node)
		cur.canonicalise(in.Config.Family)
		cur.dropChainRules()
		out = append(out, portChange{name: t.name, old: e.rules, cur: cur})
		e.sp, e.eps, e.rules, e.gen = t.sp, t.eps, cur, c.gen
	}
	removed := len(c.ports) - seen
	if removed > 0 {
		for name, e := range c.ports {
			if e.gen != c.gen {
				out = append(out, portChange{name: name, old: e.rules})
				delete(c.ports, name)
			}
		}
	}
	c.resort(added, removed)
	for _, ch := range out {
		c.totals.add(ch.old, -1)
		c.totals.add(ch.cur, 1)
		if !sameShared(ch.old, ch.cur) {
			c.shared = nil
		}
	}
	slices.SortFunc(out, func(a, b portChange) int { return compareServicePorts(a.name, b.name) })
	return out, r
}

// markChanged marks the cached ports of service nn (adjacent in sorted) as changed in this
// update.
func (c *portCache) markChanged(nn types.NamespacedName) {
	i, _ := slices.BinarySearchFunc(c.sorted, nn, func(e *cachedPort, nn types.NamespacedName) int {
		return cmp.Or(cmp.Compare(e.name.Namespace, nn.Namespace), cmp.Compare(e.name.Name, nn.Name))
	})
	for ; i < len(c.sorted) && c.sorted[i].name.NamespacedName == nn; i++ {
		c.sorted[i].changed = c.gen
	}
}

// resort keeps sorted in name order after added ports were put in and removed ones taken out
// of the map: a few are inserted or deleted in place, many mean a sort.
func (c *portCache) resort(added []*cachedPort, removed int) {
	if len(added) == 0 && removed == 0 {
		return
	}
	if len(added)+removed > 64 {
		c.sorted = c.sorted[:0]
		for _, e := range c.ports {
			c.sorted = append(c.sorted, e)
		}
		slices.SortFunc(c.sorted, func(a, b *cachedPort) int { return compareServicePorts(a.name, b.name) })
		return
	}
	if removed > 0 {
		c.sorted = slices.DeleteFunc(c.sorted, func(e *cachedPort) bool { return c.ports[e.name] != e })
	}
	for _, e := range added {
		i, _ := slices.BinarySearchFunc(c.sorted, e.name, func(x *cachedPort, n endpoints.ServicePortName) int {
			return compareServicePorts(x.name, n)
		})
		c.sorted = slices.Insert(c.sorted, i, e)
	}
}

// rules returns the rules of every cached port assembled with r, with each port's own chains
// when serviceChains is set, every rule canonicalised, and the rule counts.
func (c *portCache) rules(r *renderer, nodePortIPs []netip.Addr, serviceChains bool) (Rules, RuleCounts) {
	if c.shared == nil || !slices.Equal(c.nodePortIPs, nodePortIPs) || !slices.Equal(c.serviceCIDRs, r.cfg.ServiceCIDRs) {
		shared := r.assemble(c.all, nodePortIPs, assembleOptions{canon: canonicalRules(r.cfg.Family)})
		c.shared, c.nodePortIPs, c.serviceCIDRs = &shared, slices.Clone(nodePortIPs), slices.Clone(r.cfg.ServiceCIDRs)
	}
	out := *c.shared
	out.ServicePorts, out.Endpoints = c.totals.servicePorts, c.totals.endpoints
	out.NoLocalEndpointsInternal, out.NoLocalEndpointsExternal = c.totals.noLocalInternal, c.totals.noLocalExternal
	counts := RuleCounts{
		NATChains: len(out.NAT) + c.totals.chains, NATRules: c.totals.rules, FilterChains: len(out.Filter),
		NoLocalEndpointsInternal: out.NoLocalEndpointsInternal, NoLocalEndpointsExternal: out.NoLocalEndpointsExternal,
		LargeCluster: out.LargeCluster,
	}
	for _, ch := range out.NAT {
		counts.NATRules += len(ch.Rules)
	}
	for _, ch := range out.Filter {
		counts.FilterRules += len(ch.Rules)
	}
	if serviceChains {
		nat := make([]ChainRules, 0, len(out.NAT)+c.totals.chains)
		nat = append(nat, out.NAT...)
		for _, e := range c.sorted {
			nat = append(nat, e.rules.chains...)
		}
		out.NAT = nat
	}
	return out, counts
}

// sameShared reports whether two renderings of a port put the same rules into the shared
// chains (nil, a port that is new or gone, never does).
func sameShared(a, b *portRules) bool {
	if a == nil || b == nil || a.clusterIP != b.clusterIP || !sameRules(a.rejectOther, b.rejectOther) {
		return false
	}
	for slot := range a.shared {
		if !sameRules(a.shared[slot], b.shared[slot]) {
			return false
		}
	}
	return true
}

func sameRules(a, b ruleList) bool {
	return slices.EqualFunc(a.Rules, b.Rules, func(x, y iptables.Rule) bool { return slices.Equal(x, y) })
}

// all yields every port's rules in service port name order.
func (c *portCache) all(yield func(*portRules) bool) {
	for _, e := range c.sorted {
		if !yield(e.rules) {
			return
		}
	}
}

// sameSlice reports whether a and b are the same slice (same array, same length): what an
// unchanged port's endpoints are from one snapshot to the next.
func sameSlice(a, b []endpoints.Endpoint) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func compareServicePorts(a, b endpoints.ServicePortName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
}

// changedChains returns, for a partial sync, the per-service nat chains to compare with what
// the kernel holds (the changed ports' chains, in order) and the chains of those ports that
// are no longer rendered.
func changedChains(changes []portChange) (chains []ChainRules, gone []iptables.Chain) {
	for _, ch := range changes {
		if ch.cur != nil {
			chains = append(chains, ch.cur.chains...)
		}
	}
	for _, ch := range changes {
		if ch.old == nil {
			continue
		}
		for _, c := range ch.old.chains {
			if ch.cur == nil || !slices.ContainsFunc(ch.cur.chains, func(n ChainRules) bool { return n.Chain == c.Chain }) {
				gone = append(gone, c.Chain)
			}
		}
	}
	return chains, gone
}
