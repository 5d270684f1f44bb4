//go:build vm

package vmtest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/kproxy/kproxy/internal/netnsutil"
	"github.com/kproxy/kproxy/ipvs"
)

// TestLinkIndexCacheInVM: the Kernel binds addresses by kube-ipvs0's cached interface index;
// when the device is deleted by hand, and made again by hand (a new index), binding and
// unbinding still reach the device of that name, and a missing device is ErrNotFound.
func TestLinkIndexCacheInVM(t *testing.T) {
	requireVM(t)
	ctx := context.Background()
	node := nsName(t, "kpv-link-"+netnsutil.Suffix())
	k, _ := openKernel(t, "/run/netns/"+node)
	a, b := netip.MustParseAddr("100.100.9.1"), netip.MustParseAddr("100.100.9.2")
	if _, err := k.EnsureDummy(ctx, ipvs.DummyDevice); err != nil {
		t.Fatal(err)
	}
	if err := k.AddAddr(ctx, ipvs.DummyDevice, a); err != nil {
		t.Fatal(err)
	}
	// the cached index is now stale: the device of that name has another one
	sh(t, "ip", "-n", node, "link", "del", ipvs.DummyDevice)
	sh(t, "ip", "-n", node, "link", "add", "kpv-other", "type", "dummy")
	sh(t, "ip", "-n", node, "link", "add", ipvs.DummyDevice, "type", "dummy")
	if err := k.AddAddr(ctx, ipvs.DummyDevice, b); err != nil {
		t.Fatalf("bind after the device was made again: %v", err)
	}
	got, err := k.ListAddrs(ctx, ipvs.DummyDevice)
	if err != nil || !slices.Equal(got, []netip.Addr{b}) {
		t.Fatalf("kube-ipvs0 holds %v (%v), want only %s", got, err, b)
	}
	if other := sh(t, "ip", "-n", node, "-o", "addr", "show", "dev", "kpv-other"); other != "" {
		t.Errorf("kpv-other got an address: %s", other)
	}
	if err := k.DelAddr(ctx, ipvs.DummyDevice, b); err != nil {
		t.Fatal(err)
	}
	if got, err := k.ListAddrs(ctx, ipvs.DummyDevice); err != nil || len(got) != 0 {
		t.Fatalf("kube-ipvs0 holds %v (%v) after the unbind", got, err)
	}
	sh(t, "ip", "-n", node, "link", "del", ipvs.DummyDevice)
	if err := k.AddAddr(ctx, ipvs.DummyDevice, a); !errors.Is(err, ipvs.ErrNotFound) {
		t.Fatalf("bind with the device gone: %v, want ErrNotFound", err)
	}
}
