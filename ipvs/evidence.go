package ipvs

import (
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/ipset"
)

// setEvidence is what kube-proxy's sets say about which virtual servers are kproxy's (or
// kube-proxy's, which kproxy takes over): the ip,proto:port entries of KUBE-CLUSTER-IP,
// KUBE-EXTERNAL-IP(-LOCAL), KUBE-LOAD-BALANCER and KUBE-NODE-PORT-SCTP-HASH are virtual
// servers; the ports of the KUBE-NODE-PORT-TCP / -UDP bitmaps are node ports, virtual
// servers on the node's addresses. Read before the sets change, so that a service deleted
// while kproxy was down still has its virtual servers recognised.
type setEvidence struct {
	ipPorts   map[VSKey]bool
	nodePorts map[v1.Protocol]map[uint16]bool
}

// evidenceIPPortSets and evidenceNodePortSets are the sets read, by IPv4 name.
var (
	evidenceIPPortSets   = []string{ipset.KubeClusterIP, ipset.KubeExternalIP, ipset.KubeExternalIPLocal, ipset.KubeLoadBalancer, ipset.KubeNodePortSCTP}
	evidenceNodePortSets = map[string]v1.Protocol{ipset.KubeNodePortTCP: v1.ProtocolTCP, ipset.KubeNodePortUDP: v1.ProtocolUDP}
)

func newSetEvidence() *setEvidence {
	return &setEvidence{ipPorts: map[VSKey]bool{}, nodePorts: map[v1.Protocol]map[uint16]bool{}}
}

// evidenceSets returns the names of the sets to read for a family.
func evidenceSets(family ipset.Family) []string {
	var names []string
	for _, n := range evidenceIPPortSets {
		names = append(names, ipset.FamilyName(n, family))
	}
	for n := range evidenceNodePortSets {
		names = append(names, ipset.FamilyName(n, family))
	}
	slices.Sort(names)
	return names
}

// add records the entries of the set name (either family's name); other sets are ignored.
func (ev *setEvidence) add(name string, entries []ipset.Entry) {
	base := name
	if strings.HasPrefix(name, "KUBE-6-") {
		for _, n := range append(slices.Clone(evidenceIPPortSets), ipset.KubeNodePortTCP, ipset.KubeNodePortUDP) {
			if ipset.FamilyName(n, ipset.FamilyIPv6) == name {
				base = n
			}
		}
	}
	if proto, ok := evidenceNodePortSets[base]; ok {
		if ev.nodePorts[proto] == nil {
			ev.nodePorts[proto] = map[uint16]bool{}
		}
		for _, e := range entries {
			ev.nodePorts[proto][e.Port] = true
		}
		return
	}
	if !slices.Contains(evidenceIPPortSets, base) {
		return
	}
	for _, e := range entries {
		ev.ipPorts[VSKey{IP: e.IP, Port: e.Port, Protocol: v1.Protocol(strings.ToUpper(e.Protocol))}] = true
	}
}

// owns reports whether the sets name k as a service's virtual server; local are the node's
// addresses (node ports).
func (ev *setEvidence) owns(k VSKey, local []netip.Addr) bool {
	return ev.ipPorts[k] || ev.nodePorts[k.Protocol][k.Port] && slices.Contains(local, k.IP)
}
