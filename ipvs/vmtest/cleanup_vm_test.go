//go:build vm

package vmtest

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/internal/netnsutil"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	"github.com/kproxy/kproxy/ipvs"
)

// TestCleanupInVM: the IPVS part of kproxy --cleanup against the real kernel, with foreign
// virtual servers and sets present. While the rules still reference kproxy's sets they are
// left (ErrInUse from the kernel's EBUSY); once the chains are gone the sets and
// kube-ipvs0 go, and the foreign objects stay.
func TestCleanupInVM(t *testing.T) {
	requireVM(t)
	ctx := context.Background()
	node := nsName(t, "kpv-clean-"+netnsutil.Suffix())
	sh(t, "ip", "-n", node, "link", "add", "kpv-e0", "type", "dummy")
	sh(t, "ip", "-n", node, "addr", "add", nodeIP+"/24", "dev", "kpv-e0")
	sh(t, "ip", "-n", node, "link", "set", "kpv-e0", "up")
	nsPath := "/run/netns/" + node
	k, sets := openKernel(t, nsPath)
	in := func(args ...string) string { return sh(t, append([]string{"ip", "netns", "exec", node}, args...)...) }
	// foreign objects: a virtual server elsewhere, one on the node IP on a port that is not a
	// node port, and a set of another program
	in("ipvsadm", "-A", "-t", "10.99.0.1:80", "-s", "wrr")
	in("ipvsadm", "-A", "-t", nodeIP+":8443", "-s", "rr")
	in("ipset", "create", "cali40all-hosts", "hash:ip")

	p, err := ipvs.NewProxier(ipvs.Writers{IPVS: k, Links: k, IPSet: sets, IPTables: iptables.New(iptables.Options{NetNSPath: nsPath})},
		ipvs.Config{ClusterCIDR: netip.MustParsePrefix("100.64.0.0/16"), NodeIPs: []netip.Addr{netip.MustParseAddr(nodeIP)},
			NodeIP: netip.MustParseAddr(nodeIP)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx, newCluster().snapshot(), endpoints.NodeInfo{Name: "node-1"}, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("before cleanup:\n%s", in("ipvsadm", "-Ln"))

	opts := ipvs.CleanupOptions{LocalAddrs: []netip.Addr{netip.MustParseAddr(nodeIP)}}
	res, err := ipvs.CleanupVirtualServers(ctx, k, k, sets, opts)
	if err != nil {
		t.Fatal(err)
	}
	// web, empty, lb: ClusterIPs; lb: node port, externalIP, LB IP
	if res.VirtualServersDeleted != 6 || res.VirtualServersKept != 2 {
		t.Errorf("deleted %d, kept %d; want 6 and 2", res.VirtualServersDeleted, res.VirtualServersKept)
	}
	out := in("ipvsadm", "-Ln")
	if !strings.Contains(out, "TCP  10.99.0.1:80 wrr") || !strings.Contains(out, "TCP  "+nodeIP+":8443 rr") ||
		strings.Count(out, "TCP  ") != 2 {
		t.Errorf("after the virtual-server cleanup, want only the 2 foreign ones:\n%s", out)
	}
	if err := ipvs.CleanupSetsAndDevice(ctx, k, sets, opts, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.SetsInUse) == 0 || !slices.Contains(res.SetsInUse, ipset.KubeClusterIP) {
		t.Errorf("sets the rules still use = %v, want KUBE-CLUSTER-IP among them", res.SetsInUse)
	}
	if !res.DummyDeleted {
		t.Errorf("%s not deleted", ipvs.DummyDevice)
	}
	destroyed := len(res.SetsDestroyed)
	// what the iptables part of --cleanup does (cmd/kproxy): here, all of the namespace's
	for _, table := range []string{"nat", "filter"} {
		in("iptables", "-t", table, "-F")
		in("iptables", "-t", table, "-X")
	}
	res = ipvs.CleanupResult{}
	if err := ipvs.CleanupSetsAndDevice(ctx, k, sets, opts, &res); err != nil {
		t.Fatal(err)
	}
	if n := destroyed + len(res.SetsDestroyed); len(res.SetsInUse) != 0 || n != len(ipset.KubeSets(ipset.FamilyIPv4)) {
		t.Errorf("second pass: %+v; want the rest of the %d sets destroyed (%d in the first pass)", res, len(ipset.KubeSets(ipset.FamilyIPv4)), destroyed)
	}
	if names := strings.Fields(in("ipset", "list", "-n")); !slices.Equal(names, []string{"cali40all-hosts"}) {
		t.Errorf("sets left: %v, want only cali40all-hosts", names)
	}
	if out := in("ip", "-o", "link"); strings.Contains(out, ipvs.DummyDevice) {
		t.Errorf("%s still there:\n%s", ipvs.DummyDevice, out)
	}
	if out := in("ipvsadm", "-Ln"); strings.Count(out, "TCP  ") != 2 {
		t.Errorf("foreign virtual servers changed:\n%s", out)
	}
}
