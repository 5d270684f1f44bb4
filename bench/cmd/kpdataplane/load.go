package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/bench/internal/load"
)

// The background load, as kpbench's (bench/internal/load): selector-less ClusterIP
// Services, TCP 80 → 8080, each with one EndpointSlice of E ready endpoints at unique
// addresses 100.64.10.0 + k (cluster CIDR, on no node of the sandbox: nothing is sent to
// them), in namespace bgNS. The target Service is in targetNS.
const (
	bgNS         = "bg"
	targetNS     = "dp"
	bgTargetPort = 8080
	// serverPort is where the backend pod's server (-serve) listens; the target Service
	// maps port 80 to it.
	serverPort = 7790
)

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
	err := load.Parallel(from, to, workers, func(i int) error {
		var addrs []string
		for k := 0; k < e; k++ {
			addrs = append(addrs, load.EndpointAddr(i*e+k).String())
		}
		vip, _, err := load.CreateService(ctx, cs, bgNS, fmt.Sprintf("svc-%05d", i), bgTargetPort, addrs)
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
			b.eps = append(b.eps, netip.AddrPortFrom(load.EndpointAddr(i*e+k), bgTargetPort).String())
		}
	}
	b.n = to
	return nil
}
