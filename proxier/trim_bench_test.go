package proxier

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/internal/memstat"
)

// BenchmarkStoredObjects is the memory an informer holds for each Service and EndpointSlice:
// 1,000 objects encoded as the apiserver sends them to kproxy (protobuf), decoded, passed
// through the transform (none, or Trim) and kept; the metric is the live heap they add, after
// a collection, per object. The objects are a ClusterIP Service with one port and a slice of
// 5 ready endpoints as the EndpointSlice controller writes them (managedFields, owner
// reference, each endpoint's targetRef and nodeName).
//
//	go test -run '^$' -bench StoredObjects -benchtime 3x ./proxier
func BenchmarkStoredObjects(b *testing.B) {
	const n = 1000
	codec := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	wire := map[string][][]byte{}
	for i := range n {
		for _, obj := range []kruntime.Object{benchService(i), benchSlice(i)} {
			var buf bytes.Buffer
			if err := codec.Encode(obj, &buf); err != nil {
				b.Fatal(err)
			}
			kind := "service"
			if _, ok := obj.(*discovery.EndpointSlice); ok {
				kind = "slice"
			}
			wire[kind] = append(wire[kind], buf.Bytes())
		}
	}
	for _, kind := range []string{"service", "slice"} {
		for _, transform := range []string{"none", "trim"} {
			b.Run(fmt.Sprintf("kind=%s/transform=%s", kind, transform), func(b *testing.B) {
				var perObject float64
				for b.Loop() {
					before := memstat.LiveHeap()
					kept := make([]any, 0, n)
					for _, w := range wire[kind] {
						decoded, _, err := codec.Decode(w, nil, nil)
						if err != nil {
							b.Fatal(err)
						}
						var obj any = decoded
						if transform == "trim" {
							if obj, err = Trim(decoded); err != nil {
								b.Fatal(err)
							}
						}
						kept = append(kept, obj)
					}
					perObject = float64(memstat.LiveHeap()-before) / n
					runtime.KeepAlive(kept)
				}
				b.ReportMetric(perObject, "stored-B/object")
			})
		}
	}
}

var benchManaged = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
	APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(strings.Repeat("f", 400))}}

func benchService(i int) *v1.Service {
	name := fmt.Sprintf("svc-%05d", i)
	ip := fmt.Sprintf("10.96.%d.%d", i/250, 1+i%250)
	return &v1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bench", UID: "6f1c1a9e-2a5e-4a53-9d0b-6d7e0f6a1b2c",
			ResourceVersion: fmt.Sprint(100000 + i), CreationTimestamp: metav1.Now(), ManagedFields: benchManaged},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol}, IPFamilyPolicy: ptr.To(v1.IPFamilyPolicySingleStack),
			SessionAffinity: v1.ServiceAffinityNone, InternalTrafficPolicy: ptr.To(v1.ServiceInternalTrafficPolicyCluster),
			Selector: map[string]string{"app": name},
			Ports:    []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
}

func benchSlice(i int) *discovery.EndpointSlice {
	name := fmt.Sprintf("svc-%05d", i)
	var eps []discovery.Endpoint
	for j := range 5 {
		eps = append(eps, discovery.Endpoint{Addresses: []string{fmt.Sprintf("10.244.%d.%d", i%250, 1+j)},
			Conditions: discovery.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(fmt.Sprintf("node-%d", j)),
			TargetRef:  &v1.ObjectReference{Kind: "Pod", Namespace: "bench", Name: fmt.Sprintf("%s-%d", name, j), UID: "0d6c6d35-52c4-4b8c-9a5e-0a8a8f1b0c11"}})
	}
	return &discovery.EndpointSlice{TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name + "-x7k2p", Namespace: "bench", UID: "6f1c1a9e-2a5e-4a53-9d0b-6d7e0f6a1b2c",
			ResourceVersion: fmt.Sprint(200000 + i), Generation: 1, CreationTimestamp: metav1.Now(), ManagedFields: benchManaged,
			Labels:          map[string]string{discovery.LabelServiceName: name, discovery.LabelManagedBy: "endpointslice-controller.k8s.io"},
			Annotations:     map[string]string{v1.EndpointsLastChangeTriggerTime: time.Now().UTC().Format(time.RFC3339)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: name, UID: "6f1c1a9e-2a5e-4a53-9d0b-6d7e0f6a1b2c"}}},
		AddressType: discovery.AddressTypeIPv4, Endpoints: eps,
		Ports: []discovery.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To(int32(8080))}}}
}

// nopTracker takes every event and keeps nothing.
type nopTracker struct{}

func (nopTracker) OnServiceAdd(*v1.Service)                            {}
func (nopTracker) OnServiceUpdate(_, _ *v1.Service)                    {}
func (nopTracker) OnServiceDelete(*v1.Service)                         {}
func (nopTracker) OnEndpointSliceAdd(*discovery.EndpointSlice)         {}
func (nopTracker) OnEndpointSliceUpdate(_, _ *discovery.EndpointSlice) {}
func (nopTracker) OnEndpointSliceDelete(*discovery.EndpointSlice)      {}

// BenchmarkFeedRetained is the memory the Feed itself keeps once it has delivered 10,000
// Services and 10,000 EndpointSlices (benchService, benchSlice) to a tracker that keeps
// nothing: the live heap after Start, less the live heap before it (which holds the fake
// clientset's own copies).
//
//	go test -run '^$' -bench FeedRetained -benchtime 3x ./proxier
func BenchmarkFeedRetained(b *testing.B) {
	const n = 10000
	objs := make([]kruntime.Object, 0, 2*n)
	for i := range n {
		objs = append(objs, benchService(i), benchSlice(i))
	}
	var retained float64
	for b.Loop() {
		client := fake.NewClientset(objs...)
		ctx, cancel := context.WithCancel(context.Background())
		before := memstat.LiveHeap()
		f := &Feed{Client: client, NodeName: "node-1", Tracker: nopTracker{},
			OnNode: func(endpoints.NodeInfo) {}, Request: func() {}}
		if err := f.Start(ctx); err != nil {
			b.Fatal(err)
		}
		retained = float64(memstat.LiveHeap()-before) / (1 << 20)
		runtime.KeepAlive(f)
		cancel()
	}
	b.ReportMetric(retained, "retained-MiB")
}
