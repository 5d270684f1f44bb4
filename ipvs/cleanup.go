package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/kproxy/kproxy/ipset"
)

// kproxy --cleanup removes what the IPVS mode (kproxy's or kube-proxy's, which share every
// name) made, and nothing else, in three steps around the iptables cleanup:
//
//  1. CleanupVirtualServers, while kube-ipvs0 and the sets still say which virtual servers
//     are ours: those on an address bound to kube-ipvs0, those whose ip,proto:port is in
//     KUBE-CLUSTER-IP, KUBE-EXTERNAL-IP(-LOCAL), KUBE-LOAD-BALANCER or
//     KUBE-NODE-PORT-SCTP-HASH, and those on a local address (a node port) whose port is in
//     KUBE-NODE-PORT-TCP / -UDP. Upstream flushes the whole IPVS table instead.
//  2. The iptables chains (the caller's; the sets are still referenced until then).
//  3. CleanupSetsAndDevice: kube-proxy's sets of both families (exact names, and their
//     temporaries) and the kube-ipvs0 dummy device.
//
// Excluded ranges (--ipvs-exclude-cidrs) are left alone throughout: their virtual servers,
// and their kube-ipvs0 addresses (kube-ipvs0 then stays, with only those).

// CleanupOptions are the inputs of the cleanup besides the kernel.
type CleanupOptions struct {
	// ExcludeCIDRs (--ipvs-exclude-cidrs): virtual servers and kube-ipvs0 addresses in these
	// ranges are not removed.
	ExcludeCIDRs []netip.Prefix
	// LocalAddrs are the node's addresses: a virtual server on one of them whose port is in
	// a node-port bitmap set is a node port.
	LocalAddrs []netip.Addr
}

func (o CleanupOptions) excluded(a netip.Addr) bool {
	return slices.ContainsFunc(o.ExcludeCIDRs, func(p netip.Prefix) bool { return p.Contains(a) })
}

// CleanupResult is what the cleanup removed and what it left.
type CleanupResult struct {
	VirtualServersDeleted, VirtualServersKept int
	// SetsDestroyed are the sets destroyed; SetsInUse those left because a rule kproxy
	// does not own (a chain left in place) still references them.
	SetsDestroyed, SetsInUse []string
	// DummyDeleted says whether kube-ipvs0 was deleted; AddrsUnbound counts the addresses
	// removed from it when excluded ones keep it.
	DummyDeleted bool
	AddrsUnbound int
}

// cleanupOwnership is the evidence of which virtual servers are kproxy's.
type cleanupOwnership struct {
	opts  CleanupOptions
	bound map[netip.Addr]bool
	sets  *setEvidence
}

// owns is the ownership rule of CleanupVirtualServers.
func (o cleanupOwnership) owns(k VSKey) bool {
	if o.opts.excluded(k.IP) {
		return false
	}
	return o.bound[k.IP] || o.sets.owns(k, o.opts.LocalAddrs)
}

// CleanupVirtualServers deletes the virtual servers kproxy owns (see the rule above) and
// returns how many it deleted and kept. A missing kube-ipvs0 or set is no evidence, not
// an error; sets may be nil (no ipset support: no set evidence).
func CleanupVirtualServers(ctx context.Context, ipvs IPVS, links Links, sets ipset.Interface, opts CleanupOptions) (CleanupResult, error) {
	var res CleanupResult
	own, err := readOwnership(ctx, links, sets, opts)
	if err != nil {
		return res, err
	}
	list, err := ipvs.ListVirtualServers(ctx)
	if err != nil {
		return res, fmt.Errorf("list virtual servers: %w", err)
	}
	var errs []error
	for _, vs := range list {
		if !own.owns(vs.VSKey) {
			res.VirtualServersKept++
			continue
		}
		if err := ipvs.DeleteVirtualServer(ctx, vs.VSKey); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		res.VirtualServersDeleted++
	}
	return res, errors.Join(errs...)
}

func readOwnership(ctx context.Context, links Links, sets ipset.Interface, opts CleanupOptions) (cleanupOwnership, error) {
	own := cleanupOwnership{opts: opts, bound: map[netip.Addr]bool{}, sets: newSetEvidence()}
	bound, err := links.ListAddrs(ctx, DummyDevice)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return own, err
	}
	for _, a := range bound {
		own.bound[a] = true
	}
	if sets == nil {
		return own, nil
	}
	for _, fam := range []ipset.Family{ipset.FamilyIPv4, ipset.FamilyIPv6} {
		for _, name := range evidenceSets(fam) {
			entries, err := listIfExists(ctx, sets, name)
			if err != nil {
				return own, err
			}
			own.sets.add(name, entries)
		}
	}
	return own, nil
}

func listIfExists(ctx context.Context, sets ipset.Interface, name string) ([]ipset.Entry, error) {
	entries, err := sets.ListEntries(ctx, name)
	if errors.Is(err, ipset.ErrNotFound) {
		return nil, nil
	}
	return entries, err
}

// kubeSetNames are the sets the cleanup destroys: kube-proxy's, both families, with their
// temporaries.
func kubeSetNames() []string {
	var names []string
	for _, fam := range []ipset.Family{ipset.FamilyIPv4, ipset.FamilyIPv6} {
		for _, s := range ipset.KubeSets(fam) {
			names = append(names, s.Name)
		}
	}
	return names
}

// CleanupSetsAndDevice destroys kube-proxy's sets (a set a foreign rule still references
// is left, in res.SetsInUse) and deletes kube-ipvs0, or, when it holds excluded addresses,
// only unbinds the others. Call it after the iptables chains are gone. A nil links or sets
// skips that part.
func CleanupSetsAndDevice(ctx context.Context, links Links, sets ipset.Interface, opts CleanupOptions, res *CleanupResult) error {
	var errs []error
	var existing []string
	if sets != nil {
		var err error
		if existing, err = sets.ListSets(ctx); err != nil {
			errs = append(errs, fmt.Errorf("list sets: %w", err))
		}
	}
	own := ipset.Ownership{Names: kubeSetNames()}
	for _, name := range existing {
		if !own.Owns(name) {
			continue
		}
		switch err := sets.DestroySet(ctx, name); {
		case errors.Is(err, ipset.ErrInUse):
			res.SetsInUse = append(res.SetsInUse, name)
		case err != nil:
			errs = append(errs, err)
		default:
			res.SetsDestroyed = append(res.SetsDestroyed, name)
		}
	}
	if links == nil {
		return errors.Join(errs...)
	}
	bound, err := links.ListAddrs(ctx, DummyDevice)
	if errors.Is(err, ErrNotFound) {
		return errors.Join(errs...)
	}
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if !slices.ContainsFunc(bound, opts.excluded) {
		if err := links.DeleteDummy(ctx, DummyDevice); err != nil {
			errs = append(errs, err)
		} else {
			res.DummyDeleted = true
		}
		return errors.Join(errs...)
	}
	for _, a := range bound {
		if opts.excluded(a) {
			continue
		}
		if err := links.DelAddr(ctx, DummyDevice, a); err != nil {
			errs = append(errs, err)
			continue
		}
		res.AddrsUnbound++
	}
	return errors.Join(errs...)
}
