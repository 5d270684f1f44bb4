package proxier

import (
	"context"
	"fmt"
	"slices"
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

// logTracker records the events it is handed, as "add ns/name@rv", "update ns/name@oldrv→rv"
// and "delete ns/name@rv", services prefixed "svc", slices "slice".
type logTracker struct {
	mu     sync.Mutex
	events []string
}

func (t *logTracker) log(kind, op string, old, cur metav1.Object) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := fmt.Sprintf("%s %s %s/%s@", kind, op, cur.GetNamespace(), cur.GetName())
	if old != nil {
		e += old.GetResourceVersion() + "→"
	}
	t.events = append(t.events, e+cur.GetResourceVersion())
}

func (t *logTracker) take() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.events
	t.events = nil
	return out
}

func (t *logTracker) OnServiceAdd(s *v1.Service)           { t.log("svc", "add", nil, s) }
func (t *logTracker) OnServiceUpdate(old, cur *v1.Service) { t.log("svc", "update", old, cur) }
func (t *logTracker) OnServiceDelete(s *v1.Service)        { t.log("svc", "delete", nil, s) }
func (t *logTracker) OnEndpointSliceAdd(s *discovery.EndpointSlice) {
	t.log("slice", "add", nil, s)
}
func (t *logTracker) OnEndpointSliceUpdate(old, cur *discovery.EndpointSlice) {
	t.log("slice", "update", old, cur)
}
func (t *logTracker) OnEndpointSliceDelete(s *discovery.EndpointSlice) {
	t.log("slice", "delete", nil, s)
}

func meta(name, rv string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv}
}

// The store under a Reflector hands the tracker what an informer's handlers would get:
// adds, updates with the version it had before, deletes, and on a relist the listed objects
// again and a delete for each object the list no longer holds. It keeps no object, so the
// old side of an update and a relist's delete are stubs with the name and resourceVersion.
func TestObjectStore(t *testing.T) {
	tr := &logTracker{}
	requests := 0
	s := newObjectStore("Service", func() *v1.Service { return &v1.Service{} }, storeHandlers[*v1.Service]{
		add: tr.OnServiceAdd, update: tr.OnServiceUpdate, remove: tr.OnServiceDelete, changed: func() { requests++ }})
	svc := func(name, rv string) *v1.Service { return &v1.Service{ObjectMeta: meta(name, rv)} }
	steps := []struct {
		do   func() error
		want []string
	}{
		{func() error { return s.Replace([]any{svc("a", "1"), svc("b", "2")}, "2") }, []string{"svc add ns/a@1", "svc add ns/b@2"}},
		{func() error { return s.Update(svc("a", "3")) }, []string{"svc update ns/a@1→3"}},
		{func() error { return s.Add(svc("c", "4")) }, []string{"svc add ns/c@4"}},
		{func() error { return s.Delete(svc("b", "5")) }, []string{"svc delete ns/b@5"}},
		{func() error { return s.Resync() }, nil},
		// A relist after a watch that could not resume: c was deleted and d created meanwhile.
		{func() error { return s.Replace([]any{svc("a", "3"), svc("d", "7")}, "8") }, []string{"svc update ns/a@3→3", "svc add ns/d@7", "svc delete ns/c@4"}},
		{func() error { return s.Add(svc("c", "9")) }, []string{"svc add ns/c@9"}},
	}
	for i, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if diff := cmp.Diff(step.want, tr.take()); diff != "" {
			t.Errorf("step %d: events (-want +got):\n%s", i, diff)
		}
	}
	if requests != 6 || !s.HasSynced() {
		t.Errorf("%d sync requests (want 6: one per event and per relist), HasSynced %v", requests, s.HasSynced())
	}
	if err := s.Add(&discovery.EndpointSlice{ObjectMeta: meta("x", "1")}); err == nil {
		t.Error("a Service store took an EndpointSlice")
	}
	if d := len(s.versions); d != 3 {
		t.Errorf("store remembers %d objects, want 3 (a, c, d)", d)
	}
}

// Through a clientset: the initial list skips services another proxy serves
// (service-proxy-name) and headless ones, and later writes reach the tracker as events.
func TestFeedDeliversEvents(t *testing.T) {
	client := fake.NewClientset(
		&v1.Service{ObjectMeta: meta("a", "")},
		&v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "other", Labels: map[string]string{LabelServiceProxyName: "other"}}},
		&discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a-1", Labels: map[string]string{discovery.LabelServiceName: "a"}}},
		&discovery.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "h-1", Labels: map[string]string{discovery.LabelServiceName: "h", LabelHeadless: ""}}})
	tr := &logTracker{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &Feed{Client: client, NodeName: "node-1", Tracker: tr, OnNode: func(endpoints.NodeInfo) {}, Request: func() {}}
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got := tr.take()
	slices.Sort(got)
	if diff := cmp.Diff([]string{"slice add ns/a-1@", "svc add ns/a@"}, got); diff != "" {
		t.Errorf("initial list (-want +got):\n%s", diff)
	}
	svcs := client.CoreV1().Services("ns")
	b, err := svcs.Create(ctx, &v1.Service{ObjectMeta: meta("b", "10")}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.ResourceVersion = "11"
	if _, err := svcs.Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := svcs.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"svc add ns/b@10", "svc update ns/b@10→11", "svc delete ns/a@"}
	deadline := time.Now().Add(5 * time.Second)
	for got = nil; len(got) < len(want) && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = append(got, tr.take()...)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("watch events (-want +got):\n%s", diff)
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
