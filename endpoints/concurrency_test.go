package endpoints

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/memstat"
)

// TestTrackerConcurrent folds events from several goroutines while another checks out and
// reads every value it gets (go test -race catches a value modified after it was handed out),
// then checks the final state and that every surviving service was reported as changed.
func TestTrackerConcurrent(t *testing.T) {
	const workers, perWorker = 8, 40
	tr := NewTracker(TrackerOptions{})
	seen := map[types.NamespacedName]struct{}{}
	collect := func(snap Snapshot) {
		for name := range snap.Changed {
			seen[name] = struct{}{}
		}
		for name, p := range snap.Services {
			if p.Name != name || !p.ClusterIP.IsValid() {
				t.Errorf("bad service port %v: %+v", name, p)
			}
		}
		for _, eps := range snap.Endpoints {
			for _, e := range eps {
				_ = e.String() + e.NodeName
			}
		}
	}

	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = tr.Pending()
			collect(tr.Checkout())
		}
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ns := fmt.Sprintf("ns%d", w)
			for i := range perWorker {
				svc := makeService(ns, fmt.Sprintf("svc%d", i))
				slice := makeSlice(ns, fmt.Sprintf("slice%d", i), svc.Name, "10.1.0.1", "10.1.0.2")
				tr.OnServiceAdd(svc)
				tr.OnEndpointSliceAdd(slice)
				tr.OnEndpointSliceUpdate(slice, makeSlice(ns, slice.Name, svc.Name, "10.1.0.3"))
				tr.OnServiceUpdate(svc, mutService(svc, func(s *v1.Service) { s.Spec.Ports[0].Port = 81 }))
				if i%4 == 0 {
					tr.OnEndpointSliceDelete(slice)
					tr.OnServiceDelete(svc)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-done
	final := tr.Checkout()
	collect(final)

	wantServices, wantEndpoints := 0, 0
	for w := range workers {
		for i := range perWorker {
			if i%4 == 0 {
				continue
			}
			key := nn(fmt.Sprintf("ns%d", w), fmt.Sprintf("svc%d", i))
			name := ServicePortName{NamespacedName: key, Port: "http", Protocol: v1.ProtocolTCP}
			wantServices++
			if p := final.Services[name]; p == nil || p.Port != 81 {
				t.Errorf("service %v: got %+v, want port 81", name, p)
			}
			wantEndpoints++
			if diff := cmp.Diff([]string{"10.1.0.3:8080"}, epStrings(final.Endpoints[name])); diff != "" {
				t.Errorf("endpoints of %v (-want +got):\n%s", name, diff)
			}
			if _, ok := seen[key]; !ok {
				t.Errorf("service %v never reported as changed", key)
			}
		}
	}
	if len(final.Services) != wantServices || len(final.Endpoints) != wantEndpoints {
		t.Errorf("final state has %d services and %d endpoint lists, want %d and %d",
			len(final.Services), len(final.Endpoints), wantServices, wantEndpoints)
	}
}

// BenchmarkTrackerCheckout measures one slice update plus one Checkout with 10,000 services
// of 5 endpoints each loaded: the cost the reconciler pays per sync at scale.
func BenchmarkTrackerCheckout(b *testing.B) {
	const services, perService = 10000, 5
	tr := NewTracker(TrackerOptions{})
	slices := make([]*discovery.EndpointSlice, services)
	for i := range services {
		svc := makeService("ns", fmt.Sprintf("svc%d", i), func(s *v1.Service) {
			ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String()
			s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip}
		})
		specs := make([]string, perService)
		for j := range specs {
			specs[j] = netip.AddrFrom4([4]byte{10, 1 + byte(j), byte(i >> 8), byte(i)}).String()
		}
		slices[i] = makeSlice("ns", fmt.Sprintf("svc%d-abcde", i), svc.Name, specs...)
		tr.OnServiceAdd(svc)
		tr.OnEndpointSliceAdd(slices[i])
	}
	tr.Checkout()

	i := 0
	b.ReportAllocs()
	for b.Loop() {
		old := slices[i%services]
		cur := mutSlice(old, func(s *discovery.EndpointSlice) {
			ready := s.Endpoints[0].Conditions.Ready
			s.Endpoints[0].Conditions.Ready = new(ready != nil && !*ready)
		})
		slices[i%services] = cur
		tr.OnEndpointSliceUpdate(old, cur)
		snap := tr.Checkout()
		if len(snap.Services) != services || len(snap.Changed) != 1 {
			b.Fatalf("snapshot has %d services, %d changed", len(snap.Services), len(snap.Changed))
		}
		i++
	}
}

// BenchmarkTrackerRetained is the memory a tracker holds, with its last snapshot, for 10,000
// services of 5 endpoints each (one slice each): the live heap they add, after a collection.
// The objects themselves are the informers' and not counted.
//
//	go test -run '^$' -bench TrackerRetained -benchtime 3x ./endpoints
func BenchmarkTrackerRetained(b *testing.B) {
	const services, perService = 10000, 5
	svcs := make([]*v1.Service, services)
	slices := make([]*discovery.EndpointSlice, services)
	for i := range services {
		svcs[i] = makeService("ns", fmt.Sprintf("svc%d", i), func(s *v1.Service) {
			ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String()
			s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip}
		})
		specs := make([]string, perService)
		for j := range specs {
			specs[j] = netip.AddrFrom4([4]byte{10, 1 + byte(j), byte(i >> 8), byte(i)}).String()
		}
		slices[i] = makeSlice("ns", fmt.Sprintf("svc%d-abcde", i), svcs[i].Name, specs...)
	}
	var retained float64
	for b.Loop() {
		before := memstat.LiveHeap()
		tr := NewTracker(TrackerOptions{})
		for i := range services {
			tr.OnServiceAdd(svcs[i])
			tr.OnEndpointSliceAdd(slices[i])
		}
		snap := tr.Checkout()
		retained = float64(memstat.LiveHeap()-before) / (1 << 20)
		runtime.KeepAlive(tr)
		runtime.KeepAlive(snap)
	}
	runtime.KeepAlive(svcs)
	runtime.KeepAlive(slices)
	b.ReportMetric(retained, "retained-MiB")
}
