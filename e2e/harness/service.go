package harness

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// CreateServiceObject creates svc as given (type, policies, labels, externalIPs...) and returns
// it with what the apiserver allocated (ClusterIP, NodePorts, healthCheckNodePort).
func (c *Cluster) CreateServiceObject(ctx context.Context, svc *corev1.Service) (*corev1.Service, error) {
	out, err := c.Client.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return out, nil
}

// UpdateService applies mutate to the current service and writes it back, retrying on
// conflicts. It returns the updated service.
func (c *Cluster) UpdateService(ctx context.Context, ns, name string, mutate func(*corev1.Service)) (*corev1.Service, error) {
	var out *corev1.Service
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(cur)
		out, err = c.Client.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update service %s/%s: %w", ns, name, err)
	}
	return out, nil
}

// SetLoadBalancerIngress writes status.loadBalancer.ingress of a service through the status
// subresource (there is no cloud controller in the sandbox).
func (c *Cluster) SetLoadBalancerIngress(ctx context.Context, ns, name string, ingress ...corev1.LoadBalancerIngress) (*corev1.Service, error) {
	var out *corev1.Service
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.LoadBalancer.Ingress = ingress
		out, err = c.Client.CoreV1().Services(ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("service %s/%s loadBalancer status: %w", ns, name, err)
	}
	return out, nil
}

// LBIngress is a load-balancer ingress entry with an IP and an ipMode (VIP: the proxy
// captures the IP; Proxy: it must not).
func LBIngress(ip string, mode corev1.LoadBalancerIPMode) corev1.LoadBalancerIngress {
	return corev1.LoadBalancerIngress{IP: ip, IPMode: ptr.To(mode)}
}

// EndpointState is the set of conditions of an endpoint.
type EndpointState int

// Endpoint states, as the EndpointSlice controller writes them.
const (
	// Ready: ready, serving, not terminating.
	Ready EndpointState = iota
	// Unready: not ready, not serving, not terminating (a failing readiness probe).
	Unready
	// TerminatingServing: not ready, serving, terminating (a pod being deleted that still
	// passes its readiness probe).
	TerminatingServing
	// TerminatingNotServing: not ready, not serving, terminating.
	TerminatingNotServing
)

// EndpointsIn is Endpoints with the conditions of state.
func EndpointsIn(state EndpointState, pods ...*Pod) []discoveryv1.Endpoint {
	eps := Endpoints(pods...)
	ready, serving, terminating := false, false, false
	switch state {
	case Ready:
		ready, serving = true, true
	case TerminatingServing:
		serving, terminating = true, true
	case TerminatingNotServing:
		terminating = true
	}
	for i := range eps {
		eps[i].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(serving), Terminating: ptr.To(terminating)}
	}
	return eps
}
