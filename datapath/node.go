package datapath

import (
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
)

// NodeFromAPI converts a Node object into the plain values the plan needs. The node IP is
// the kproxy.io/public-ip annotation if set, else the first InternalIP (of the family of the
// first pod CIDR when there is one of each). Bad values are returned as an error naming the
// field; the caller skips that node and keeps the others.
func NodeFromAPI(n *v1.Node) (Node, error) {
	out := Node{Name: n.Name}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Node{}, fmt.Errorf("node %s: podCIDR %q: %w", n.Name, s, err)
		}
		out.PodCIDRs = append(out.PodCIDRs, p.Masked())
	}
	if s, ok := n.Annotations[AnnotationPublicIP]; ok {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return Node{}, fmt.Errorf("node %s: annotation %s %q: %w", n.Name, AnnotationPublicIP, s, err)
		}
		out.IP = ip.Unmap()
	} else {
		out.IP = internalIP(n, out.PodCIDRs)
	}
	if s, ok := n.Annotations[AnnotationVTEPMAC]; ok {
		m, err := ParseMAC(s)
		if err != nil {
			return Node{}, fmt.Errorf("node %s: annotation %s: %w", n.Name, AnnotationVTEPMAC, err)
		}
		out.VTEPMAC = m
	}
	return out, nil
}

func internalIP(n *v1.Node, cidrs []netip.Prefix) netip.Addr {
	var first netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		if len(cidrs) > 0 && ip.Is4() == cidrs[0].Addr().Is4() {
			return ip
		}
		if !first.IsValid() {
			first = ip
		}
	}
	return first
}

// Annotations returns the annotations self publishes for its peers (to be patched onto its
// Node object): the VTEP MAC of its VXLAN device, and its underlay IP.
func Annotations(p Plan) map[string]string {
	if p.Device == nil {
		return nil
	}
	a := map[string]string{AnnotationPublicIP: p.Device.Local.String()}
	if p.Device.Kind == KindVXLAN {
		a[AnnotationVTEPMAC] = p.Device.MAC.String()
	}
	return a
}
