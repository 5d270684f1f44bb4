package harness

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// ManagedBy is the endpointslice.kubernetes.io/managed-by value of the slices the harness
// writes (there is no EndpointSlice controller in the sandbox: tests write slices themselves).
const ManagedBy = "e2e.kproxy.io"

// EnsureNamespace creates a namespace if it does not exist. (There is no namespace controller:
// a deleted namespace would stay Terminating, so tests use fresh names instead of deleting.)
func (c *Cluster) EnsureNamespace(ctx context.Context, name string) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// ServicePort is a shorthand for a service port whose target port is the echo server's.
func ServicePort(name string, proto corev1.Protocol, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: proto, Port: port, TargetPort: intOrPort(EchoPort)}
}

// CreateService creates a selector-less ClusterIP Service and returns it (with its ClusterIP).
func (c *Cluster) CreateService(ctx context.Context, ns, name string, ports ...corev1.ServicePort) (*corev1.Service, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: ports},
	}
	out, err := c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create service %s/%s: %w", ns, name, err)
	}
	return out, nil
}

// Endpoints are ready endpoints for pods (nodeName and zone set).
func Endpoints(pods ...*Pod) []discoveryv1.Endpoint {
	eps := make([]discoveryv1.Endpoint, 0, len(pods))
	for _, p := range pods {
		eps = append(eps, discoveryv1.Endpoint{
			Addresses: []string{p.IP.String()},
			Conditions: discoveryv1.EndpointConditions{
				Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false),
			},
			NodeName: ptr.To(p.Node.Name),
			Zone:     ptr.To(p.Node.Zone),
		})
	}
	return eps
}

// EndpointPort is a slice port with the echo server's port.
func EndpointPort(name string, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Protocol: ptr.To(proto), Port: ptr.To(int32(EchoPort))}
}

// EndpointSlice builds the IPv4 slice `<service>-e2e` of a service. Like the EndpointSlice
// controller it stamps the endpoints.kubernetes.io/last-change-trigger-time annotation (now,
// RFC 3339 with nanoseconds), from which proxies measure the network programming latency.
func EndpointSlice(ns, service string, ports []discoveryv1.EndpointPort, eps []discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: service + "-e2e", Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: service,
			discoveryv1.LabelManagedBy:   ManagedBy,
		}, Annotations: map[string]string{
			corev1.EndpointsLastChangeTriggerTime: time.Now().UTC().Format(time.RFC3339Nano),
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

// ApplyEndpointSlice creates the slice, or replaces the existing one of the same name.
func (c *Cluster) ApplyEndpointSlice(ctx context.Context, s *discoveryv1.EndpointSlice) error {
	api := c.Client.DiscoveryV1().EndpointSlices(s.Namespace)
	cur, err := api.Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, s, metav1.CreateOptions{})
	case err == nil:
		s = s.DeepCopy()
		s.ResourceVersion = cur.ResourceVersion
		_, err = api.Update(ctx, s, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("endpointslice %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

// CreateServiceWithEndpoints creates a selector-less service with one TCP port 80 (name
// "tcp") and, if proto includes UDP, one UDP port 80 (name "udp"), both to the echo port,
// and its slice with the pods as endpoints.
func (c *Cluster) CreateServiceWithEndpoints(ctx context.Context, ns, name string, protos []corev1.Protocol, pods ...*Pod) (*corev1.Service, error) {
	var sps []corev1.ServicePort
	var eps []discoveryv1.EndpointPort
	for _, p := range protos {
		pn := map[corev1.Protocol]string{corev1.ProtocolTCP: "tcp", corev1.ProtocolUDP: "udp", corev1.ProtocolSCTP: "sctp"}[p]
		sps = append(sps, ServicePort(pn, p, 80))
		eps = append(eps, EndpointPort(pn, p))
	}
	svc, err := c.CreateService(ctx, ns, name, sps...)
	if err != nil {
		return nil, err
	}
	return svc, c.ApplyEndpointSlice(ctx, EndpointSlice(ns, name, eps, Endpoints(pods...)))
}

func intOrPort(p int) intstr.IntOrString { return intstr.FromInt32(int32(p)) }
