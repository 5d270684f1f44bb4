package ipvs

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/ipset"
)

// A virtual server a sync adds has no real servers to list: a cold start lists none, and
// still programs every real server; the next full sync lists each existing one and writes
// nothing.
func TestNewVirtualServersAreNotListed(t *testing.T) {
	e := &testEnv{ipvs: NewFakeIPVS(), links: NewFakeLinks(), sets: ipset.NewFake(), ipt: newFakeIPT()}
	n := &listings{}
	p, err := NewProxier(Writers{IPVS: countingIPVS{e.ipvs, n}, Links: e.links, IPSet: e.sets, IPTables: e.ipt}, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	other := servicePort(portName("ns", "other", "http", v1.ProtocolTCP), "100.100.0.11", 80)
	w := newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080), remoteEP("100.64.2.2", 8080)).
		svc(other, readyEP("100.64.1.3", 8080))
	st := e.apply(t, w, true)
	if n.rs != 0 {
		t.Errorf("cold start listed the real servers of %d new virtual servers", n.rs)
	}
	if st.VSAdded != 2 || st.RSAdded != 3 {
		t.Errorf("cold start: %+v, want 2 virtual and 3 real servers added", st)
	}
	want := "TCP 100.100.0.10:80 rr\n" +
		"  -> 100.64.1.2:8080 w1 active 0 inactive 0\n" +
		"  -> 100.64.2.2:8080 w1 active 0 inactive 0\n" +
		"TCP 100.100.0.11:80 rr\n" +
		"  -> 100.64.1.3:8080 w1 active 0 inactive 0\n"
	if diff := cmp.Diff(want, e.ipvs.Dump()); diff != "" {
		t.Errorf("IPVS (-want +got):\n%s", diff)
	}
	if st := e.apply(t, w, true); st.Writes() != 0 || n.rs != 2 {
		t.Errorf("second full sync: %d writes (want 0), %d listings (want 2)", st.Writes(), n.rs)
	}
}
