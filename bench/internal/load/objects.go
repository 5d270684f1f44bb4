package load

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kproxy/kproxy/e2e/harness"
)

// ServicePort is the port of every Service the benchmarks create (TCP).
const ServicePort = 80

// FastClient is an admin client with client-side rate limiting out of the way. HTTP/2
// multiplexes every worker's requests over its one connection.
func FastClient(cfg *rest.Config) (kubernetes.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = 5000, 5000
	c.Timeout = 0
	return kubernetes.NewForConfig(c)
}

// SliceFor is the EndpointSlice of Service ns/name: one ready endpoint per address, one
// unnamed TCP port.
func SliceFor(ns, name string, port int32, addrs []string) *discoveryv1.EndpointSlice {
	var endpoints []discoveryv1.Endpoint
	for _, a := range addrs {
		endpoints = append(endpoints, discoveryv1.Endpoint{
			Addresses:  []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	return harness.EndpointSlice(ns, name,
		[]discoveryv1.EndpointPort{{Name: ptr.To(""), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(port)}},
		endpoints)
}

// CreateService creates a selector-less ClusterIP Service (ServicePort → target), then its
// slice (SliceFor), and returns the ClusterIP and the slice as created.
func CreateService(ctx context.Context, cs kubernetes.Interface, ns, name string, target int32, addrs []string) (string, *discoveryv1.EndpointSlice, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{
			Protocol: corev1.ProtocolTCP, Port: ServicePort, TargetPort: intstr.FromInt32(target)}}},
	}
	out, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("create service %s/%s: %w", ns, name, err)
	}
	sl, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, SliceFor(ns, name, target, addrs), metav1.CreateOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("create endpointslice %s/%s: %w", ns, name, err)
	}
	return out.Spec.ClusterIP, sl, nil
}
