package ipvs

import (
	"context"
	"errors"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ipvsStats counts what one IPVS reconcile wrote, for the sync summary.
type ipvsStats struct {
	VSAdded, VSUpdated, VSDeleted int
	RSAdded, RSUpdated, RSDeleted int
	// Draining counts real servers left at weight 0 until their connections end.
	Draining int
}

// ipvsSync is one reconcile of the IPVS table against a plan.
type ipvsSync struct {
	ipvs IPVS
	cfg  Config
	// owned reports whether an existing virtual server that no service wants is kproxy's
	// to delete.
	owned func(VSKey) bool
	// inspect reports whether the real servers of an existing virtual server must be
	// listed (every one in a sync that checks the kernel; see applyChanges for the others).
	inspect func(PlannedVS) bool
	// listed holds the real servers of the existing virtual servers when they were read at
	// once (IPVS.ListAllRealServers); nil, or a virtual server missing from it, and they
	// are listed one virtual server at a time.
	listed   map[VSKey][]RealServer
	stats    ipvsStats
	draining map[VSKey]bool // virtual servers left with draining real servers
	errs     []error
}

// ensureVirtualServers adds or updates every planned virtual server and its real servers.
// An error on one virtual server does not stop the others.
func (s *ipvsSync) ensureVirtualServers(ctx context.Context, plan Plan, have map[VSKey]VirtualServer) {
	for _, want := range plan.VirtualServers {
		cur, exists := have[want.VSKey]
		switch {
		case !exists:
			if err := s.ipvs.AddVirtualServer(ctx, want.VirtualServer); err != nil {
				s.errs = append(s.errs, err)
				continue
			}
			s.stats.VSAdded++
		case !cur.sameOptions(want.VirtualServer):
			if err := s.ipvs.UpdateVirtualServer(ctx, want.VirtualServer); err != nil {
				s.errs = append(s.errs, err)
				continue
			}
			s.stats.VSUpdated++
		}
		if exists && !s.inspect(want) {
			continue
		}
		var rss []RealServer
		if exists {
			// A virtual server this sync just added has no real servers: listing them
			// would cost one netlink dump per new service (a cold start's N) for nothing.
			var err error
			if rss, err = s.realServers(ctx, want.VSKey); err != nil {
				s.errs = append(s.errs, err)
				continue
			}
		}
		if err := s.syncRealServers(ctx, want, rss); err != nil {
			s.errs = append(s.errs, err)
		}
	}
}

// realServers returns the real servers of an existing virtual server: from listed, else
// listed now.
func (s *ipvsSync) realServers(ctx context.Context, key VSKey) ([]RealServer, error) {
	if rss, ok := s.listed[key]; ok {
		return rss, nil
	}
	return s.ipvs.ListRealServers(ctx, key)
}

// syncRealServers makes the virtual server's real servers (cur, as listed) the planned ones,
// each of weight 1; a real server no longer planned is drained (graceful termination, as
// upstream): weight 0, deleted once it has no active and no inactive connection. UDP and
// SCTP real servers are deleted at once (with expire_nodest_conn=1 their flows move on their
// next packet).
func (s *ipvsSync) syncRealServers(ctx context.Context, want PlannedVS, cur []RealServer) error {
	var errs []error
	have := map[netip.AddrPort]RealServer{}
	for _, rs := range cur {
		have[rs.Addr] = rs
	}
	for _, addr := range want.RealServers {
		rs, ok := have[addr]
		switch {
		case !ok:
			if err := s.ipvs.AddRealServer(ctx, want.VSKey, RealServer{Addr: addr, Weight: 1}); err != nil {
				errs = append(errs, err)
				continue
			}
			s.stats.RSAdded++
		case rs.Weight != 1:
			// back from draining, or weights another program changed
			if err := s.ipvs.UpdateRealServer(ctx, want.VSKey, RealServer{Addr: addr, Weight: 1}); err != nil {
				errs = append(errs, err)
				continue
			}
			s.stats.RSUpdated++
		}
	}
	for _, rs := range cur {
		if slices.Contains(want.RealServers, rs.Addr) {
			continue
		}
		if err := s.drain(ctx, want.VSKey, rs); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// drain deletes a real server that has no connections (or is UDP/SCTP), else sets its
// weight to 0 and remembers its virtual server for the next syncs.
func (s *ipvsSync) drain(ctx context.Context, key VSKey, rs RealServer) error {
	if !gracefulTerminationNeeded(key.Protocol) || rs.ActiveConn+rs.InactiveConn == 0 {
		if err := s.ipvs.DeleteRealServer(ctx, key, rs.Addr); err != nil {
			return err
		}
		s.stats.RSDeleted++
		return nil
	}
	if rs.Weight != 0 {
		if err := s.ipvs.UpdateRealServer(ctx, key, RealServer{Addr: rs.Addr, Weight: 0}); err != nil {
			return err
		}
		s.stats.RSUpdated++
	}
	s.stats.Draining++
	s.draining[key] = true
	return nil
}

// gracefulTerminationNeeded is upstream's IsRsGracefulTerminationNeeded: TCP only.
func gracefulTerminationNeeded(p v1.Protocol) bool {
	return p != v1.ProtocolUDP && p != v1.ProtocolSCTP
}

// deleteStale deletes the existing virtual servers that no service wants and that are
// kproxy's (owned); others' are left alone.
func (s *ipvsSync) deleteStale(ctx context.Context, plan Plan, have map[VSKey]VirtualServer) {
	want := make(map[VSKey]bool, len(plan.VirtualServers))
	for _, vs := range plan.VirtualServers {
		want[vs.VSKey] = true
	}
	keys := make([]VSKey, 0, len(have))
	for k := range have {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareVSKey)
	for _, k := range keys {
		if want[k] || !s.owned(k) {
			continue
		}
		if err := s.ipvs.DeleteVirtualServer(ctx, k); err != nil {
			s.errs = append(s.errs, err)
			continue
		}
		s.stats.VSDeleted++
	}
}

// ownership is which existing virtual servers kproxy may delete: of its family, outside
// ExcludeCIDRs, and on an address it binds to kube-ipvs0 (now or before this sync), in a
// service CIDR, one it planned before, or one the sets named before this sync changed
// them (setEvidence: a service's ip:port, or a node port on a node IP). A foreign virtual
// server on a node IP, on a port that is not a node port, is not kproxy's.
type ownership struct {
	cfg     Config
	bound   map[netip.Addr]bool
	planned map[VSKey]bool
	sets    *setEvidence
}

func (o ownership) owns(k VSKey) bool {
	if !o.cfg.ofFamily(k.IP) || o.cfg.excluded(k.IP) {
		return false
	}
	return o.bound[k.IP] || o.planned[k] || o.cfg.inServiceCIDRs(k.IP) || o.sets.owns(k, o.cfg.NodeIPs)
}

// inspector says which virtual servers a partial sync without a check has list their real
// servers, besides those whose planned real servers changed: those of changed services and
// those with draining real servers.
type inspector struct {
	changed  map[types.NamespacedName]struct{}
	draining map[VSKey]bool
}

func (i inspector) inspect(vs PlannedVS) bool {
	if i.draining[vs.VSKey] {
		return true
	}
	_, ok := i.changed[vs.Service.NamespacedName]
	return ok
}
