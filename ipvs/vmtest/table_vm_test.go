//go:build vm

package vmtest

import (
	"context"
	"net/netip"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/internal/netnsutil"
	"github.com/kproxy/kproxy/ipvs"
)

// TestListAllRealServersInVM: one read of the namespace's IPVS table (/proc/net/ip_vs) gives
// every virtual server's real servers exactly as one netlink dump per virtual server does
// (IPv4 TCP, UDP with persistence, SCTP, IPv6, weights 0 to 5, an empty virtual server), leaves
// out a firewall-mark service, and shows this namespace's table only, not another's.
func TestListAllRealServersInVM(t *testing.T) {
	requireVM(t)
	ctx := context.Background()
	node := nsName(t, "kpv-table-"+netnsutil.Suffix())
	other := nsName(t, "kpv-table-other-"+netnsutil.Suffix())
	k, _ := openKernel(t, "/run/netns/"+node)
	ko, _ := openKernel(t, "/run/netns/"+other)

	key := func(proto v1.Protocol, s string) ipvs.VSKey {
		ap := netip.MustParseAddrPort(s)
		return ipvs.VSKey{IP: ap.Addr(), Port: ap.Port(), Protocol: proto}
	}
	rs := func(s string, w int) ipvs.RealServer {
		return ipvs.RealServer{Addr: netip.MustParseAddrPort(s), Weight: w}
	}
	want := map[ipvs.VSKey][]ipvs.RealServer{
		key(v1.ProtocolTCP, "100.100.0.1:80"):    {rs("100.64.10.1:8080", 1), rs("100.64.10.2:8080", 0), rs("100.64.10.3:8081", 5)},
		key(v1.ProtocolUDP, "100.100.0.10:53"):   {},
		key(v1.ProtocolSCTP, "100.100.0.2:3000"): {rs("100.64.10.4:3000", 1)},
		key(v1.ProtocolTCP, "[fd00:100::1]:443"): {rs("[fd00:64::a:1]:8443", 1), rs("[fd00:64::a:2]:8443", 1)},
	}
	for k2, rss := range want {
		vs := ipvs.VirtualServer{VSKey: k2, Scheduler: "rr"}
		if k2.Protocol == v1.ProtocolUDP {
			vs.Flags, vs.Timeout = ipvs.FlagPersistent, 10800
		}
		if err := k.AddVirtualServer(ctx, vs); err != nil {
			t.Fatal(err)
		}
		for _, r := range rss {
			if err := k.AddRealServer(ctx, k2, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	sh(t, "ip", "netns", "exec", node, "ipvsadm", "-A", "-f", "1", "-s", "rr")
	sh(t, "ip", "netns", "exec", node, "ipvsadm", "-a", "-f", "1", "-r", "100.64.10.9:80", "-m")
	// the other namespace's table must not show up in this one's
	if err := ko.AddVirtualServer(ctx, ipvs.VirtualServer{VSKey: key(v1.ProtocolTCP, "100.100.9.9:80"), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}

	got, err := k.ListAllRealServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListAllRealServers:\n got %v\nwant %v\n%s", got, want, dump(t, node))
	}
	// and the same as the per-virtual-server dumps
	vss, err := k.ListVirtualServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, vs := range vss {
		one, err := k.ListRealServers(ctx, vs.VSKey)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(one, got[vs.VSKey]) {
			t.Errorf("%s: ListRealServers %v, ListAllRealServers %v", vs.VSKey, one, got[vs.VSKey])
		}
	}
	if len(vss) != len(got) {
		t.Errorf("ListVirtualServers has %d virtual servers, ListAllRealServers %d", len(vss), len(got))
	}
}
