package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/bench/internal/kstate"
	"github.com/kproxy/kproxy/bench/internal/load"
)

// The load (bench/internal/load): N selector-less ClusterIP Services in namespace benchNS,
// TCP 80 → 8080, each with one EndpointSlice of E ready endpoints at load.EndpointAddr.
// 100.64.240.0/24 is kept for the one-change phase (changeAddr).
const (
	benchNS     = "kpb"
	servicePort = load.ServicePort
	targetPort  = 8080
)

// benchService is one Service of the load with its slice as last written.
type benchService struct {
	name  string
	vip   string
	eps   []string // "ip:port"
	slice *discoveryv1.EndpointSlice
}

func (s *benchService) ok(st kstate.State) bool {
	if !st.VIPs[s.vip] {
		return false
	}
	for _, e := range s.eps {
		if !st.Endpoints[e] {
			return false
		}
	}
	return true
}

// gone: neither the ClusterIP nor any endpoint of s is in st.
func (s *benchService) gone(st kstate.State) bool {
	if st.VIPs[s.vip] {
		return false
	}
	for _, e := range s.eps {
		if st.Endpoints[e] {
			return false
		}
	}
	return true
}

func changeAddr(k int) netip.Addr { return netip.AddrFrom4([4]byte{100, 64, 240, byte(1 + k%250)}) }

// addrsOf is the addresses of "ip:port" endpoints.
func addrsOf(eps []string) []string {
	addrs := make([]string, len(eps))
	for i, e := range eps {
		addrs[i] = netip.MustParseAddrPort(e).Addr().String()
	}
	return addrs
}

// loadServices creates n selector-less ClusterIP Services with e endpoints each (Service,
// then its EndpointSlice), in parallel.
func loadServices(ctx context.Context, cs kubernetes.Interface, n, e, workers int) ([]*benchService, error) {
	svcs := make([]*benchService, n)
	err := load.Parallel(0, n, workers, func(i int) error {
		bs := &benchService{name: fmt.Sprintf("svc-%05d", i)}
		for k := 0; k < e; k++ {
			bs.eps = append(bs.eps, netip.AddrPortFrom(load.EndpointAddr(i*e+k), targetPort).String())
		}
		vip, sl, err := load.CreateService(ctx, cs, benchNS, bs.name, targetPort, addrsOf(bs.eps))
		if err != nil {
			return err
		}
		bs.vip, bs.slice = vip, sl
		svcs[i] = bs
		return nil
	})
	return svcs, err
}

// changeEndpoint replaces the first endpoint of s with addr (one API write).
func changeEndpoint(ctx context.Context, cs kubernetes.Interface, s *benchService, addr string) error {
	eps := append([]string{addr}, s.eps[1:]...)
	sl := load.SliceFor(benchNS, s.name, targetPort, addrsOf(eps))
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
	return load.Parallel(0, len(svcs), workers, func(i int) error {
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
