package proxier

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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

// keepTracker keeps the last service and slice it was handed.
type keepTracker struct {
	mu    sync.Mutex
	svc   *v1.Service
	slice *discovery.EndpointSlice
}

func (t *keepTracker) OnServiceAdd(s *v1.Service) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.svc = s
}
func (t *keepTracker) OnServiceUpdate(_, _ *v1.Service) {}
func (t *keepTracker) OnServiceDelete(*v1.Service)      {}
func (t *keepTracker) OnEndpointSliceAdd(s *discovery.EndpointSlice) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.slice = s
}
func (t *keepTracker) OnEndpointSliceUpdate(_, _ *discovery.EndpointSlice) {}
func (t *keepTracker) OnEndpointSliceDelete(*discovery.EndpointSlice)      {}

// The informers store objects without managedFields, kubectl's last-applied copy or any
// other annotation (memory held for every object), but the slice's trigger time, which feeds
// the programming latency metric.
func TestFeedTrimsObjects(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate,
		FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:spec":{"f:ports":{}}}`)}}
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", ManagedFields: managed,
		Annotations: map[string]string{lastApplied: `{"kind":"Service"}`}}}
	slice := &discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-1", ManagedFields: managed,
		Labels:      map[string]string{discovery.LabelServiceName: "a"},
		Annotations: map[string]string{lastApplied: "{}", "example.com/note": "x", v1.EndpointsLastChangeTriggerTime: "2026-12-07T00:00:00Z"}},
		AddressType: discovery.AddressTypeIPv4}
	tr := &keepTracker{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &Feed{Client: fake.NewClientset(svc, slice), NodeName: "node-1", Tracker: tr,
		OnNode: func(endpoints.NodeInfo) {}, Request: func() {}}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.svc == nil || tr.slice == nil {
		t.Fatalf("tracker got service %v, slice %v", tr.svc, tr.slice)
	}
	if tr.svc.ManagedFields != nil || tr.svc.Annotations != nil {
		t.Errorf("service stored with managedFields %v, annotations %v", tr.svc.ManagedFields, tr.svc.Annotations)
	}
	want := map[string]string{v1.EndpointsLastChangeTriggerTime: "2026-12-07T00:00:00Z"}
	if tr.slice.ManagedFields != nil || !maps.Equal(tr.slice.Annotations, want) {
		t.Errorf("slice stored with managedFields %v, annotations %v; want none and %v", tr.slice.ManagedFields, tr.slice.Annotations, want)
	}
}

// Trim keeps what the tracker reads of an EndpointSlice (labels, the trigger-time annotation,
// ports, addresses, conditions, node, zone, hints) and drops the rest it never reads.
func TestTrimEndpointSlice(t *testing.T) {
	ready, name, port := true, "http", int32(8080)
	node, zone, host := "node-1", "zone-a", "pod-a"
	keep := func() *discovery.EndpointSlice {
		return &discovery.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "ns",
				Labels:      map[string]string{discovery.LabelServiceName: "web"},
				Annotations: map[string]string{v1.EndpointsLastChangeTriggerTime: "2026-12-07T05:00:00Z"}},
			AddressType: discovery.AddressTypeIPv4,
			Ports:       []discovery.EndpointPort{{Name: &name, Port: &port}},
			Endpoints: []discovery.Endpoint{{Addresses: []string{"100.64.1.2"}, Conditions: discovery.EndpointConditions{Ready: &ready},
				NodeName: &node, Zone: &zone, Hints: &discovery.EndpointHints{ForZones: []discovery.ForZone{{Name: zone}}}}},
		}
	}
	in := keep()
	in.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}}
	in.Annotations[lastApplied] = "{}"
	in.OwnerReferences = []metav1.OwnerReference{{Kind: "Service", Name: "web"}}
	in.Endpoints[0].TargetRef = &v1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "pod-a"}
	in.Endpoints[0].Hostname = &host
	in.Endpoints[0].DeprecatedTopology = map[string]string{"kubernetes.io/hostname": node}
	out, err := Trim(in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(keep(), out); diff != "" {
		t.Errorf("Trim (-want +got):\n%s", diff)
	}
}
