package ipset

import "strings"

// The sets of kube-proxy's IPVS mode, with its names, types and comments, so that kproxy
// is a drop-in replacement (operators' scripts and `ipset list` keep working, and either
// proxy can take over the other's sets).
const (
	KubeLoopBack               = "KUBE-LOOP-BACK"
	KubeClusterIP              = "KUBE-CLUSTER-IP"
	KubeExternalIP             = "KUBE-EXTERNAL-IP"
	KubeExternalIPLocal        = "KUBE-EXTERNAL-IP-LOCAL"
	KubeLoadBalancer           = "KUBE-LOAD-BALANCER"
	KubeLoadBalancerLocal      = "KUBE-LOAD-BALANCER-LOCAL"
	KubeLoadBalancerFW         = "KUBE-LOAD-BALANCER-FW"
	KubeLoadBalancerSourceIP   = "KUBE-LOAD-BALANCER-SOURCE-IP"
	KubeLoadBalancerSourceCIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
	KubeNodePortTCP            = "KUBE-NODE-PORT-TCP"
	KubeNodePortLocalTCP       = "KUBE-NODE-PORT-LOCAL-TCP"
	KubeNodePortUDP            = "KUBE-NODE-PORT-UDP"
	KubeNodePortLocalUDP       = "KUBE-NODE-PORT-LOCAL-UDP"
	KubeNodePortSCTP           = "KUBE-NODE-PORT-SCTP-HASH"
	KubeNodePortLocalSCTP      = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
	KubeHealthCheckNodePort    = "KUBE-HEALTH-CHECK-NODE-PORT"
	KubeIPVSIPs                = "KUBE-IPVS-IPS"
)

// KubePrefix starts the name of every set kube-proxy (and kproxy) creates.
const KubePrefix = "KUBE-"

// kubeSets is upstream's ipsetInfo table (pkg/proxy/ipvs/proxier.go): name, type, comment.
var kubeSets = []Set{
	{Name: KubeLoopBack, Type: HashIPPortIP, Comment: "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"},
	{Name: KubeClusterIP, Type: HashIPPort, Comment: "Kubernetes service cluster ip + port for masquerade purpose"},
	{Name: KubeExternalIP, Type: HashIPPort, Comment: "Kubernetes service external ip + port for masquerade and filter purpose"},
	{Name: KubeExternalIPLocal, Type: HashIPPort, Comment: "Kubernetes service external ip + port with externalTrafficPolicy=local"},
	{Name: KubeLoadBalancer, Type: HashIPPort, Comment: "Kubernetes service lb portal"},
	{Name: KubeLoadBalancerFW, Type: HashIPPort, Comment: "Kubernetes service load balancer ip + port for load balancer with sourceRange"},
	{Name: KubeLoadBalancerLocal, Type: HashIPPort, Comment: "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"},
	{Name: KubeLoadBalancerSourceIP, Type: HashIPPortIP, Comment: "Kubernetes service load balancer ip + port + source IP for packet filter purpose"},
	{Name: KubeLoadBalancerSourceCIDR, Type: HashIPPortNet, Comment: "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"},
	{Name: KubeNodePortTCP, Type: BitmapPort, Comment: "Kubernetes nodeport TCP port for masquerade purpose"},
	{Name: KubeNodePortLocalTCP, Type: BitmapPort, Comment: "Kubernetes nodeport TCP port with externalTrafficPolicy=local"},
	{Name: KubeNodePortUDP, Type: BitmapPort, Comment: "Kubernetes nodeport UDP port for masquerade purpose"},
	{Name: KubeNodePortLocalUDP, Type: BitmapPort, Comment: "Kubernetes nodeport UDP port with externalTrafficPolicy=local"},
	{Name: KubeNodePortSCTP, Type: HashIPPort, Comment: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"},
	{Name: KubeNodePortLocalSCTP, Type: HashIPPort, Comment: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"},
	{Name: KubeHealthCheckNodePort, Type: BitmapPort, Comment: "Kubernetes health check node port"},
	{Name: KubeIPVSIPs, Type: HashIP, Comment: "Addresses on the ipvs interface"},
}

// KubeSets returns kube-proxy's IPVS-mode sets for one family, with defaults filled in
// and the names FamilyName gives. As upstream, the IPv6 proxier renames its bitmap:port
// sets too (KUBE-6-NODE-PORT-TCP), though they hold no addresses and have no family.
func KubeSets(family Family) []Set {
	out := make([]Set, 0, len(kubeSets))
	for _, s := range kubeSets {
		s.Name = FamilyName(s.Name, family)
		if s.Type.isHash() {
			s.Family = family
		}
		out = append(out, s.withDefaults())
	}
	return out
}

// FamilyName is the name of a set for a family, as upstream names them: IPv4 names are
// unchanged; IPv6 names starting with "KUBE-" start with "KUBE-6-" instead, cut to
// MaxNameLen ("KUBE-LOAD-BALANCER-SOURCE-CIDR" becomes "KUBE-6-LOAD-BALANCER-SOURCE-CID").
func FamilyName(name string, family Family) string {
	if family != FamilyIPv6 || !strings.HasPrefix(name, KubePrefix) {
		return name
	}
	name = "KUBE-6-" + strings.TrimPrefix(name, KubePrefix)
	if len(name) > MaxNameLen {
		name = name[:MaxNameLen]
	}
	return name
}
