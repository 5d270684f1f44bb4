package endpoints

import (
	"fmt"
	"net/netip"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ServicePortName identifies one port of one Service: the unit kube-proxy programs.
type ServicePortName struct {
	types.NamespacedName
	Port     string // the ServicePort's name ("" for an unnamed single port)
	Protocol v1.Protocol
}

// String gives kube-proxy's form: "ns/name:port" (the port part even when empty, as upstream).
func (n ServicePortName) String() string {
	return fmt.Sprintf("%s%s", n.NamespacedName.String(), fmtPortName(n.Port))
}

func fmtPortName(in string) string {
	if in == "" {
		return ""
	}
	return fmt.Sprintf(":%s", in)
}

// ServicePort is everything the backends need about one port of one Service. Values are
// immutable once handed out by a tracker: backends must not modify them.
type ServicePort struct {
	Name      ServicePortName
	ClusterIP netip.Addr // the primary-family cluster IP of the service
	Port      int32
	Protocol  v1.Protocol
	NodePort  int32 // 0 when none

	ExternalIPs              []netip.Addr
	LoadBalancerIPs          []netip.Addr // ingress IPs, without those with ipMode Proxy
	LoadBalancerSourceRanges []netip.Prefix

	// SessionAffinityTimeout is non-zero iff sessionAffinity is ClientIP.
	SessionAffinityTimeout time.Duration

	ExternalPolicyLocal bool // externalTrafficPolicy=Local and the service has external addresses
	InternalPolicyLocal bool // internalTrafficPolicy=Local
	HealthCheckNodePort int32
	TrafficDistribution string // spec.trafficDistribution, "" when unset
}

// Endpoint is one address:port of one ServicePort, folded from EndpointSlices.
type Endpoint struct {
	IP   netip.Addr
	Port int32

	Ready       bool
	Serving     bool
	Terminating bool

	NodeName string
	Zone     string
	// Hints are the endpoint's topology hints, nil when the slice gives none. A pointer, not
	// the two lists: the tracker keeps every endpoint twice, and most have no hints.
	Hints *Hints
}

// Hints are an endpoint's hints.forZones and hints.forNodes, by name.
type Hints struct {
	Zones []string
	Nodes []string
}

// ZoneHints are the endpoint's hints.forZones, nil without any.
func (e *Endpoint) ZoneHints() []string {
	if e.Hints == nil {
		return nil
	}
	return e.Hints.Zones
}

// NodeHints are the endpoint's hints.forNodes, nil without any.
func (e *Endpoint) NodeHints() []string {
	if e.Hints == nil {
		return nil
	}
	return e.Hints.Nodes
}

// String is "ip:port" ("[ip]:port" for IPv6).
func (e Endpoint) String() string { return netip.AddrPortFrom(e.IP, uint16(e.Port)).String() }

// ServiceMap is the set of programmable service ports.
type ServiceMap map[ServicePortName]*ServicePort

// EndpointsMap holds the endpoints of each service port, sorted by IP then port, deduplicated.
type EndpointsMap map[ServicePortName][]Endpoint

// NodeInfo is what categorisation needs to know about the node kproxy runs on.
type NodeInfo struct {
	Name string
	Zone string // topology.kubernetes.io/zone label of the node
}

// Snapshot is what a tracker hands to the reconciler at Checkout: the whole current state plus
// what changed since the previous Checkout.
type Snapshot struct {
	Services  ServiceMap
	Endpoints EndpointsMap

	// Changed holds every service whose Service or EndpointSlices changed since the last
	// Checkout (including deleted ones).
	Changed map[types.NamespacedName]struct{}
	// TriggerTimes are the endpoints.kubernetes.io/last-change-trigger-time values of the
	// EndpointSlice changes folded since the last Checkout, per service.
	TriggerTimes map[types.NamespacedName][]time.Time

	ServiceChanges  int // number of Service add/update/delete events folded since the last Checkout
	EndpointChanges int // number of EndpointSlice add/update/delete events folded since the last Checkout
}

// ExternallyAccessible reports whether traffic can reach the port from outside the cluster
// network: it has a node port, an external IP or a load-balancer IP (upstream's definition).
func (p *ServicePort) ExternallyAccessible() bool {
	return p.NodePort != 0 || len(p.ExternalIPs) > 0 || len(p.LoadBalancerIPs) > 0
}
