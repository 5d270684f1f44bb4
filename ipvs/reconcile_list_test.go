package ipvs

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/ipset"
)

// A virtual server a sync adds has no real servers to list: a cold start lists none, and
// still programs every real server; the next full sync reads the existing ones in one
// listing of the whole table and writes nothing.
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
	if st := e.apply(t, w, true); st.Writes() != 0 || n.rs != 0 || n.all != 1 {
		t.Errorf("second full sync: %d writes (want 0), listings %+v (want one of the whole table)", st.Writes(), *n)
	}
}

// tableIPVS is an IPVS whose ListAllRealServers fails (fail) or leaves a virtual server out
// (drop), as a read racing with another program's writes may.
type tableIPVS struct {
	IPVS
	fail bool
	drop VSKey
}

func (x tableIPVS) ListAllRealServers(ctx context.Context) (map[VSKey][]RealServer, error) {
	if x.fail {
		return nil, errors.New("open /proc/thread-self/net/ip_vs: no such file or directory")
	}
	all, err := x.IPVS.ListAllRealServers(ctx)
	delete(all, x.drop)
	return all, err
}

// A kernel check repairs real servers changed by hand whether the whole table is read at once,
// the read fails (each virtual server is then listed on its own), or it misses a virtual
// server (that one is listed on its own).
func TestCheckListsRealServersAtOnce(t *testing.T) {
	other := servicePort(portName("ns", "other", "http", v1.ProtocolTCP), "100.100.0.11", 80)
	otherKey := VSKey{IP: netip.MustParseAddr("100.100.0.11"), Port: 80, Protocol: v1.ProtocolTCP}
	w := newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080), remoteEP("100.64.2.2", 8080)).
		svc(other, readyEP("100.64.1.3", 8080))
	for _, tc := range []struct {
		name string
		x    tableIPVS
		want listings
	}{
		{"whole table", tableIPVS{}, listings{all: 1}},
		{"read fails", tableIPVS{fail: true}, listings{all: 1, rs: 2}},
		{"read misses a virtual server", tableIPVS{drop: otherKey}, listings{all: 1, rs: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &testEnv{ipvs: NewFakeIPVS(), links: NewFakeLinks(), sets: ipset.NewFake(), ipt: newFakeIPT()}
			n := &listings{}
			tc.x.IPVS = e.ipvs
			p, err := NewProxier(Writers{IPVS: countingIPVS{tc.x, n}, Links: e.links, IPSet: e.sets, IPTables: e.ipt}, testConfig())
			if err != nil {
				t.Fatal(err)
			}
			e.p = p
			e.apply(t, w, true)
			want := e.ipvs.Dump()
			// by hand: one real server deleted, another set to weight 0
			ctx := context.Background()
			if err := e.ipvs.DeleteRealServer(ctx, webKey, netip.MustParseAddrPort("100.64.2.2:8080")); err != nil {
				t.Fatal(err)
			}
			if err := e.ipvs.UpdateRealServer(ctx, otherKey, RealServer{Addr: netip.MustParseAddrPort("100.64.1.3:8080")}); err != nil {
				t.Fatal(err)
			}
			*n = listings{}
			st := e.apply(t, w, true)
			if st.RSAdded != 1 || st.RSUpdated != 1 || st.Writes() != 2 {
				t.Errorf("check: %+v, want the real server added back and the other's weight set back to 1", st)
			}
			if diff := cmp.Diff(want, e.ipvs.Dump()); diff != "" {
				t.Errorf("IPVS after the check (-want +got):\n%s", diff)
			}
			if n.all != tc.want.all || n.rs != tc.want.rs {
				t.Errorf("listings %+v, want %d of the whole table and %d of one virtual server", *n, tc.want.all, tc.want.rs)
			}
		})
	}
}
