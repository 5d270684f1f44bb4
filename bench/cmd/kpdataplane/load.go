package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kproxy/kproxy/e2e/harness"
)

// The background load, as kpbench's (bench/cmd/kpbench/load.go): selector-less ClusterIP
// Services, TCP 80 → 8080, each with one EndpointSlice of E ready endpoints at unique
// addresses 100.64.10.0 + k (cluster CIDR, on no node of the sandbox: nothing is sent to
// them), in namespace bgNS. The target Service is in targetNS.
const (
	bgNS         = "bg"
	targetNS     = "dp"
	servicePort  = 80
	bgTargetPort = 8080
	// serverPort is where the backend pod's server (-serve) listens; the target Service
	// maps port 80 to it.
	serverPort = 7790
)

var epBase = netip.MustParseAddr("100.64.10.0")

func endpointAddr(k int) netip.Addr {
	b := epBase.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// fastClient is an admin client with client-side rate limiting out of the way.
func fastClient(cfg *rest.Config) (kubernetes.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = 5000, 5000
	c.Timeout = 0
	return kubernetes.NewForConfig(c)
}

func sliceFor(ns, name string, port int32, addrs []string) *discoveryv1.EndpointSlice {
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

// createService creates a selector-less ClusterIP Service (port 80 → target) and its slice,
// and returns the ClusterIP.
func createService(ctx context.Context, cs kubernetes.Interface, ns, name string, target int32, addrs []string) (string, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{
			Protocol: corev1.ProtocolTCP, Port: servicePort, TargetPort: intstr.FromInt32(target)}}},
	}
	out, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create service %s/%s: %w", ns, name, err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, sliceFor(ns, name, target, addrs), metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create endpointslice %s/%s: %w", ns, name, err)
	}
	return out.Spec.ClusterIP, nil
}

// parallel runs fn(i) for i in [from, to) on workers goroutines and returns the first error.
func parallel(from, to, workers int, fn func(i int) error) error {
	var next atomic.Int64
	next.Store(int64(from))
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					next.Store(int64(to)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// background is the load written so far: every VIP and "ip:port" endpoint.
type background struct {
	mu   sync.Mutex
	n    int
	vips []string
	eps  []string
}

// grow creates Services n..to-1 (E endpoints each) with workers parallel writers.
func (b *background) grow(ctx context.Context, cs kubernetes.Interface, to, e, workers int) error {
	from := b.n
	vips := make([]string, to-from)
	err := parallel(from, to, workers, func(i int) error {
		var addrs []string
		for k := 0; k < e; k++ {
			addrs = append(addrs, endpointAddr(i*e+k).String())
		}
		vip, err := createService(ctx, cs, bgNS, fmt.Sprintf("svc-%05d", i), bgTargetPort, addrs)
		vips[i-from] = vip
		return err
	})
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.vips = append(b.vips, vips...)
	for i := from; i < to; i++ {
		for k := 0; k < e; k++ {
			b.eps = append(b.eps, netip.AddrPortFrom(endpointAddr(i*e+k), bgTargetPort).String())
		}
	}
	b.n = to
	return nil
}
