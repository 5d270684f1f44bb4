package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/ipvs"
)

// ipvsInspector is kproxy inspect in IPVS mode: the virtual servers and real servers, the
// kube-ipvs0 addresses and the KUBE- ipset entries of a service port that the IPVS plan
// wants, next to the kernel's (read over netlink: moby/ipvs through the ipvs package, the
// ipset package).
type ipvsInspector struct {
	cfg   ipvs.Config
	ipvs  ipvs.IPVS
	links ipvs.Links
	sets  ipset.Interface

	snap    endpoints.Snapshot
	plan    ipvs.Plan
	kernel  map[ipvs.VSKey]ipvs.VirtualServer
	bound   []netip.Addr
	entries map[string][]ipset.Entry // kernel entries by set name
}

func (m *ipvsInspector) Name() string { return "ipvs" }

func (m *ipvsInspector) Load(ctx context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo) error {
	m.snap = snap
	m.plan = ipvs.ComputePlan(ipvs.PlanInput{Services: snap.Services, Endpoints: snap.Endpoints, Node: node, Config: m.cfg})
	vss, err := m.ipvs.ListVirtualServers(ctx)
	if err != nil {
		return fmt.Errorf("list IPVS virtual servers: %w", err)
	}
	m.kernel = map[ipvs.VSKey]ipvs.VirtualServer{}
	for _, vs := range vss {
		m.kernel[vs.VSKey] = vs
	}
	m.bound, err = m.links.ListAddrs(ctx, ipvs.DummyDevice)
	if err != nil && !errors.Is(err, ipvs.ErrNotFound) {
		return fmt.Errorf("list the addresses of %s: %w", ipvs.DummyDevice, err)
	}
	m.entries = map[string][]ipset.Entry{}
	for _, s := range m.plan.Sets {
		es, err := m.sets.ListEntries(ctx, s.Set.Name)
		if err != nil && !errors.Is(err, ipset.ErrNotFound) {
			return fmt.Errorf("list ipset %s: %w", s.Set.Name, err)
		}
		m.entries[s.Set.Name] = es
	}
	return nil
}

// portKeys are the virtual server keys a service port can have: its addresses at its port,
// and the node IPs at its node port.
func (m *ipvsInspector) portKeys(sp *endpoints.ServicePort) map[ipvs.VSKey]bool {
	keys := map[ipvs.VSKey]bool{}
	for _, a := range slices.Concat([]netip.Addr{sp.ClusterIP}, sp.ExternalIPs, sp.LoadBalancerIPs) {
		keys[ipvs.VSKey{IP: a, Port: uint16(sp.Port), Protocol: sp.Protocol}] = true
	}
	if sp.NodePort != 0 {
		for _, a := range m.cfg.NodeIPs {
			keys[ipvs.VSKey{IP: a, Port: uint16(sp.NodePort), Protocol: sp.Protocol}] = true
		}
	}
	return keys
}

func (m *ipvsInspector) Port(sp *endpoints.ServicePort) (expected, kernel []section, targets []string) {
	keys := m.portKeys(sp)
	for _, pv := range m.plan.VirtualServers {
		if pv.Service != sp.Name {
			continue
		}
		keys[pv.VSKey] = true
		lines := []string{"virtual server " + pv.String()}
		for _, rs := range pv.RealServers {
			lines = append(lines, ipvs.RealServer{Addr: rs, Weight: 1}.String())
		}
		expected = append(expected, section{Name: "IPVS " + pv.VSKey.String(), Lines: lines})
	}
	for _, key := range slices.SortedFunc(mapsKeys(keys), func(a, b ipvs.VSKey) int { return strings.Compare(a.String(), b.String()) }) {
		vs, ok := m.kernel[key]
		if !ok {
			continue
		}
		lines := []string{"virtual server " + vs.String()}
		rss, err := m.ipvs.ListRealServers(context.Background(), key)
		if err != nil {
			lines = append(lines, "error listing real servers: "+err.Error())
		}
		for _, rs := range rss {
			if rs.Weight == 0 {
				targets = append(targets, fmt.Sprintf("%s → %s weight 0: draining (active %d, inactive %d)", key, rs.Addr, rs.ActiveConn, rs.InactiveConn))
				continue
			}
			lines = append(lines, rs.String())
			targets = append(targets, fmt.Sprintf("%s → %s weight %d (active %d, inactive %d)", key, rs.Addr, rs.Weight, rs.ActiveConn, rs.InactiveConn))
		}
		kernel = append(kernel, section{Name: "IPVS " + key.String(), Lines: lines})
	}

	addrs := slices.Concat([]netip.Addr{sp.ClusterIP}, sp.ExternalIPs, sp.LoadBalancerIPs)
	bind := func(list []netip.Addr) []string {
		var out []string
		for _, a := range list {
			if slices.Contains(addrs, a) {
				out = append(out, a.String())
			}
		}
		return out
	}
	if b := bind(m.plan.Bind); len(b) > 0 {
		expected = append(expected, section{Name: ipvs.DummyDevice, Lines: b})
	}
	if b := bind(m.bound); len(b) > 0 {
		kernel = append(kernel, section{Name: ipvs.DummyDevice, Lines: b})
	}

	relevant := m.relevantEntry(sp)
	for _, s := range m.plan.Sets {
		pick := func(es []ipset.Entry) []string {
			var out []string
			for _, e := range es {
				if relevant(s.Set.Name, e) {
					out = append(out, e.String())
				}
			}
			slices.Sort(out)
			return out
		}
		if want := pick(s.Entries); len(want) > 0 {
			expected = append(expected, section{Name: "ipset " + s.Set.Name, Lines: want})
		}
		if got := pick(m.entries[s.Set.Name]); len(got) > 0 {
			kernel = append(kernel, section{Name: "ipset " + s.Set.Name, Lines: got})
		}
	}
	return expected, kernel, targets
}

// relevantEntry says whether a set entry is about the service port: its addresses at its
// port, its node port in the node port sets of its protocol, its endpoints in KUBE-LOOP-BACK.
func (m *ipvsInspector) relevantEntry(sp *endpoints.ServicePort) func(set string, e ipset.Entry) bool {
	addrs := slices.Concat([]netip.Addr{sp.ClusterIP}, sp.ExternalIPs, sp.LoadBalancerIPs)
	proto := strings.ToLower(string(sp.Protocol))
	eps := map[netip.AddrPort]bool{}
	for _, ep := range m.snap.Endpoints[sp.Name] {
		eps[netip.AddrPortFrom(ep.IP, uint16(ep.Port))] = true
	}
	return func(set string, e ipset.Entry) bool {
		switch {
		case strings.HasPrefix(set, ipset.KubeLoopBack):
			return e.Protocol == proto && eps[netip.AddrPortFrom(e.IP, e.Port)]
		case strings.Contains(set, "NODE-PORT"):
			return sp.NodePort != 0 && int32(e.Port) == sp.NodePort && strings.Contains(set, strings.ToUpper(proto))
		case strings.HasPrefix(set, ipset.KubeHealthCheckNodePort):
			return sp.HealthCheckNodePort != 0 && int32(e.Port) == sp.HealthCheckNodePort
		}
		return e.IP.IsValid() && slices.Contains(addrs, e.IP) && int32(e.Port) == sp.Port && e.Protocol == proto
	}
}

// Trace is not available in IPVS mode: the tracer models iptables only.
func (m *ipvsInspector) Trace(netip.Addr, netip.Addr, int32, v1.Protocol) ([]string, error) {
	return nil, errors.New("--source traces iptables mode only")
}
