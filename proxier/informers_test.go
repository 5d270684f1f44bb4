package proxier

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kproxy/kproxy/endpoints"
)

// slowTracker counts the objects it was handed, taking a little time for each, as a real
// tracker does at scale.
type slowTracker struct{ services, slices atomic.Int64 }

func (t *slowTracker) OnServiceAdd(*v1.Service) {
	time.Sleep(50 * time.Microsecond)
	t.services.Add(1)
}
func (t *slowTracker) OnServiceUpdate(_, _ *v1.Service) {}
func (t *slowTracker) OnServiceDelete(*v1.Service)      {}
func (t *slowTracker) OnEndpointSliceAdd(*discovery.EndpointSlice) {
	time.Sleep(50 * time.Microsecond)
	t.slices.Add(1)
}
func (t *slowTracker) OnEndpointSliceUpdate(_, _ *discovery.EndpointSlice) {}
func (t *slowTracker) OnEndpointSliceDelete(*discovery.EndpointSlice)      {}

// When Start returns, the tracker holds every Service and EndpointSlice that existed: the
// first sync is full and must not see part of them (it would delete the others' rules).
func TestFeedStartWaitsForHandlers(t *testing.T) {
	const n = 2000
	var objs []runtime.Object
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		objs = append(objs,
			&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}},
			&discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name,
				Labels: map[string]string{discovery.LabelServiceName: name}}, AddressType: discovery.AddressTypeIPv4})
	}
	tr := &slowTracker{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &Feed{Client: fake.NewClientset(objs...), NodeName: "node-1", Tracker: tr,
		OnNode: func(endpoints.NodeInfo) {}, Request: func() {}}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s, e := tr.services.Load(), tr.slices.Load(); s != n || e != n {
		t.Errorf("when Start returned the tracker had %d services and %d slices of %d", s, e, n)
	}
}
