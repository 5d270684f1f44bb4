package datapath

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func mustPlan(t *testing.T, cfg Config, self Self, nodes ...Node) Plan {
	t.Helper()
	p, err := ComputePlan(cfg, self, nodes)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustSync(t *testing.T, r *Reconciler, p Plan) Result {
	t.Helper()
	res, err := r.Sync(context.Background(), p)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

func wantDump(t *testing.T, f *Fake, want ...string) {
	t.Helper()
	if d := cmp.Diff(strings.Join(want, "\n"), f.Dump()); d != "" {
		t.Errorf("namespace (-want +got):\n%s", d)
	}
}

var vxlanDump = []string{
	"device kproxy.1 vxlan vni=1 port=8472 local=192.0.2.11 mtu=1450 mac=0e:6b:c0:00:02:0b addrs=[100.64.1.0/32]",
	"fdb 0e:6b:c0:00:02:0c dev kproxy.1 dst 192.0.2.12",
	"fdb 0e:6b:c0:00:02:c8 dev kproxy.1 dst 192.0.2.200",
	"neigh 100.64.2.0 lladdr 0e:6b:c0:00:02:0c dev kproxy.1",
	"neigh 100.64.3.0 lladdr 0e:6b:c0:00:02:c8 dev kproxy.1",
	"route 100.64.2.0/24 via 100.64.2.0 dev kproxy.1 onlink proto 107",
	"route 100.64.3.0/24 via 100.64.3.0 dev kproxy.1 onlink proto 107",
}

func TestReconcileVXLAN(t *testing.T) {
	f := NewFake(pfx("192.0.2.0/24"))
	r := NewReconciler(f)
	p := mustPlan(t, Config{Backend: BackendVXLAN}, self1, n1, n2, n3far)

	if res := mustSync(t, r, p); res.Added != 7 || res.Updated+res.Deleted != 0 {
		t.Errorf("first sync %v, want 7 added", res)
	}
	wantDump(t, f, vxlanDump...)
	if res := mustSync(t, r, p); res.Added+res.Updated+res.Deleted != 0 {
		t.Errorf("second sync changed %v, want nothing", res)
	}

	// Drift: entries deleted by hand come back, one message each.
	for _, err := range []error{f.DeleteRoute(p.Routes[0]), f.DeleteNeigh(p.Neighs[1]), f.DeleteFDB(p.FDBs[0])} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if res := mustSync(t, r, p); res.Added != 3 {
		t.Errorf("repair sync %v, want 3 added", res)
	}
	wantDump(t, f, vxlanDump...)

	// A neighbour with a wrong MAC is replaced.
	if err := f.SetNeigh(Neigh{Dev: "kproxy.1", IP: addr("100.64.2.0"), MAC: mac("0e:00:00:00:00:99")}); err != nil {
		t.Fatal(err)
	}
	if res := mustSync(t, r, p); res.Updated != 1 {
		t.Errorf("sync %v, want 1 updated", res)
	}
	wantDump(t, f, vxlanDump...)

	// n3 leaves: its route, neighbour and FDB entry go; nothing else changes.
	if res := mustSync(t, r, mustPlan(t, Config{Backend: BackendVXLAN}, self1, n1, n2)); res.Deleted != 3 || res.Added+res.Updated != 0 {
		t.Errorf("leave sync %v, want 3 deleted", res)
	}
	wantDump(t, f, vxlanDump[0], vxlanDump[1], vxlanDump[3], vxlanDump[5])
}

func TestReconcileLeavesForeignState(t *testing.T) {
	f := NewFake(pfx("192.0.2.0/24"))
	foreign := []Route{
		{Dst: pfx("10.0.0.0/8"), Gw: addr("192.0.2.1")},
		{Dst: pfx("100.64.2.0/24"), Gw: addr("192.0.2.99")}, // an admin's route to n2's pods
	}
	for _, rt := range foreign {
		if err := f.AddForeignRoute(rt); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReconciler(f)
	_, err := r.Sync(context.Background(), mustPlan(t, Config{Backend: BackendHostGW}, self1, n2, testNode(4, "192.0.2.14")))
	if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "not kproxy's") {
		t.Fatalf("sync error %v, want EEXIST for the foreign route to 100.64.2.0/24", err)
	}
	wantDump(t, f,
		"route 10.0.0.0/8 via 192.0.2.1 proto 4",
		"route 100.64.2.0/24 via 192.0.2.99 proto 4",
		"route 100.64.4.0/24 via 192.0.2.14 proto 107",
	)
	// A sync with no peers deletes only its own route.
	mustSync(t, r, mustPlan(t, Config{Backend: BackendHostGW}, self1))
	wantDump(t, f, "route 10.0.0.0/8 via 192.0.2.1 proto 4", "route 100.64.2.0/24 via 192.0.2.99 proto 4")
}

func TestReconcileBackendSwitch(t *testing.T) {
	f := NewFake(pfx("192.0.2.0/24"))
	r := NewReconciler(f)
	mustSync(t, r, mustPlan(t, Config{Backend: BackendVXLAN}, self1, n2))
	// vxlan → host-gw: the device goes with its neighbours and FDB; plain routes replace the
	// onlink ones.
	res := mustSync(t, r, mustPlan(t, Config{Backend: BackendHostGW}, self1, n2))
	wantDump(t, f, "route 100.64.2.0/24 via 192.0.2.12 proto 107")
	if res.Deleted != 1 || res.Added != 1 {
		t.Errorf("switch %v, want the device deleted and the route added", res)
	}
	// host-gw → vxlan with direct routing: a device appears, the route stays.
	res = mustSync(t, r, mustPlan(t, Config{Backend: BackendVXLAN, DirectRouting: true}, self1, n2))
	wantDump(t, f, vxlanDump[0], "route 100.64.2.0/24 via 192.0.2.12 proto 107")
	if res.Added != 1 || res.Updated+res.Deleted != 0 {
		t.Errorf("switch %v, want only the device added", res)
	}
	// VNI change: kproxy.1 replaced by kproxy.2.
	mustSync(t, r, mustPlan(t, Config{Backend: BackendVXLAN, VNI: 2}, self1, n2))
	wantDump(t, f,
		"device kproxy.2 vxlan vni=2 port=8472 local=192.0.2.11 mtu=1450 mac=0e:6b:c0:00:02:0b addrs=[100.64.1.0/32]",
		"fdb 0e:6b:c0:00:02:0c dev kproxy.2 dst 192.0.2.12",
		"neigh 100.64.2.0 lladdr 0e:6b:c0:00:02:0c dev kproxy.2",
		"route 100.64.2.0/24 via 100.64.2.0 dev kproxy.2 onlink proto 107",
	)
	// none: everything goes.
	mustSync(t, r, mustPlan(t, Config{Backend: BackendNone}, self1, n2))
	wantDump(t, f)
}

func TestReconcileReportsSkipsOnce(t *testing.T) {
	r := NewReconciler(NewFake(pfx("192.0.2.0/24")))
	p := mustPlan(t, Config{Backend: BackendHostGW}, self1, n2, n3far)
	if res := mustSync(t, r, p); len(res.NewSkips) != 1 || res.NewSkips[0].Node != "n3" {
		t.Errorf("first sync skips %v, want n3", res.NewSkips)
	}
	if res := mustSync(t, r, p); len(res.NewSkips) != 0 {
		t.Errorf("second sync skips %v, want none (already reported)", res.NewSkips)
	}
	mustSync(t, r, mustPlan(t, Config{Backend: BackendHostGW}, self1, n2))
	if res := mustSync(t, r, p); len(res.NewSkips) != 1 {
		t.Errorf("skips %v after n3 came back, want it reported again", res.NewSkips)
	}
}

func TestReconcileErrorsDoNotStopOthers(t *testing.T) {
	f := NewFake() // no connected underlay: host-gw routes are unreachable
	r := NewReconciler(f)
	_, err := r.Sync(context.Background(), mustPlan(t, Config{Backend: BackendHostGW}, self1, n2, testNode(4, "192.0.2.14")))
	if !errors.Is(err, unix.ENETUNREACH) || strings.Count(err.Error(), "ENETUNREACH")+strings.Count(err.Error(), "network is unreachable") != 2 {
		t.Fatalf("error %v, want two unreachable routes", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Sync(ctx, Plan{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled sync: %v", err)
	}
}

func TestFakeRejectsLikeTheKernel(t *testing.T) {
	f := NewFake(pfx("192.0.2.0/24"))
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"route on a missing device", func() error { return f.AddRoute(vxRoute("100.64.2.0/24", "100.64.2.0")) }, unix.ENODEV},
		{"onlink without a device", func() error {
			return f.AddRoute(Route{Dst: pfx("100.64.2.0/24"), Gw: addr("1.2.3.4"), OnLink: true})
		}, unix.EINVAL},
		{"gateway of another family", func() error {
			return f.AddRoute(Route{Dst: pfx("100.64.2.0/24"), Gw: addr("2001:db8::1")})
		}, unix.EINVAL},
		{"unmasked destination", func() error { return f.AddRoute(Route{Dst: pfx("100.64.2.1/24"), Gw: addr("192.0.2.12")}) }, unix.EINVAL},
		{"neighbour on a missing device", func() error { return f.SetNeigh(Neigh{Dev: "kproxy.1", IP: addr("100.64.2.0")}) }, unix.ENODEV},
		{"fdb on an ipip device", func() error {
			if err := f.EnsureDevice(Device{Name: "kproxy.ipip", Kind: KindIPIP, MTU: 1480}); err != nil {
				return err
			}
			return f.SetFDB(FDB{Dev: "kproxy.ipip", MAC: mac2, Dst: addr("192.0.2.12")})
		}, unix.EOPNOTSUPP},
		{"device name too long", func() error { return f.EnsureDevice(Device{Name: "kproxy.16777215x", Kind: KindVXLAN, MTU: 1450}) }, unix.EINVAL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
}
