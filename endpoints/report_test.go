package endpoints

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

// An object with many bad parts is reported once (one log line, one event): the first
// problem's reason, and a message listing the first five problems and counting the rest.
func TestTrackerReportsOncePerObject(t *testing.T) {
	type call struct{ Kind, Namespace, Name, Reason, Message string }
	var got []call
	tr := NewTracker(TrackerOptions{OnInvalid: func(kind, namespace, name, reason, msg string) {
		got = append(got, call{kind, namespace, name, reason, msg})
	}})
	s := makeSlice("ns", "s1", "svc", "10.1.0.1", "a", "b", "c", "d", "e")
	s.Ports = append(s.Ports, discovery.EndpointPort{Name: ptr.To("big"), Port: ptr.To[int32](70000)})
	tr.OnEndpointSliceAdd(s)
	tr.OnEndpointSliceUpdate(s, s) // a resync: nothing
	one := makeSlice("ns", "s2", "svc", "bogus")
	tr.OnEndpointSliceAdd(one)
	want := []call{
		{"EndpointSlice", "ns", "s1", ReasonInvalidEndpointPort, `6 problems: port "big": 70000 is out of range; port skipped; ` +
			`endpoint address "a" is not an IPv4 address; endpoint skipped; endpoint address "b" is not an IPv4 address; endpoint skipped; ` +
			`endpoint address "c" is not an IPv4 address; endpoint skipped; endpoint address "d" is not an IPv4 address; endpoint skipped; and 1 more`},
		{"EndpointSlice", "ns", "s2", ReasonInvalidEndpointAddress, `endpoint address "bogus" is not an IPv4 address; endpoint skipped`},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OnInvalid calls (-want +got):\n%s", diff)
	}
}
