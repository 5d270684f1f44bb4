package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kproxy/kproxy/e2e/harness"
)

const (
	benchNS     = "kpb"
	servicePort = 80
	targetPort  = 8080
)

// benchService is one Service of the load with its slice as last written.
type benchService struct {
	name  string
	vip   string
	eps   []string // "ip:port"
	slice *discoveryv1.EndpointSlice
}

func (s *benchService) ok(st state) bool {
	if !st.vips[s.vip] {
		return false
	}
	for _, e := range s.eps {
		if !st.eps[e] {
			return false
		}
	}
	return true
}

// gone: neither the ClusterIP nor any endpoint of s is in st.
func (s *benchService) gone(st state) bool {
	if st.vips[s.vip] {
		return false
	}
	for _, e := range s.eps {
		if st.eps[e] {
			return false
		}
	}
	return true
}

// epBase is the first endpoint address: endpoints are 100.64.10.0 + k, unique over the load,
// in the cluster CIDR but on no node of the sandbox (nothing sends traffic to them).
// 100.64.240.0/24 is kept for the one-change phase.
var epBase = netip.MustParseAddr("100.64.10.0")

func endpointAddr(k int) netip.Addr {
	b := epBase.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func changeAddr(k int) netip.Addr { return netip.AddrFrom4([4]byte{100, 64, 240, byte(1 + k%250)}) }

// fastClient is an admin client with client-side rate limiting out of the way.
func fastClient(cfg *rest.Config, workers int) (kubernetes.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = 5000, 5000
	c.Timeout = 0
	// HTTP/2 multiplexes every worker's requests over one connection.
	_ = workers
	return kubernetes.NewForConfig(c)
}

func sliceFor(name string, eps []string) *discoveryv1.EndpointSlice {
	var endpoints []discoveryv1.Endpoint
	for _, e := range eps {
		ap := netip.MustParseAddrPort(e)
		endpoints = append(endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ap.Addr().String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	return harness.EndpointSlice(benchNS, name,
		[]discoveryv1.EndpointPort{{Name: ptr.To(""), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(targetPort))}},
		endpoints)
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// load creates n selector-less ClusterIP Services with e endpoints each (Service, then its
// EndpointSlice), in parallel.
func load(ctx context.Context, cs kubernetes.Interface, n, e, workers int) ([]*benchService, error) {
	svcs := make([]*benchService, n)
	err := parallel(n, workers, func(i int) error {
		name := fmt.Sprintf("svc-%05d", i)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{
				Protocol: corev1.ProtocolTCP, Port: servicePort, TargetPort: intstr.FromInt32(targetPort)}}},
		}
		out, err := cs.CoreV1().Services(benchNS).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create service %s: %w", name, err)
		}
		bs := &benchService{name: name, vip: out.Spec.ClusterIP}
		for k := 0; k < e; k++ {
			bs.eps = append(bs.eps, netip.AddrPortFrom(endpointAddr(i*e+k), targetPort).String())
		}
		sl, err := cs.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, sliceFor(name, bs.eps), metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create endpointslice %s: %w", name, err)
		}
		bs.slice = sl
		svcs[i] = bs
		return nil
	})
	return svcs, err
}

// changeEndpoint replaces the first endpoint of s with addr (one API write).
func changeEndpoint(ctx context.Context, cs kubernetes.Interface, s *benchService, addr string) error {
	eps := append([]string{addr}, s.eps[1:]...)
	sl := sliceFor(s.name, eps)
	sl.ResourceVersion = s.slice.ResourceVersion
	out, err := cs.DiscoveryV1().EndpointSlices(benchNS).Update(ctx, sl, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update endpointslice %s: %w", s.name, err)
	}
	s.slice, s.eps = out, eps
	return nil
}

// deleteAll deletes every Service and EndpointSlice of the load, in parallel.
func deleteAll(ctx context.Context, cs kubernetes.Interface, svcs []*benchService, workers int) error {
	return parallel(len(svcs), workers, func(i int) error {
		s := svcs[i]
		err1 := cs.CoreV1().Services(benchNS).Delete(ctx, s.name, metav1.DeleteOptions{})
		err2 := cs.DiscoveryV1().EndpointSlices(benchNS).Delete(ctx, s.slice.Name, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err1) {
			err1 = nil
		}
		if apierrors.IsNotFound(err2) {
			err2 = nil
		}
		return errors.Join(err1, err2)
	})
}
