package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/ipset"
	"github.com/kproxy/kproxy/iptables"
)

// Writers are the kernel interfaces the Proxier writes through, all bound to the node's
// network namespace.
type Writers struct {
	IPVS     IPVS
	Links    Links
	IPSet    ipset.Interface
	IPTables iptables.Interface
}

// SyncStats describes the last successful sync, for the metrics layer and tests.
type SyncStats struct {
	VirtualServers, RealServers int
	// NATRules and FilterRules count the rules of the owned chains
	// (kubeproxy_sync_proxy_rules_iptables_total{table}).
	NATRules, FilterRules int
	// NoLocalEndpointsInternal and NoLocalEndpointsExternal are Plan's.
	NoLocalEndpointsInternal, NoLocalEndpointsExternal int
	VSAdded, VSUpdated, VSDeleted                      int
	RSAdded, RSUpdated, RSDeleted                      int
	// Draining is how many real servers are at weight 0 waiting for their connections.
	Draining                    int
	AddrsBound, AddrsUnbound    int
	SetEntriesAdded, SetDeleted int
	ChainsWritten, JumpsEnsured int
}

// Writes is how many kernel objects the sync changed.
func (s SyncStats) Writes() int {
	return s.VSAdded + s.VSUpdated + s.VSDeleted + s.RSAdded + s.RSUpdated + s.RSDeleted +
		s.AddrsBound + s.AddrsUnbound + s.SetEntriesAdded + s.SetDeleted + s.ChainsWritten + s.JumpsEnsured
}

// Proxier is the IPVS mode backend (proxier.Backend). Apply must not be called
// concurrently with itself.
type Proxier struct {
	w   Writers
	cfg Config

	// planned are the virtual servers of the last plan: kproxy's even when their address
	// is no longer bound anywhere.
	planned map[VSKey]bool
	// draining are the virtual servers with real servers at weight 0.
	draining map[VSKey]bool
	// synced is false until a sync succeeded, and after a failure: the next sync is full.
	synced bool
	// written is the plan the last successful sync wrote: a change-driven partial sync
	// writes the difference between the new plan and it, without listing the kernel.
	written Plan
	// cache keeps the plan of every service port between syncs.
	cache PlanCache
	// checked is when a sync last compared everything with the kernel (a full sync, or one
	// per Config.KernelCheckInterval); now is the clock (time.Now; tests replace it).
	checked time.Time
	now     func() time.Time
	// listAllFailed is set once IPVS.ListAllRealServers failed (logged once at level 0).
	listAllFailed bool

	mu              sync.Mutex // guards last, restoreFailures (read by the metrics) and serviceCIDRs
	last            SyncStats
	restoreFailures int
	// serviceCIDRs, when not nil, replaces cfg.ServiceCIDRs from the next sync on.
	serviceCIDRs []netip.Prefix
}

// NewProxier returns an IPVS mode backend writing through w. cfg.Scheduler must pass
// ValidateScheduler. It does nothing until the first Apply.
func NewProxier(w Writers, cfg Config) (*Proxier, error) {
	if err := ValidateScheduler(cfg.Scheduler); err != nil {
		return nil, err
	}
	if w.IPVS == nil || w.Links == nil || w.IPSet == nil || w.IPTables == nil {
		return nil, errors.New("ipvs proxier: every writer must be set")
	}
	return &Proxier{w: w, cfg: cfg, planned: map[VSKey]bool{}, draining: map[VSKey]bool{}, now: time.Now}, nil
}

// HasState reports whether the kernel holds the services of a proxy that ran before this one
// (a restart): kube-ipvs0 exists and has addresses bound. It writes nothing.
func (p *Proxier) HasState(ctx context.Context) bool {
	addrs, err := p.w.Links.ListAddrs(ctx, DummyDevice)
	return err == nil && len(addrs) > 0
}

// SetServiceCIDRs sets the service ranges (Config.ServiceCIDRs: a virtual server in them that
// no service wants is kproxy's to delete) from the next sync on: the ServiceCIDR objects of
// the cluster, when --service-cluster-ip-range does not name them. Safe to call from any
// goroutine.
func (p *Proxier) SetServiceCIDRs(cidrs []netip.Prefix) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serviceCIDRs = append([]netip.Prefix{}, cidrs...)
}

// Mode returns "ipvs".
func (p *Proxier) Mode() string { return "ipvs" }

// LastSync returns the stats of the last successful sync. Safe to call during Apply.
func (p *Proxier) LastSync() SyncStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// RestoreFailures counts the failed iptables-restore runs since the proxier was built
// (kubeproxy_sync_proxy_rules_iptables_restore_failures_total). Safe to call during Apply.
func (p *Proxier) RestoreFailures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restoreFailures
}

// Apply brings the kernel to the state snap describes: ipsets, then virtual and real
// servers, then kube-ipvs0 addresses, then the iptables chains, then the removal of stale
// addresses and virtual servers (see the package documentation). Only the difference is
// written. A full sync, and a partial one once Config.KernelCheckInterval has passed
// since the last that did, compares the plan with the kernel's state (a check: every
// object listed, the real servers of every virtual server too); another partial sync
// compares it with the plan the last sync wrote and lists only the real servers of the
// changed services and of virtual servers with draining real servers: its kernel work is
// O(changes).
func (p *Proxier) Apply(ctx context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo, full bool) error {
	start := p.now()
	p.mu.Lock()
	if p.serviceCIDRs != nil {
		p.cfg.ServiceCIDRs = p.serviceCIDRs
	}
	p.mu.Unlock()
	full = full || !p.synced
	check := full || p.checkDue(start.Sub(p.checked), len(snap.Changed) > 0)
	changed := snap.Changed
	if full {
		changed = nil // replan every service
	}
	in := PlanInput{Services: snap.Services, Endpoints: snap.Endpoints, Node: node, Config: p.cfg}
	plan := p.cache.Plan(in, changed)
	var st SyncStats
	var err error
	if check {
		st, err = p.applyChecked(ctx, plan)
	} else {
		st, err = p.applyChanges(ctx, plan, snap)
	}
	if err != nil {
		p.synced = false
		return err
	}
	p.synced, p.written = true, plan
	if check {
		// counted from the end: after a long check (a cold start's) the next sync is not
		// another check at once
		p.checked = p.now()
	}
	p.mu.Lock()
	p.last = st
	p.mu.Unlock()
	klog.FromContext(ctx).V(2).Info("Synced IPVS rules", "ipFamily", p.cfg.Family, "full", full, "kernelChecked", check,
		"virtualServers", st.VirtualServers, "realServers", st.RealServers, "writes", st.Writes(),
		"draining", st.Draining, "conflicts", plan.Conflicts, "elapsed", p.now().Sub(start))
	return nil
}

// busyCheckFactor is how many Config.KernelCheckIntervals a partial sync that carries changes
// lets pass before it checks the kernel; an idle one (the periodic tick) checks after one. At
// 10,000 services a check lists every virtual server's real servers: in the TCG VM 12-36 s
// under kpbench's churn (100 endpoint changes a second), every change meanwhile waiting behind
// it (bench/results/2026-12-07-make-bench-ipvs-n10000.md). While changes keep coming, drift
// is then repaired within 4 intervals (kproxy: twice the sync period), not one.
const busyCheckFactor = 4

// checkDue reports whether a partial sync checks the kernel, since the last check, busy when
// it carries changes.
func (p *Proxier) checkDue(since time.Duration, busy bool) bool {
	interval := p.cfg.KernelCheckInterval
	if busy {
		interval *= busyCheckFactor
	}
	return interval > 0 && since >= interval
}

// planStats are the sizes of the plan, for SyncStats.
func planStats(plan Plan) SyncStats {
	st := SyncStats{VirtualServers: len(plan.VirtualServers),
		NoLocalEndpointsInternal: plan.NoLocalEndpointsInternal, NoLocalEndpointsExternal: plan.NoLocalEndpointsExternal}
	for _, vs := range plan.VirtualServers {
		st.RealServers += len(vs.RealServers)
	}
	for _, c := range plan.Chains {
		if c.Table == iptables.TableNAT {
			st.NATRules += len(c.Rules)
		} else {
			st.FilterRules += len(c.Rules)
		}
	}
	return st
}

// applyChecked makes one sync that checks the kernel: it lists the addresses, the sets, the
// virtual servers and the real servers of every one of them, and the iptables tables, and
// writes what differs from the plan.
func (p *Proxier) applyChecked(ctx context.Context, plan Plan) (SyncStats, error) {
	st := planStats(plan)
	if _, err := p.w.Links.EnsureDummy(ctx, DummyDevice); err != nil {
		return st, err
	}
	boundList, err := p.w.Links.ListAddrs(ctx, DummyDevice)
	if err != nil {
		return st, err
	}
	bound := map[netip.Addr]bool{}
	for _, a := range boundList {
		bound[a] = true
	}
	evidence := newSetEvidence()
	res, err := ipset.Reconcile(ctx, p.w.IPSet, plan.Sets, ipset.ReconcileOptions{
		RebuildThreshold: p.cfg.IPSetRebuildThreshold, Observe: evidence.add})
	st.SetEntriesAdded, st.SetDeleted = res.Added, res.Deleted
	if err != nil {
		return st, err
	}
	have, err := p.listVirtualServers(ctx)
	if err != nil {
		return st, err
	}
	sync := &ipvsSync{
		ipvs: p.w.IPVS, cfg: p.cfg, draining: map[VSKey]bool{},
		owned:   ownership{cfg: p.cfg, bound: bound, planned: p.planned, sets: evidence}.owns,
		inspect: func(PlannedVS) bool { return true },
	}
	if len(have) > 0 {
		// every real server in one read, not one dump per virtual server; if the read
		// fails, ensureVirtualServers lists them one virtual server at a time
		listed, lerr := p.w.IPVS.ListAllRealServers(ctx)
		if lerr != nil {
			lvl := 4
			if !p.listAllFailed {
				lvl, p.listAllFailed = 0, true
			}
			klog.FromContext(ctx).V(lvl).Info("Cannot read the IPVS table at once: kernel checks list the real servers one virtual server at a time", "err", lerr)
		}
		sync.listed = listed
	}
	sync.ensureVirtualServers(ctx, plan, have)
	var errs []error
	errs = append(errs, p.bindAddrs(ctx, plan, bound, &st)...)
	rst, err := syncRules(ctx, p.w.IPTables, p.cfg.Family, plan.Chains)
	st.ChainsWritten, st.JumpsEnsured = rst.ChainsWritten, rst.JumpsEnsured
	if err != nil {
		errs = append(errs, err)
	}
	if rst.RestoreFailed {
		p.mu.Lock()
		p.restoreFailures++
		p.mu.Unlock()
	}
	errs = append(errs, p.unbindStale(ctx, plan, boundList, &st)...)
	sync.deleteStale(ctx, plan, have)
	errs = append(errs, sync.errs...)
	p.recordIPVS(plan, sync, &st)
	return st, errors.Join(errs...)
}

func (p *Proxier) listVirtualServers(ctx context.Context) (map[VSKey]VirtualServer, error) {
	list, err := p.w.IPVS.ListVirtualServers(ctx)
	if err != nil {
		return nil, err
	}
	have := make(map[VSKey]VirtualServer, len(list))
	for _, vs := range list {
		have[vs.VSKey] = vs
	}
	return have, nil
}

// addTo copies what an IPVS reconcile wrote into the sync's stats.
func (s ipvsStats) addTo(st *SyncStats) {
	st.VSAdded, st.VSUpdated, st.VSDeleted = s.VSAdded, s.VSUpdated, s.VSDeleted
	st.RSAdded, st.RSUpdated, st.RSDeleted, st.Draining = s.RSAdded, s.RSUpdated, s.RSDeleted, s.Draining
}

func (p *Proxier) recordIPVS(plan Plan, sync *ipvsSync, st *SyncStats) {
	sync.stats.addTo(st)
	planned := make(map[VSKey]bool, len(plan.VirtualServers))
	for _, vs := range plan.VirtualServers {
		planned[vs.VSKey] = true
	}
	p.planned, p.draining = planned, sync.draining
}

// bindAddrs binds the planned addresses that kube-ipvs0 lacks.
func (p *Proxier) bindAddrs(ctx context.Context, plan Plan, bound map[netip.Addr]bool, st *SyncStats) []error {
	var errs []error
	for _, ip := range plan.Bind {
		if bound[ip] {
			continue
		}
		if err := p.w.Links.AddAddr(ctx, DummyDevice, ip); err != nil {
			errs = append(errs, err)
			continue
		}
		st.AddrsBound++
	}
	return errs
}

// unbindStale removes from kube-ipvs0 the addresses of the family that no service wants,
// except those in ExcludeCIDRs.
func (p *Proxier) unbindStale(ctx context.Context, plan Plan, bound []netip.Addr, st *SyncStats) []error {
	want := map[netip.Addr]bool{}
	for _, ip := range plan.Bind {
		want[ip] = true
	}
	var errs []error
	for _, ip := range bound {
		if want[ip] || !p.cfg.ofFamily(ip) || p.cfg.excluded(ip) {
			continue
		}
		if err := p.w.Links.DelAddr(ctx, DummyDevice, ip); err != nil {
			errs = append(errs, fmt.Errorf("remove stale address: %w", err))
			continue
		}
		st.AddrsUnbound++
	}
	return errs
}

// applyChanges makes one partial sync without a check: it compares the plan with the one
// the last sync wrote (p.written, which that sync left in the kernel) and writes the
// difference, in applyChecked's order. It lists only the real servers of the virtual servers of
// changed services, of those whose real servers the plans disagree on, and of those with
// draining real servers. Whatever was changed by hand meanwhile is the next check's to
// repair; a write the kernel refuses fails the sync, and the next one is full.
func (p *Proxier) applyChanges(ctx context.Context, plan Plan, snap endpoints.Snapshot) (SyncStats, error) {
	st := planStats(plan)
	if plan.delta != nil {
		return p.applyDelta(ctx, plan, st)
	}
	prev := p.written
	res, err := ipset.ReconcileFrom(ctx, p.w.IPSet, prev.Sets, plan.Sets, ipset.ReconcileOptions{RebuildThreshold: p.cfg.IPSetRebuildThreshold})
	st.SetEntriesAdded, st.SetDeleted = res.Added, res.Deleted
	if err != nil {
		return st, err
	}
	before := make(map[VSKey]PlannedVS, len(prev.VirtualServers))
	for _, vs := range prev.VirtualServers {
		before[vs.VSKey] = vs
	}
	sync := &ipvsSync{ipvs: p.w.IPVS, cfg: p.cfg, draining: map[VSKey]bool{},
		owned: ownership{cfg: p.cfg, planned: p.planned}.owns}
	changed := inspector{changed: snap.Changed, draining: p.draining}
	sync.inspect = func(vs PlannedVS) bool {
		old := before[vs.VSKey]
		return changed.inspect(vs) || !slices.Equal(old.RealServers, vs.RealServers)
	}
	// the virtual servers the last plan had: "existing" for ensureVirtualServers (its
	// options as planned then), and the candidates for deletion
	have := make(map[VSKey]VirtualServer, len(before))
	for k, vs := range before {
		have[k] = vs.VirtualServer
	}
	sync.ensureVirtualServers(ctx, plan, have)
	var errs []error
	bound := make(map[netip.Addr]bool, len(prev.Bind))
	for _, ip := range prev.Bind {
		bound[ip] = true
	}
	errs = append(errs, p.bindAddrs(ctx, plan, bound, &st)...)
	if !slices.EqualFunc(prev.Chains, plan.Chains, ChainRules.equal) {
		rst, err := syncRules(ctx, p.w.IPTables, p.cfg.Family, plan.Chains)
		st.ChainsWritten, st.JumpsEnsured = rst.ChainsWritten, rst.JumpsEnsured
		if err != nil {
			errs = append(errs, err)
		}
		if rst.RestoreFailed {
			p.mu.Lock()
			p.restoreFailures++
			p.mu.Unlock()
		}
	}
	errs = append(errs, p.unbindStale(ctx, plan, prev.Bind, &st)...)
	sync.deleteStale(ctx, plan, have)
	errs = append(errs, sync.errs...)
	p.recordIPVS(plan, sync, &st)
	return st, errors.Join(errs...)
}

// applyDelta is applyChanges for a plan that differs from the last one written only in the
// real servers of plan.delta's virtual servers (PlanCache patched it): the sets, addresses,
// chains and virtual servers are the same, so only those virtual servers' real servers,
// and those of virtual servers with draining real servers, are listed and synced. Its
// work is O(changes), not O(services).
func (p *Proxier) applyDelta(ctx context.Context, plan Plan, st SyncStats) (SyncStats, error) {
	keys := slices.Clone(plan.delta)
	for k := range p.draining {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareVSKey)
	keys = slices.Compact(keys)
	var sub Plan
	have := make(map[VSKey]VirtualServer, len(keys))
	for _, k := range keys {
		want, ok := plan.find(k)
		if !ok {
			continue
		}
		sub.VirtualServers = append(sub.VirtualServers, want)
		if old, ok := p.written.find(k); ok {
			have[k] = old.VirtualServer
		}
	}
	sync := &ipvsSync{ipvs: p.w.IPVS, cfg: p.cfg, draining: map[VSKey]bool{},
		inspect: func(PlannedVS) bool { return true }}
	sync.ensureVirtualServers(ctx, sub, have)
	sync.stats.addTo(&st)
	p.draining = sync.draining // p.planned stays: the same virtual servers
	return st, errors.Join(sync.errs...)
}
