package proxier

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/internal/apifuzz"
)

// FuzzTrimKeepsWhatTheTrackerSees checks Trim against the tracker, its only reader: for any
// sequence of Service and EndpointSlice events (internal/apifuzz: real and malformed objects,
// or byte programs), a tracker fed the objects as Trim stores them (the old version of an
// update too, as an informer hands its stored copy) reports the same invalid parts and checks
// out the same services, endpoints and trigger times at every checkout as a tracker fed the
// objects as decoded. Trim must not modify what it is given either.
//
// go test runs the seed corpus and 300 generated programs; fuzz with
// go test ./proxier -run '^$' -fuzz FuzzTrimKeepsWhatTheTrackerSees -fuzztime 60s
func FuzzTrimKeepsWhatTheTrackerSees(f *testing.F) {
	seeds, err := apifuzz.Seeds()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		f.Add(s.Data)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		program := make([]byte, 64+rng.IntN(400))
		for i := range program {
			program[i] = byte(rng.UintN(256))
		}
		f.Add(program)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
			checkTrim(t, fam, apifuzz.Decode(data))
		}
	})
}

func checkTrim(t *testing.T, fam v1.IPFamily, ops []apifuzz.Op) {
	t.Helper()
	var asDecoded, asStored []string
	newTracker := func(reports *[]string) *endpoints.Tracker {
		return endpoints.NewTracker(endpoints.TrackerOptions{IPFamily: fam,
			OnInvalid: func(kind, ns, name, reason, message string) {
				*reports = append(*reports, fmt.Sprintf("%s %s/%s %s: %s", kind, ns, name, reason, message))
			}})
	}
	decoded, stored := newTracker(&asDecoded), newTracker(&asStored)
	// The stored copy of each object, as the informer would hand it as the old version.
	copies := map[any]any{}
	trimService := func(s *v1.Service) *v1.Service { return storedCopy(t, copies, s) }
	trimSlice := func(s *discovery.EndpointSlice) *discovery.EndpointSlice { return storedCopy(t, copies, s) }
	compare := func(when string) {
		a, b := decoded.Checkout(), stored.Checkout()
		if !reflect.DeepEqual(a.Services, b.Services) {
			t.Fatalf("%s, %s: services differ:\ndecoded: %v\nstored:  %v", fam, when, a.Services, b.Services)
		}
		if !reflect.DeepEqual(a.Endpoints, b.Endpoints) || !reflect.DeepEqual(a.Changed, b.Changed) ||
			!reflect.DeepEqual(a.TriggerTimes, b.TriggerTimes) {
			t.Fatalf("%s, %s: endpoints, changes or trigger times differ:\ndecoded: %v %v %v\nstored:  %v %v %v",
				fam, when, a.Endpoints, a.Changed, a.TriggerTimes, b.Endpoints, b.Changed, b.TriggerTimes)
		}
	}
	for i, op := range ops {
		switch op.Kind {
		case apifuzz.AddService, apifuzz.UpdateService:
			decoded.OnServiceUpdate(op.OldService, op.Service)
			stored.OnServiceUpdate(trimService(op.OldService), trimService(op.Service))
		case apifuzz.DeleteService:
			decoded.OnServiceDelete(op.Service)
			stored.OnServiceDelete(trimService(op.Service))
		case apifuzz.AddSlice, apifuzz.UpdateSlice:
			decoded.OnEndpointSliceUpdate(op.OldSlice, op.Slice)
			stored.OnEndpointSliceUpdate(trimSlice(op.OldSlice), trimSlice(op.Slice))
		case apifuzz.DeleteSlice:
			decoded.OnEndpointSliceDelete(op.Slice)
			stored.OnEndpointSliceDelete(trimSlice(op.Slice))
		case apifuzz.Checkout:
			compare(fmt.Sprintf("checkout after event %d", i))
		}
	}
	compare("the end")
	if !reflect.DeepEqual(asDecoded, asStored) {
		t.Fatalf("%s: reports differ:\ndecoded: %q\nstored:  %q", fam, asDecoded, asStored)
	}
}

// storedCopy returns what Trim stores for obj (nil for nil), the same copy each time obj is
// handed again, and fails the test when Trim modified obj.
func storedCopy[T *v1.Service | *discovery.EndpointSlice](t *testing.T, copies map[any]any, obj T) T {
	t.Helper()
	if obj == nil {
		return nil
	}
	if c, ok := copies[obj]; ok {
		return c.(T)
	}
	before := any(obj).(kruntime.Object).DeepCopyObject()
	out, err := Trim(obj)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, any(obj)) {
		t.Fatalf("Trim modified the %T it was given", obj)
	}
	copies[obj] = out
	return out.(T)
}
