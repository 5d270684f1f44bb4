package endpoints

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// event is one informer callback.
type event func(*Tracker)

func addSvc(s *v1.Service) event                { return func(t *Tracker) { t.OnServiceAdd(s) } }
func updSvc(old, cur *v1.Service) event         { return func(t *Tracker) { t.OnServiceUpdate(old, cur) } }
func delSvc(s *v1.Service) event                { return func(t *Tracker) { t.OnServiceDelete(s) } }
func addSlice(s *discovery.EndpointSlice) event { return func(t *Tracker) { t.OnEndpointSliceAdd(s) } }
func updSlice(o, c *discovery.EndpointSlice) event {
	return func(t *Tracker) { t.OnEndpointSliceUpdate(o, c) }
}
func delSlice(s *discovery.EndpointSlice) event {
	return func(t *Tracker) { t.OnEndpointSliceDelete(s) }
}

func TestTracker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t1, t2 := t0.Add(time.Second), t0.Add(2*time.Second)
	svc := makeService("ns", "svc")
	svc2 := makeService("ns", "svc2", func(s *v1.Service) {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.0.0.2", []string{"10.0.0.2"}
	})
	sliceA := makeSlice("ns", "a", "svc", "10.1.0.1", "10.1.0.2")
	sliceB := makeSlice("ns", "b", "svc", "10.1.0.3")
	eps12 := []string{"10.1.0.1:8080", "10.1.0.2:8080"}

	tests := []struct {
		name    string
		opts    TrackerOptions
		before  []event // folded and checked out before events
		events  []event
		want    snapSummary
		pending bool
	}{{
		name:   "nothing",
		before: nil,
		want:   snapSummary{},
	}, {
		name:   "service and slice added",
		events: []event{addSvc(svc), addSlice(sliceA)},
		want: snapSummary{
			Services:       []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:      map[string][]string{"ns/svc:http/TCP": eps12},
			Changed:        []string{"ns/svc"},
			ServiceChanges: 1, EndpointChanges: 1,
		},
		pending: true,
	}, {
		name:   "no-op service update dropped",
		before: []event{addSvc(svc), addSlice(sliceA)},
		events: []event{updSvc(svc, mutService(svc, func(s *v1.Service) {
			s.ResourceVersion = "2"
			s.Annotations = map[string]string{"note": "x"}
		}))},
		want: snapSummary{
			Services:       []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:      map[string][]string{"ns/svc:http/TCP": eps12},
			ServiceChanges: 1,
		},
	}, {
		name:   "no-op slice update dropped, with its trigger time",
		before: []event{addSvc(svc), addSlice(sliceA)},
		events: []event{updSlice(sliceA, mutSlice(sliceA, func(s *discovery.EndpointSlice) {
			s.ResourceVersion = "2"
			withTrigger(t1)(s)
		}))},
		want: snapSummary{
			Services:        []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:       map[string][]string{"ns/svc:http/TCP": eps12},
			EndpointChanges: 1,
		},
	}, {
		name:   "change reverted before checkout dropped",
		before: []event{addSvc(svc), addSlice(sliceA)},
		events: []event{
			updSvc(svc, mutService(svc, func(s *v1.Service) { s.Spec.Ports[0].Port = 81 })),
			updSlice(sliceA, mutSlice(sliceA, func(s *discovery.EndpointSlice) {
				s.Endpoints = s.Endpoints[:1]
				withTrigger(t1)(s)
			})),
			updSvc(nil, svc),
			updSlice(nil, mutSlice(sliceA, withTrigger(t2))),
		},
		want: snapSummary{
			Services:       []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:      map[string][]string{"ns/svc:http/TCP": eps12},
			ServiceChanges: 2, EndpointChanges: 2,
		},
	}, {
		name:   "service port change reported",
		before: []event{addSvc(svc)},
		events: []event{updSvc(svc, mutService(svc, func(s *v1.Service) { s.Spec.Ports[0].Port = 81 }))},
		want: snapSummary{
			Services:       []string{"ns/svc:http/TCP 10.0.0.1:81"},
			Changed:        []string{"ns/svc"},
			ServiceChanges: 1,
		},
		pending: true,
	}, {
		name:   "endpoint condition change reported with its trigger time",
		before: []event{addSvc(svc), addSlice(sliceA)},
		events: []event{updSlice(sliceA, mutSlice(sliceA, func(s *discovery.EndpointSlice) {
			s.Endpoints[1] = ep("10.1.0.2 unready serving terminating")
			withTrigger(t1)(s)
		}))},
		want: snapSummary{
			Services:        []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:       map[string][]string{"ns/svc:http/TCP": {"10.1.0.1:8080", "10.1.0.2:8080 unready serving=true terminating"}},
			Changed:         []string{"ns/svc"},
			TriggerTimes:    map[string][]time.Time{"ns/svc": {t1}},
			EndpointChanges: 1,
		},
		pending: true,
	}, {
		name:   "service deleted: reported, its endpoints kept",
		before: []event{addSvc(svc), addSvc(svc2), addSlice(sliceA)},
		events: []event{delSvc(svc)},
		want: snapSummary{
			Services:       []string{"ns/svc2:http/TCP 10.0.0.2:80"},
			Endpoints:      map[string][]string{"ns/svc:http/TCP": eps12},
			Changed:        []string{"ns/svc"},
			ServiceChanges: 1,
		},
		pending: true,
	}, {
		name:   "service and slice deleted",
		before: []event{addSvc(svc), addSlice(sliceA)},
		events: []event{delSlice(sliceA), delSvc(svc)},
		want: snapSummary{
			Changed:        []string{"ns/svc"},
			ServiceChanges: 1, EndpointChanges: 1,
		},
		pending: true,
	}, {
		name:   "service becoming ExternalName is removed",
		before: []event{addSvc(svc)},
		events: []event{updSvc(svc, mutService(svc, func(s *v1.Service) {
			s.Spec.Type, s.Spec.ClusterIP, s.Spec.ClusterIPs = v1.ServiceTypeExternalName, "", nil
		}))},
		want:    snapSummary{Changed: []string{"ns/svc"}, ServiceChanges: 1},
		pending: true,
	}, {
		name:   "two slices merged",
		before: []event{addSvc(svc)},
		events: []event{addSlice(sliceA), addSlice(sliceB)},
		want: snapSummary{
			Services:        []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:       map[string][]string{"ns/svc:http/TCP": {"10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"}},
			Changed:         []string{"ns/svc"},
			EndpointChanges: 2,
		},
		pending: true,
	}, {
		name:   "an endpoint moving between slices is no change",
		before: []event{addSvc(svc), addSlice(sliceA), addSlice(sliceB)},
		events: []event{
			addSlice(makeSlice("ns", "c", "svc", "10.1.0.2")),
			updSlice(sliceA, makeSlice("ns", "a", "svc", "10.1.0.1")),
		},
		want: snapSummary{
			Services:        []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:       map[string][]string{"ns/svc:http/TCP": {"10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"}},
			EndpointChanges: 2,
		},
	}, {
		name:   "one of two slices removed",
		before: []event{addSvc(svc), addSlice(sliceA), addSlice(sliceB)},
		events: []event{delSlice(sliceA)},
		want: snapSummary{
			Services:        []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:       map[string][]string{"ns/svc:http/TCP": {"10.1.0.3:8080"}},
			Changed:         []string{"ns/svc"},
			EndpointChanges: 1,
		},
		pending: true,
	}, {
		name:   "a slice port renamed splits the endpoints",
		before: []event{addSvc(svc), addSlice(sliceA)},
		events: []event{updSlice(sliceA, mutSlice(sliceA, func(s *discovery.EndpointSlice) {
			s.Ports = append(s.Ports, slicePortTCP("metrics", 9090))
		}))},
		want: snapSummary{
			Services: []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints: map[string][]string{
				"ns/svc:http/TCP":    eps12,
				"ns/svc:metrics/TCP": {"10.1.0.1:9090", "10.1.0.2:9090"},
			},
			Changed:         []string{"ns/svc"},
			EndpointChanges: 1,
		},
		pending: true,
	}, {
		name:   "duplicate endpoint across slices kept once, ready preferred",
		before: []event{addSvc(svc)},
		events: []event{addSlice(sliceA), addSlice(makeSlice("ns", "0", "svc", "10.1.0.1 unready"))},
		want: snapSummary{
			Services:        []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:       map[string][]string{"ns/svc:http/TCP": eps12},
			Changed:         []string{"ns/svc"},
			EndpointChanges: 2,
		},
		pending: true,
	}, {
		name:   "slice of an unknown service kept",
		events: []event{addSlice(sliceA)},
		want: snapSummary{
			Endpoints:       map[string][]string{"ns/svc:http/TCP": eps12},
			Changed:         []string{"ns/svc"},
			EndpointChanges: 1,
		},
		pending: true,
	}, {
		name:   "service arriving after its slice",
		before: []event{addSlice(sliceA)},
		events: []event{addSvc(svc)},
		want: snapSummary{
			Services:       []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:      map[string][]string{"ns/svc:http/TCP": eps12},
			Changed:        []string{"ns/svc"},
			ServiceChanges: 1,
		},
		pending: true,
	}, {
		name:   "slice relabelled to another service moves",
		before: []event{addSvc(svc), addSvc(svc2), addSlice(sliceA)},
		events: []event{updSlice(sliceA, mutSlice(sliceA, func(s *discovery.EndpointSlice) {
			s.Labels[discovery.LabelServiceName] = "svc2"
		}))},
		want: snapSummary{
			Services:        []string{"ns/svc2:http/TCP 10.0.0.2:80", "ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:       map[string][]string{"ns/svc2:http/TCP": eps12},
			Changed:         []string{"ns/svc", "ns/svc2"},
			EndpointChanges: 1,
		},
		pending: true,
	}, {
		name:   "slice becoming headless-labelled is dropped",
		before: []event{addSvc(svc), addSlice(sliceA)},
		events: []event{updSlice(sliceA, mutSlice(sliceA, func(s *discovery.EndpointSlice) {
			s.Labels[labelHeadless] = ""
		}))},
		want: snapSummary{
			Services:        []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Changed:         []string{"ns/svc"},
			EndpointChanges: 1,
		},
		pending: true,
	}, {
		name:   "slice deleted by a stale object still found by name",
		before: []event{addSvc(svc), addSlice(sliceA)},
		events: []event{delSlice(mutSlice(sliceA, func(s *discovery.EndpointSlice) { s.Labels = nil }))},
		want: snapSummary{
			Services:        []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Changed:         []string{"ns/svc"},
			EndpointChanges: 1,
		},
		pending: true,
	}, {
		name:   "trigger times of effective changes, not of deletes",
		before: []event{addSvc(svc)},
		events: []event{
			addSlice(mutSlice(sliceA, withTrigger(t1))),
			addSlice(mutSlice(sliceB, withTrigger(t2))),
			delSlice(mutSlice(sliceB, withTrigger(t0))),
		},
		want: snapSummary{
			Services:        []string{"ns/svc:http/TCP 10.0.0.1:80"},
			Endpoints:       map[string][]string{"ns/svc:http/TCP": eps12},
			Changed:         []string{"ns/svc"},
			TriggerTimes:    map[string][]time.Time{"ns/svc": {t1, t2}},
			EndpointChanges: 3,
		},
		pending: true,
	}, {
		name:   "trigger times not after StartTime dropped",
		opts:   TrackerOptions{StartTime: t1},
		events: []event{addSlice(mutSlice(sliceA, withTrigger(t1))), addSlice(mutSlice(sliceB, withTrigger(t2)))},
		want: snapSummary{
			Endpoints:       map[string][]string{"ns/svc:http/TCP": {"10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"}},
			Changed:         []string{"ns/svc"},
			TriggerTimes:    map[string][]time.Time{"ns/svc": {t2}},
			EndpointChanges: 2,
		},
		pending: true,
	}, {
		name: "IPv6 tracker",
		opts: TrackerOptions{IPFamily: v1.IPv6Protocol},
		events: []event{
			addSvc(mutService(svc, func(s *v1.Service) {
				s.Spec.ClusterIPs = []string{"10.0.0.1", "fd00::1"}
				s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
			})),
			addSlice(sliceA),
			addSlice(mutSlice(makeSlice("ns", "a6", "svc", "fd00:1::1"), func(s *discovery.EndpointSlice) {
				s.AddressType = discovery.AddressTypeIPv6
			})),
		},
		want: snapSummary{
			Services:       []string{"ns/svc:http/TCP fd00::1:80"},
			Endpoints:      map[string][]string{"ns/svc:http/TCP": {"[fd00:1::1]:8080"}},
			Changed:        []string{"ns/svc"},
			ServiceChanges: 1, EndpointChanges: 2,
		},
		pending: true,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(tc.opts)
			for _, e := range tc.before {
				e(tr)
			}
			tr.Checkout()
			for _, e := range tc.events {
				e(tr)
			}
			if got := tr.Pending(); got != tc.pending {
				t.Errorf("Pending() = %t, want %t", got, tc.pending)
			}
			if diff := cmp.Diff(normalize(tc.want), summarize(t, tr.Checkout())); diff != "" {
				t.Errorf("Checkout() (-want +got):\n%s", diff)
			}
			if tr.Pending() {
				t.Errorf("Pending() after Checkout = true")
			}
			if diff := cmp.Diff(snapSummary{}, onlyChanges(summarize(t, tr.Checkout()))); diff != "" {
				t.Errorf("second Checkout reports changes (-want +got):\n%s", diff)
			}
		})
	}
}

// normalize fills the empty maps summarize always returns.
func normalize(s snapSummary) snapSummary {
	if s.Endpoints == nil {
		s.Endpoints = map[string][]string{}
	}
	if s.TriggerTimes == nil {
		s.TriggerTimes = map[string][]time.Time{}
	}
	return s
}

// onlyChanges drops the state, keeping what a Checkout reports as changed.
func onlyChanges(s snapSummary) snapSummary {
	s.Services, s.Endpoints = nil, nil
	if len(s.TriggerTimes) == 0 {
		s.TriggerTimes = nil
	}
	return s
}

func TestTrackerReportsInvalid(t *testing.T) {
	type report struct{ Kind, Namespace, Name, Reason string }
	var got []report
	tr := NewTracker(TrackerOptions{OnInvalid: func(kind, namespace, name, reason, _ string) {
		got = append(got, report{kind, namespace, name, reason})
	}})
	tr.OnServiceAdd(makeService("ns", "bad", func(s *v1.Service) { s.Spec.ClusterIPs = []string{"x"} }))
	tr.OnServiceUpdate(nil, makeService("ns", "svc", func(s *v1.Service) { s.Spec.Ports[0].Port = 0 }))
	tr.OnEndpointSliceAdd(mutSlice(makeSlice("ns", "orphan", "svc"), func(s *discovery.EndpointSlice) { s.Labels = nil }))
	tr.OnEndpointSliceUpdate(nil, makeSlice("ns", "s1", "svc", "10.1.0.1", "bogus"))
	// An informer resync hands the same versions again: nothing new to report.
	tr.OnServiceUpdate(makeService("ns", "bad", func(s *v1.Service) { s.Spec.ClusterIPs = []string{"x"} }),
		makeService("ns", "bad", func(s *v1.Service) { s.Spec.ClusterIPs = []string{"x"} }))
	resynced := makeSlice("ns", "s1", "svc", "10.1.0.1", "bogus")
	tr.OnEndpointSliceUpdate(resynced, resynced)
	want := []report{
		{"Service", "ns", "bad", ReasonInvalidClusterIP},
		{"Service", "ns", "svc", ReasonInvalidPort},
		{"EndpointSlice", "ns", "orphan", ReasonMissingServiceName},
		{"EndpointSlice", "ns", "s1", ReasonInvalidEndpointAddress},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OnInvalid calls (-want +got):\n%s", diff)
	}
	snap := tr.Checkout()
	if diff := cmp.Diff([]string{"10.1.0.1:8080"}, epStrings(snap.Endpoints[spn("ns", "svc", "http", v1.ProtocolTCP)])); diff != "" {
		t.Errorf("the valid part of the slice is kept (-want +got):\n%s", diff)
	}
}

// TestTrackerSnapshotIsCallers checks that a caller changing a Snapshot's maps does not change
// the tracker, and that the tracker's later events do not change an earlier Snapshot.
func TestTrackerSnapshotIsCallers(t *testing.T) {
	tr := NewTracker(TrackerOptions{})
	svc := makeService("ns", "svc")
	slice := makeSlice("ns", "a", "svc", "10.1.0.1")
	tr.OnServiceAdd(svc)
	tr.OnEndpointSliceAdd(slice)
	first := tr.Checkout()
	firstSum := summarize(t, first)

	clear(first.Services)
	clear(first.Endpoints)
	clear(first.Changed)
	tr.OnEndpointSliceUpdate(slice, makeSlice("ns", "a", "svc", "10.1.0.2"))
	tr.OnServiceUpdate(svc, mutService(svc, func(s *v1.Service) { s.Spec.Ports[0].Port = 81 }))
	second := tr.Checkout()

	want := firstSum
	want.Services = []string{"ns/svc:http/TCP 10.0.0.1:81"}
	want.Endpoints = map[string][]string{"ns/svc:http/TCP": {"10.1.0.2:8080"}}
	want.ServiceChanges, want.EndpointChanges = 1, 1
	if diff := cmp.Diff(want, summarize(t, second)); diff != "" {
		t.Errorf("second Checkout (-want +got):\n%s", diff)
	}

	// The values handed out by the first Checkout are not touched by later events.
	third := NewTracker(TrackerOptions{})
	third.OnEndpointSliceAdd(slice)
	snap := third.Checkout()
	name := spn("ns", "svc", "http", v1.ProtocolTCP)
	held := snap.Endpoints[name]
	third.OnEndpointSliceUpdate(slice, makeSlice("ns", "a", "svc", "10.1.0.9 unready"))
	if diff := cmp.Diff([]string{"10.1.0.1:8080"}, epStrings(held)); diff != "" {
		t.Errorf("held endpoints changed (-want +got):\n%s", diff)
	}
}

// TestTrackerForgetsDeleted checks that deleted services leave no entry behind.
func TestTrackerForgetsDeleted(t *testing.T) {
	tr := NewTracker(TrackerOptions{})
	for i := range 10 {
		svc := makeService("ns", fmt.Sprintf("svc%d", i))
		slice := makeSlice("ns", fmt.Sprintf("s%d", i), svc.Name, "10.1.0.1")
		tr.OnServiceAdd(svc)
		tr.OnEndpointSliceAdd(slice)
		if i%2 == 0 {
			tr.Checkout()
		}
		tr.OnEndpointSliceDelete(slice)
		tr.OnServiceDelete(svc)
	}
	tr.Checkout()
	if n := len(tr.services) + len(tr.sliceOwner) + len(tr.ports) + len(tr.endpoints); n != 0 {
		t.Errorf("tracker holds %d services, %d slices, %d ports, %d endpoint lists after every delete",
			len(tr.services), len(tr.sliceOwner), len(tr.ports), len(tr.endpoints))
	}
}
