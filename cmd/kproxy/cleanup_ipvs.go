package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
	"github.com/kproxy/kproxy/ipvs"
)

// ipvsCleanup is what --cleanup needs for the IPVS mode's kernel objects besides the
// iptables chains: the IPVS table and kube-ipvs0 (nil when the ip_vs module is not loaded:
// then none of them can exist), the sets (nil without the ip_set module), and the options.
type ipvsCleanup struct {
	ipvs  ipvs.IPVS
	links ipvs.Links
	sets  ipset.Interface
	opts  ipvs.CleanupOptions
}

// cleanupAll is kproxy --cleanup: the IPVS mode's virtual servers first (kube-ipvs0 and the
// sets still tell which are kproxy's), then the iptables chains owned accepts (both modes'),
// then the sets (no longer referenced) and kube-ipvs0. Foreign objects of every kind are left.
func cleanupAll(ctx context.Context, ipts map[iptables.Family]iptables.Interface, ic ipvsCleanup, owned chainOwner) error {
	logger := klog.FromContext(ctx)
	var errs []error
	var res ipvs.CleanupResult
	if ic.ipvs != nil {
		r, err := ipvs.CleanupVirtualServers(ctx, ic.ipvs, ic.links, ic.sets, ic.opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("IPVS virtual servers: %w", err))
		}
		res = r
	}
	if err := cleanupChains(ctx, ipts, owned); err != nil {
		errs = append(errs, err)
	}
	if err := ipvs.CleanupSetsAndDevice(ctx, ic.links, ic.sets, ic.opts, &res); err != nil {
		errs = append(errs, fmt.Errorf("IPVS sets and %s: %w", ipvs.DummyDevice, err))
	}
	if len(res.SetsInUse) > 0 {
		logger.Info("Leaving sets a foreign rule still uses", "sets", res.SetsInUse)
	}
	logger.V(2).Info("Cleaned up the IPVS mode", "virtualServersDeleted", res.VirtualServersDeleted,
		"virtualServersKept", res.VirtualServersKept, "setsDestroyed", len(res.SetsDestroyed),
		"dummyDeleted", res.DummyDeleted, "addrsUnbound", res.AddrsUnbound)
	return errors.Join(errs...)
}

// moduleLoaded reports whether a kernel module is loaded (or built in with parameters):
// --cleanup must not load ip_vs or ip_set just to find them empty.
func moduleLoaded(name string) bool {
	_, err := os.Stat("/sys/module/" + name)
	return err == nil
}

// openIPVSCleanup opens the IPVS, link and set handles of this network namespace for the
// modules that are loaded; the returned func closes them.
func openIPVSCleanup(ctx context.Context, excludeCIDRs []netip.Prefix) (ipvsCleanup, func()) {
	logger := klog.FromContext(ctx)
	ic := ipvsCleanup{opts: ipvs.CleanupOptions{ExcludeCIDRs: excludeCIDRs, LocalAddrs: localAddrs()}}
	var closers []func()
	if moduleLoaded("ip_vs") {
		k, err := ipvs.NewKernel("")
		if err != nil {
			logger.Error(err, "Not cleaning up IPVS virtual servers and "+ipvs.DummyDevice)
		} else {
			ic.ipvs, ic.links = k, k
			closers = append(closers, k.Close)
		}
	}
	if moduleLoaded("ip_set") {
		sets, err := ipset.New(ipset.Options{})
		if err != nil {
			logger.Error(err, "Not cleaning up the IPVS mode's sets")
		} else {
			ic.sets = sets
			closers = append(closers, sets.Close)
		}
	}
	return ic, func() {
		for _, c := range closers {
			c()
		}
	}
}

// localAddrs are the addresses of every interface of this network namespace.
func localAddrs() []netip.Addr {
	list, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range list {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}
