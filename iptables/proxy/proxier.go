package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/endpoints"
	"github.com/kproxy/kproxy/iptables"
)

// chainState is the rules of each owned chain of each table, in iptables-save's canonical
// form.
type chainState map[iptables.Table]map[iptables.Chain][]string

// RuleCounts describes the rules of the last successful sync (all of them, written or not),
// for the metrics layer.
type RuleCounts struct {
	// NATRules and FilterRules are kubeproxy_sync_proxy_rules_iptables_total{table="nat"|"filter"}.
	NATRules, NATChains       int
	FilterRules, FilterChains int
	// NoLocalEndpointsInternal and NoLocalEndpointsExternal are
	// kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"|"external"}.
	NoLocalEndpointsInternal, NoLocalEndpointsExternal int
	// LargeCluster: more than 1,000 endpoints, per-endpoint comments left out.
	LargeCluster bool
}

// SyncStats are cumulative counters since the proxier was built.
type SyncStats struct {
	// Restores counts iptables-restore runs; RestoreFailures the failed ones
	// (kubeproxy_sync_proxy_rules_iptables_restore_failures_total), PartialRestoreFailures
	// those of partial syncs (kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total).
	Restores, RestoreFailures, PartialRestoreFailures int
	// Verifications counts idle syncs that compared the kernel's tables with the desired
	// state; Repairs those that found something to rewrite.
	Verifications, Repairs int
	// Quiet counts idle syncs that did not read the tables: the nf_tables generation showed
	// that nothing changed in the kernel since a verification found it as desired or since
	// the proxier's own restores.
	Quiet int
}

// Proxier is the iptables mode backend. Apply must not be called concurrently with itself;
// LastRuleCount and Stats may be called from any goroutine.
type Proxier struct {
	ipt iptables.Interface
	cfg Config

	// known is what the owned chains hold in the kernel, as far as the proxier knows; nil
	// until a full sync read it, and after a failure.
	known chainState
	// cache holds each service port's rendered rules between syncs; a full sync starts it
	// afresh.
	cache *portCache

	mu     sync.Mutex
	counts RuleCounts
	stats  SyncStats
	// serviceCIDRs, when not nil, replaces cfg.ServiceCIDRs from the next sync on.
	serviceCIDRs []netip.Prefix

	// knownGen is the nf_tables generation at which the kernel held known: read before a
	// full or verify sync's read, or after the proxier's own restores. While the generation
	// stays there, nothing else changed any table, and a partial sync may edit long chains by
	// rule position (planWrite). A restore that followed someone else's change, or another
	// writer committing between the end of a restore and this read, could leave a later
	// position wrong; the next verification repairs it.
	knownGen      uint32
	knownGenValid bool
	// exactGen is the stricter mark the periodic verification trusts (syncQuiet): the
	// generation at which a read found the tables, or after restores that started from
	// exactGen and moved it by exactly their own commits (one per table). Any other writer
	// moves it further, so the next idle sync reads the tables and repairs what it finds.
	exactGen      uint32
	exactGenValid bool

	// arranged is the last arrangeServices result of each of orderFreeChains, kept because
	// most syncs change nothing in them: comparing two slices of the same strings is cheaper
	// than placing 10,000 lines again.
	arranged map[iptables.Chain]arrangement
}

// orderFreeChains are the nat chains whose service rules stay in the kernel's order
// (arrangeServices).
var orderFreeChains = []iptables.Chain{iptables.ChainKubeServices, iptables.ChainKubeNodePorts}

// arrangement is one result of arrangeServices: the lines it returned for want when the
// kernel held them.
type arrangement struct {
	want, lines []string
	reordered   bool
}

// NewProxier returns an iptables mode backend writing through ipt. It does nothing until the
// first Apply.
func NewProxier(ipt iptables.Interface, cfg Config) *Proxier {
	return &Proxier{ipt: ipt, cfg: cfg, cache: newPortCache()}
}

// SetServiceCIDRs sets the service ranges (Config.ServiceCIDRs) from the next sync on: the
// ServiceCIDR objects of the cluster. Safe to call from any goroutine.
func (p *Proxier) SetServiceCIDRs(cidrs []netip.Prefix) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serviceCIDRs = append([]netip.Prefix{}, cidrs...)
}

// Mode returns "iptables".
func (p *Proxier) Mode() string { return "iptables" }

// LastRuleCount returns the rule and chain counts of the last successful sync.
func (p *Proxier) LastRuleCount() RuleCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

// Stats returns the cumulative counters.
func (p *Proxier) Stats() SyncStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// syncKind is how much of the kernel a sync looks at.
type syncKind string

const (
	// syncPartial trusts what the proxier remembers of the kernel.
	syncPartial syncKind = "partial"
	// syncVerify is a partial sync with nothing changed (the periodic tick): it reads the
	// tables with iptables-save and rewrites whatever someone changed by hand.
	syncVerify syncKind = "verify"
	// syncFull reads the tables, as syncVerify, and is what the reconciler asks for at start,
	// hourly and after a failure.
	syncFull syncKind = "full"
	// syncQuiet is a syncVerify that found the nf_tables generation where the last
	// verification or the proxier's own last restores left it (exactGen): nobody changed any
	// ruleset since, so it trusts what the proxier knows, as syncPartial (it still writes
	// what changed on the proxier's side, e.g. the service CIDRs).
	syncQuiet syncKind = "quiet"
)

// reads reports whether a sync of this kind reads the kernel's tables first.
func (k syncKind) reads() bool { return k == syncFull || k == syncVerify }

// Apply brings the owned chains to the state snap describes, writing only what differs from
// the kernel (see the package documentation). A full sync, and a partial one with nothing
// changed, read the kernel's tables first and compare every chain; a partial sync trusts what
// the proxier knows and compares only the shared chains and the chains of the service ports
// it rendered again. After a partial sync's restore the canary chains are checked: when one
// disappeared (someone flushed the tables), a full sync follows at once. Checking after the
// restore keeps the two iptables execs of the check off the path from a change to the
// kernel; a partial restore into flushed tables fails (its chains jump to chains that are
// gone) or is rewritten by the full sync, and does not count as a failure. With
// Config.Generation, a sync with nothing changed reads the tables only when the nf_tables
// generation moved since the last read, or the proxier's own last restores, left the kernel
// exactly as known (exactGen, syncQuiet), and a partial sync that found the generation where
// the proxier's last read or restore left it (knownGen) skips the canary check: nothing can
// have flushed the tables.
func (p *Proxier) Apply(ctx context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo, full bool) error {
	kind := p.chooseKind(full, len(snap.Changed) == 0)
	if kind == syncVerify && p.kernelExact(ctx) {
		kind = syncQuiet
	}
	asKnown, err := p.sync(ctx, snap, node, kind)
	if kind == syncPartial && !asKnown {
		if gone, cerr := p.canaryGone(ctx); cerr != nil || gone {
			klog.FromContext(ctx).V(2).Info("Canary chain missing or unreadable: doing a full sync", "err", cerr, "partialSyncErr", err)
			kind = syncFull
			_, err = p.sync(ctx, snap, node, kind)
		}
	}
	if err != nil {
		return p.fail(err, kind)
	}
	return nil
}

// sync is one sync of the given kind. asKnown reports that the kernel held what the proxier
// knew when the sync began: it read the tables, or the nf_tables generation showed that
// nothing else wrote since the proxier last did (knownGen).
func (p *Proxier) sync(ctx context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo, kind syncKind) (asKnown bool, err error) {
	logger := klog.FromContext(ctx)
	start := time.Now()
	// gen is the nf_tables generation the sync starts from, read once; exact reports that
	// the kernel held exactly what the plan is made from at gen.
	var gen uint32
	var genOK, exact bool
	if kind.reads() {
		if gen, genOK, err = p.refreshKnown(ctx); err != nil {
			return false, err
		}
		asKnown, exact = true, genOK
	} else {
		gen, genOK = p.generation(ctx)
		asKnown = genOK && p.knownGenValid && gen == p.knownGen
		exact = genOK && p.exactGenValid && gen == p.exactGen
	}
	if kind == syncFull {
		p.cache = newPortCache()
	}
	p.mu.Lock()
	if p.serviceCIDRs != nil {
		p.cfg.ServiceCIDRs = p.serviceCIDRs
	}
	p.mu.Unlock()
	in := Input{Services: snap.Services, Endpoints: snap.Endpoints, Node: node, Config: p.cfg}
	if len(p.cfg.NodePortAddresses) > 0 {
		ips, err := p.nodePortIPs()
		if err != nil {
			return asKnown, err
		}
		in.NodePortIPs = ips
	}
	changes, r := p.cache.update(in, snap.Changed)
	rules, counts := p.cache.rules(r, in.NodePortIPs, kind.reads())
	rules.NAT = p.inKernelOrder(rules.NAT)
	var w writePlan
	var desired chainState
	batch := p.cfg.batchFor(len(p.known[iptables.TableNAT]))
	if !kind.reads() {
		chains, gone := changedChains(changes)
		w = planWrite(p.known, slices.Concat(rules.NAT, chains), rules.Filter, p.knownChains(gone), batch, asKnown)
	} else {
		desired = stateOf(rules)
		w = planWrite(p.known, rules.NAT, rules.Filter, staleChains(p.known, desired), batch, asKnown)
		// What was read is not needed any more (desired replaces it below): free
		// iptables-save's output before the restores.
		p.known = nil
	}
	commits := 0
	for i, tx := range w.restores {
		commits += tx.Commits()
		data := tx.Bytes()
		logger.V(9).Info("Restoring iptables rules", "restore", i+1, "of", len(w.restores), "payload", string(data))
		p.count(func(s *SyncStats) { s.Restores++ })
		if err := p.ipt.Restore(ctx, data); err != nil {
			return asKnown, fmt.Errorf("restore iptables rules (%d of %d): %w", i+1, len(w.restores), err)
		}
	}
	if !kind.reads() {
		w.record(p.known)
	} else {
		p.known = desired
	}
	switch {
	case len(w.restores) > 0:
		// Each restore moves the generation once per table it commits. Any other move (a
		// commit by someone else, before or between the restores) leaves the kernel unknown:
		// the next idle sync reads it. (A commit by someone else exactly between the last
		// restore and this read, with one of ours not counted by the kernel, would go
		// unnoticed until the hourly full sync.)
		now, ok := p.generation(ctx)
		p.knownGen, p.knownGenValid = now, ok
		p.exactGen, p.exactGenValid = now, ok && exact && now-gen == uint32(commits)
	case kind.reads():
		p.knownGen, p.knownGenValid = gen, genOK
		p.exactGen, p.exactGenValid = gen, genOK
	}
	p.mu.Lock()
	p.counts = counts
	switch kind {
	case syncVerify:
		p.stats.Verifications++
		if len(w.restores) > 0 {
			p.stats.Repairs++
		}
	case syncQuiet:
		p.stats.Quiet++
	}
	p.mu.Unlock()
	logger.V(2).Info("Synced iptables rules", "sync", kind, "servicePorts", rules.ServicePorts,
		"endpoints", rules.Endpoints, "renderedPorts", len(changes), "natRules", counts.NATRules,
		"natChains", counts.NATChains, "filterRules", counts.FilterRules, "restores", len(w.restores),
		"chainsWritten", w.chainsWritten, "chainsEdited", w.chainsEdited, "rulesWritten", w.rulesWritten,
		"rulesDeleted", w.rulesDeleted, "chainsDeleted", w.chainsDeleted,
		"elapsed", time.Since(start))
	return asKnown, nil
}

// inKernelOrder returns nat with the lines of KUBE-SERVICES and KUBE-NODEPORTS in the order
// the kernel holds them, as far as the proxier knows (arrangeServices). nat, which may be the
// cache's, is not changed.
func (p *Proxier) inKernelOrder(nat []ChainRules) []ChainRules {
	if p.arranged == nil {
		p.arranged = map[iptables.Chain]arrangement{}
	}
	out := nat
	for _, chain := range orderFreeChains {
		have, ok := p.known[iptables.TableNAT][chain]
		i := slices.IndexFunc(nat, func(c ChainRules) bool { return c.Chain == chain })
		if !ok || i < 0 {
			continue
		}
		want := nat[i].lines
		a := p.arranged[chain]
		if !slices.Equal(want, a.want) || !slices.Equal(have, a.lines) {
			a.lines, a.reordered = arrangeServices(have, want)
			a.want = want
			p.arranged[chain] = a
		}
		if !a.reordered {
			continue
		}
		if &out[0] == &nat[0] {
			out = slices.Clone(nat)
		}
		out[i].lines, out[i].Rules = a.lines, nil // writeChain writes the lines, in their order
	}
	return out
}

// chooseKind decides how much of the kernel the sync reads. It goes full when the proxier
// knows nothing (the first sync, after a failure).
func (p *Proxier) chooseKind(full, idle bool) syncKind {
	switch {
	case full || p.known == nil:
		return syncFull
	case idle:
		return syncVerify
	}
	return syncPartial
}

// kernelExact reports whether the nf_tables generation is at exactGen (false without
// Config.Generation, or after a failure).
func (p *Proxier) kernelExact(ctx context.Context) bool {
	if !p.exactGenValid {
		return false
	}
	gen, ok := p.generation(ctx)
	return ok && gen == p.exactGen
}

// generation reads Config.Generation; ok is false without one or when it fails.
func (p *Proxier) generation(ctx context.Context) (uint32, bool) {
	if p.cfg.Generation == nil {
		return 0, false
	}
	gen, ok, err := p.cfg.Generation()
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Cannot read the nf_tables generation: verifying by reading the tables", "err", err)
		return 0, false
	}
	return gen, ok
}

// refreshKnown reads the owned chains with iptables-save and puts back missing base chains,
// canaries and base-chain jumps. gen is the nf_tables generation read before the read that
// known comes from (ok false without one): a change after it moves it, so it cannot hide.
// When base chains were missing, the tables are read again after they are put back, from a
// generation that counts those writes (a cold start, or after a flush: small tables).
func (p *Proxier) refreshKnown(ctx context.Context) (gen uint32, ok bool, err error) {
	gen, ok = p.generation(ctx)
	known, builtin, err := p.readKernel(ctx)
	if err != nil {
		return 0, false, err
	}
	if p.missingBase(builtin) {
		if err := p.ensureBase(ctx); err != nil {
			return 0, false, err
		}
		gen, ok = p.generation(ctx)
		if known, _, err = p.readKernel(ctx); err != nil {
			return 0, false, err
		}
	}
	p.known = known
	return gen, ok, nil
}

// fail forgets the kernel state, so that the next sync is full, counts the failure and
// returns err.
func (p *Proxier) fail(err error, kind syncKind) error {
	p.known = nil
	p.knownGenValid, p.exactGenValid = false, false
	p.count(func(s *SyncStats) {
		s.RestoreFailures++
		if !kind.reads() {
			s.PartialRestoreFailures++
		}
	})
	return err
}

func (p *Proxier) count(f func(*SyncStats)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.stats)
}

// nodePortIPs lists the node's addresses inside Config.NodePortAddresses.
func (p *Proxier) nodePortIPs() ([]netip.Addr, error) {
	list := p.cfg.InterfaceAddrs
	if list == nil {
		list = processAddrs
	}
	addrs, err := list()
	if err != nil {
		return nil, fmt.Errorf("list node addresses for --nodeport-addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		for _, prefix := range p.cfg.NodePortAddresses {
			if prefix.Contains(a) {
				out = append(out, a)
				break
			}
		}
	}
	return out, nil
}

// processAddrs lists the addresses of the network namespace the process runs in.
func processAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// canonicalRules returns a function that gives a rule as iptables-save prints it, or its own
// text when it cannot be canonicalised (see canonicaliseChain).
func canonicalRules(fam iptables.Family) func(iptables.Table, iptables.Rule) string {
	return func(table iptables.Table, r iptables.Rule) string {
		text, err := iptables.CanonicalRule(fam, table, r...)
		if err != nil {
			return r.String()
		}
		return text
	}
}

// renderCanonical renders in from scratch, every rule canonicalised: what a fresh proxier's
// full sync compares with the kernel.
func renderCanonical(in Input) Rules {
	c := newPortCache()
	_, r := c.update(in, nil)
	rules, _ := c.rules(r, in.NodePortIPs, true)
	return rules
}

// FirstSyncRestores returns the iptables-restore inputs, in order, that a proxier's first
// sync writes for in into tables that hold none of its chains: every chain, Config.BatchServices
// services per restore, then the shared chains (see planWrite). For benchmarks: the floor
// under a cold start.
func FirstSyncRestores(in Input) [][]byte {
	rules := renderCanonical(in)
	w := planWrite(chainState{}, rules.NAT, rules.Filter, nil, in.Config.batchServices(), false)
	out := make([][]byte, 0, len(w.restores))
	for _, tx := range w.restores {
		out = append(out, tx.Bytes())
	}
	return out
}

// stateOf is the canonical content of every chain of r (assembled with lines).
func stateOf(r Rules) chainState {
	s := chainState{}
	for table, chains := range r.byTable() {
		s[table] = make(map[iptables.Chain][]string, len(chains))
		for _, c := range chains {
			s[table][c.Chain] = c.lines
		}
	}
	return s
}

// knownChains are the nat chains of list that the kernel holds, as far as the proxier knows.
func (p *Proxier) knownChains(list []iptables.Chain) []iptables.Chain {
	var out []iptables.Chain
	for _, c := range list {
		if _, ok := p.known[iptables.TableNAT][c]; ok {
			out = append(out, c)
		}
	}
	return out
}

func (r Rules) byTable() map[iptables.Table][]ChainRules {
	return map[iptables.Table][]ChainRules{iptables.TableFilter: r.Filter, iptables.TableNAT: r.NAT}
}
