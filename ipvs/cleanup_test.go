package ipvs

import (
	"context"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/ipset"
)

// TestCleanupRemovesOnlyOurs: after a sync of a ClusterIP, a node port (TCP and SCTP),
// a load-balancer IP and an externalIP, with foreign virtual servers, sets and an excluded
// kube-ipvs0 address present, the cleanup removes kproxy's virtual servers, sets and
// addresses, and leaves every foreign one.
func TestCleanupRemovesOnlyOurs(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig()
	cfg.ExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("100.100.200.0/24")}
	e := newEnv(t, cfg)
	tcp := etpService(true)
	sctp := servicePort(portName("default", "sctp", "", v1.ProtocolSCTP), "100.100.0.31", 9)
	sctp.NodePort = 30009
	e.apply(t, newWorld().svc(webTCP(), readyEP("100.64.1.2", 8080)).svc(tcp, remoteEP("100.64.2.3", 8443)).
		svc(sctp, remoteEP("100.64.2.4", 9)), true)

	foreign := []VirtualServer{
		{VSKey: VSKey{IP: netip.MustParseAddr("100.100.200.5"), Port: 80, Protocol: v1.ProtocolTCP}, Scheduler: "wrr"}, // excluded, bound
		{VSKey: VSKey{IP: netip.MustParseAddr("10.9.9.9"), Port: 443, Protocol: v1.ProtocolTCP}, Scheduler: "rr"},      // elsewhere
		{VSKey: VSKey{IP: nodeIP, Port: 8443, Protocol: v1.ProtocolTCP}, Scheduler: "rr"},                              // node IP, not a node port
		{VSKey: VSKey{IP: nodeIP, Port: 30443, Protocol: v1.ProtocolUDP}, Scheduler: "rr"},                             // node port number, other protocol
		{VSKey: VSKey{IP: netip.MustParseAddr("10.9.9.9"), Port: 30443, Protocol: v1.ProtocolTCP}, Scheduler: "rr"},    // node port number, not a local address
		{VSKey: VSKey{IP: netip.MustParseAddr("2001:db8::9"), Port: 80, Protocol: v1.ProtocolTCP}, Scheduler: "rr"},    // IPv6
	}
	for _, vs := range foreign {
		if err := e.ipvs.AddVirtualServer(ctx, vs); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.links.AddAddr(ctx, DummyDevice, netip.MustParseAddr("100.100.200.5")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []ipset.Set{
		{Name: "cali40all-hosts", Type: ipset.HashIP, Family: ipset.FamilyIPv4},
		{Name: "KUBE-ROUTER-SERVICES", Type: ipset.HashIP, Family: ipset.FamilyIPv4},
	} {
		if err := e.sets.EnsureSet(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	e.sets.SetReferenced(ipset.KubeLoopBack, true) // a chain kproxy leaves (foreign jump) still uses it

	opts := CleanupOptions{ExcludeCIDRs: cfg.ExcludeCIDRs, LocalAddrs: []netip.Addr{nodeIP, netip.MustParseAddr("127.0.0.1")}}
	res, err := CleanupVirtualServers(ctx, e.ipvs, e.links, e.sets, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := CleanupSetsAndDevice(ctx, e.links, e.sets, opts, &res); err != nil {
		t.Fatal(err)
	}
	list, _ := e.ipvs.ListVirtualServers(ctx)
	var got []string
	for _, vs := range list {
		got = append(got, vs.VSKey.String())
	}
	want := []string{"TCP 10.9.9.9:443", "TCP 10.9.9.9:30443", "TCP 100.100.200.5:80", "TCP 192.0.2.11:8443",
		"UDP 192.0.2.11:30443", "TCP [2001:db8::9]:80"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("virtual servers left (-want +got):\n%s", diff)
	}
	// web, lb: ClusterIP, LB IP, externalIP, node port; sctp: ClusterIP, node port
	if res.VirtualServersDeleted != 7 || res.VirtualServersKept != len(foreign) {
		t.Errorf("deleted %d kept %d, want 7 and %d", res.VirtualServersDeleted, res.VirtualServersKept, len(foreign))
	}
	sets, _ := e.sets.ListSets(ctx)
	if diff := cmp.Diff([]string{"KUBE-LOOP-BACK", "KUBE-ROUTER-SERVICES", "cali40all-hosts"}, sets); diff != "" {
		t.Errorf("sets left (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"KUBE-LOOP-BACK"}, res.SetsInUse); diff != "" {
		t.Errorf("sets in use (-want +got):\n%s", diff)
	}
	bound, err := e.links.ListAddrs(ctx, DummyDevice)
	if err != nil || len(bound) != 1 || bound[0].String() != "100.100.200.5" || res.DummyDeleted {
		t.Errorf("kube-ipvs0 = %v, %v (deleted %v); want only the excluded 100.100.200.5", bound, err, res.DummyDeleted)
	}

	// without excluded addresses the device goes; a second cleanup finds nothing
	if err := e.links.DelAddr(ctx, DummyDevice, netip.MustParseAddr("100.100.200.5")); err != nil {
		t.Fatal(err)
	}
	res = CleanupResult{}
	if err := CleanupSetsAndDevice(ctx, e.links, e.sets, CleanupOptions{}, &res); err != nil || !res.DummyDeleted {
		t.Errorf("second cleanup: %v, deleted %v", err, res.DummyDeleted)
	}
	if _, err := e.links.ListAddrs(ctx, DummyDevice); err == nil {
		t.Error("kube-ipvs0 still there")
	}
	res, err = CleanupVirtualServers(ctx, e.ipvs, e.links, e.sets, opts)
	if err != nil || res.VirtualServersDeleted != 0 {
		t.Errorf("cleanup on a clean node: %+v, %v", res, err)
	}
}
