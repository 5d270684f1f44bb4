package endpoints

import (
	"net/netip"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Labels kube-proxy's informers select on: objects carrying them are not kube-proxy's.
const (
	labelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	labelHeadless         = v1.IsHeadlessService
)

// maxSessionAffinitySeconds is the API's upper bound for sessionAffinityConfig timeoutSeconds.
const maxSessionAffinitySeconds = 86400

// servicePorts converts a Service into its programmable ports of the given family, keyed by
// name. It returns nil for a service kube-proxy does not program (ExternalName, headless, no
// cluster IP of the family, labelled with a service-proxy-name) and the invalid parts it
// skipped. A bad cluster IP skips the whole service; any other bad value skips only itself
// (a port, an address) or is zeroed (a node port).
func servicePorts(svc *v1.Service, family v1.IPFamily) (map[ServicePortName]*ServicePort, issues) {
	if svc == nil || svc.Spec.Type == v1.ServiceTypeExternalName {
		return nil, nil
	}
	if _, ok := svc.Labels[labelServiceProxyName]; ok {
		return nil, nil
	}
	var is issues
	clusterIP, ok := serviceClusterIP(svc, family, &is)
	if !ok {
		return nil, is
	}
	base := serviceBase(svc, family, &is)
	base.ClusterIP = clusterIP

	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	var ports map[ServicePortName]*ServicePort
	for i := range svc.Spec.Ports {
		sp, ok := convertServicePort(key, &svc.Spec.Ports[i], base, &is)
		if !ok {
			continue
		}
		if _, dup := ports[sp.Name]; dup {
			is.add(ReasonDuplicatePort, "port %q (%s) appears more than once; only the first is used",
				sp.Name.Port, sp.Protocol)
			continue
		}
		if ports == nil {
			ports = make(map[ServicePortName]*ServicePort, len(svc.Spec.Ports))
		}
		ports[sp.Name] = sp
	}
	return ports, is
}

// serviceClusterIP returns the service's cluster IP of the family. ok is false when the
// service is headless, has no cluster IP of the family, or has one that does not parse (then
// reported).
func serviceClusterIP(svc *v1.Service, family v1.IPFamily, is *issues) (netip.Addr, bool) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for i, s := range ips {
		switch s {
		case v1.ClusterIPNone:
			return netip.Addr{}, false
		case "":
			continue
		}
		a, ok := parseIP(s)
		if !ok {
			if i < len(svc.Spec.IPFamilies) && svc.Spec.IPFamilies[i] != family {
				continue // declared as the other family: not ours to judge
			}
			is.add(ReasonInvalidClusterIP, "clusterIP %q is not an IP address; service skipped", s)
			return netip.Addr{}, false
		}
		if familyOf(a) == family {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// serviceBase fills the fields every port of the service shares, except the cluster IP.
func serviceBase(svc *v1.Service, family v1.IPFamily, is *issues) *ServicePort {
	externalPolicyLocal := externallyAccessible(svc) &&
		svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal
	base := &ServicePort{
		ExternalIPs:              externalIPs(svc, family, is),
		LoadBalancerIPs:          loadBalancerIPs(svc, family, is),
		LoadBalancerSourceRanges: sourceRanges(svc, family, is),
		SessionAffinityTimeout:   sessionAffinityTimeout(svc, is),
		ExternalPolicyLocal:      externalPolicyLocal,
		InternalPolicyLocal: svc.Spec.InternalTrafficPolicy != nil &&
			*svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal,
	}
	if svc.Spec.Type == v1.ServiceTypeLoadBalancer && externalPolicyLocal {
		if p := svc.Spec.HealthCheckNodePort; p == 0 || validPort(p) {
			base.HealthCheckNodePort = p
		} else {
			is.add(ReasonInvalidHealthCheckPort, "healthCheckNodePort %d is out of range; ignored", p)
		}
	}
	if svc.Spec.TrafficDistribution != nil {
		base.TrafficDistribution = *svc.Spec.TrafficDistribution
	}
	return base
}

// convertServicePort returns a copy of base completed with one spec port, or false when the
// port cannot be programmed (reported).
func convertServicePort(key types.NamespacedName, p *v1.ServicePort, base *ServicePort, is *issues) (*ServicePort, bool) {
	proto, ok := knownProtocol(p.Protocol)
	if !ok {
		is.add(ReasonInvalidProtocol, "port %q: protocol %q is not TCP, UDP or SCTP; port skipped", p.Name, p.Protocol)
		return nil, false
	}
	if !validPort(p.Port) {
		is.add(ReasonInvalidPort, "port %q: %d is out of range; port skipped", p.Name, p.Port)
		return nil, false
	}
	nodePort := p.NodePort
	if nodePort != 0 && !validPort(nodePort) {
		is.add(ReasonInvalidNodePort, "port %q: nodePort %d is out of range; no node port", p.Name, nodePort)
		nodePort = 0
	}
	sp := *base
	sp.Name = ServicePortName{NamespacedName: key, Port: p.Name, Protocol: proto}
	sp.Port = p.Port
	sp.Protocol = proto
	sp.NodePort = nodePort
	return &sp, true
}

// externallyAccessible is upstream's apiservice.ExternallyAccessible: the service takes
// traffic from outside the cluster network.
func externallyAccessible(svc *v1.Service) bool {
	switch svc.Spec.Type {
	case v1.ServiceTypeNodePort, v1.ServiceTypeLoadBalancer:
		return true
	}
	return len(svc.Spec.ExternalIPs) > 0
}

func externalIPs(svc *v1.Service, family v1.IPFamily, is *issues) []netip.Addr {
	var out []netip.Addr
	for _, s := range svc.Spec.ExternalIPs {
		a, ok := parseIP(s)
		if !ok {
			is.add(ReasonInvalidExternalIP, "externalIP %q is not an IP address; skipped", s)
			continue
		}
		if familyOf(a) == family {
			out = append(out, a)
		}
	}
	return out
}

// loadBalancerIPs returns the VIP-mode ingress IPs: an ingress with ipMode Proxy is delivered
// to the node by the load balancer itself and needs no rule; a hostname-only ingress has none.
func loadBalancerIPs(svc *v1.Service, family v1.IPFamily, is *issues) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == v1.LoadBalancerIPModeProxy) {
			continue
		}
		a, ok := parseIP(ing.IP)
		if !ok {
			is.add(ReasonInvalidLoadBalancerIP, "load-balancer ingress IP %q is not an IP address; skipped", ing.IP)
			continue
		}
		if familyOf(a) == family {
			out = append(out, a)
		}
	}
	return out
}

func sourceRanges(svc *v1.Service, family v1.IPFamily, is *issues) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range svc.Spec.LoadBalancerSourceRanges {
		p, ok := parsePrefix(s)
		if !ok {
			is.add(ReasonInvalidSourceRange, "loadBalancerSourceRange %q is not a CIDR; skipped", s)
			continue
		}
		if familyOf(p.Addr()) == family {
			out = append(out, p)
		}
	}
	return out
}

// sessionAffinityTimeout is the ClientIP affinity timeout, 0 without ClientIP affinity. The
// API defaults the timeout to 3 hours; an out-of-range value is reported and defaulted too.
func sessionAffinityTimeout(svc *v1.Service, is *issues) time.Duration {
	if svc.Spec.SessionAffinity != v1.ServiceAffinityClientIP {
		return 0
	}
	secs := v1.DefaultClientIPServiceAffinitySeconds
	if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		if t := *c.ClientIP.TimeoutSeconds; t > 0 && t <= maxSessionAffinitySeconds {
			secs = t
		} else {
			is.add(ReasonInvalidSessionAffinity, "sessionAffinityConfig timeoutSeconds %d is out of range; using %d",
				t, v1.DefaultClientIPServiceAffinitySeconds)
		}
	}
	return time.Duration(secs) * time.Second
}
