package proxy

import (
	"context"
	"fmt"
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

// RuleCounts describes the rules of the last successful sync (all of them, written or not).
type RuleCounts struct {
	NATRules, NATChains       int
	FilterRules, FilterChains int
}

// Proxier is the iptables mode backend. Apply must not be called concurrently with itself;
// LastRuleCount may be called from any goroutine.
type Proxier struct {
	ipt iptables.Interface
	cfg Config

	// known is what the owned chains hold in the kernel, as far as the proxier knows; nil
	// until a full sync read it, and after a failure.
	known chainState
	// canon caches the canonical form of each rendered rule ("table rule text" keys).
	canon map[string]string

	mu     sync.Mutex
	counts RuleCounts
}

// NewProxier returns an iptables mode backend writing through ipt. It does nothing until the
// first Apply.
func NewProxier(ipt iptables.Interface, cfg Config) *Proxier {
	return &Proxier{ipt: ipt, cfg: cfg, canon: map[string]string{}}
}

// Mode returns "iptables".
func (p *Proxier) Mode() string { return "iptables" }

// LastRuleCount returns the rule and chain counts of the last successful sync.
func (p *Proxier) LastRuleCount() RuleCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

// Apply brings the owned chains to the state snap describes, writing only what differs from
// what it knows of the kernel (see the package documentation). full re-reads the kernel and
// ensures the base-chain jumps; the proxier also goes full by itself when it knows nothing (the
// first sync, after a failure) or when a canary chain disappeared.
func (p *Proxier) Apply(ctx context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo, full bool) error {
	logger := klog.FromContext(ctx)
	start := time.Now()
	if p.known == nil {
		full = true
	}
	if !full {
		gone, err := p.canaryGone(ctx)
		if err != nil {
			return p.fail(err)
		}
		if gone {
			logger.V(2).Info("Canary chain missing, iptables was flushed: doing a full sync")
			full = true
		}
	}
	if full {
		if err := p.ensureBase(ctx); err != nil {
			return p.fail(err)
		}
		known, err := p.readKernel(ctx)
		if err != nil {
			return p.fail(err)
		}
		p.known = known
	}

	rules := Render(Input{Services: snap.Services, Endpoints: snap.Endpoints, Node: node, Config: p.cfg})
	desired := p.canonical(rules)
	tx := plan(p.known, desired, rules)
	chainsWritten, rulesWritten, chainsDeleted := tx.Counts()
	if !tx.Empty() {
		data := tx.Bytes()
		logger.V(9).Info("Restoring iptables rules", "payload", string(data))
		if err := p.ipt.Restore(ctx, data); err != nil {
			return p.fail(fmt.Errorf("restore iptables rules: %w", err))
		}
	}
	p.known = desired

	counts := countRules(rules)
	p.mu.Lock()
	p.counts = counts
	p.mu.Unlock()
	logger.V(2).Info("Synced iptables rules", "full", full, "servicePorts", rules.ServicePorts,
		"endpoints", rules.Endpoints, "natRules", counts.NATRules, "natChains", counts.NATChains,
		"filterRules", counts.FilterRules, "chainsWritten", chainsWritten, "rulesWritten", rulesWritten,
		"chainsDeleted", chainsDeleted, "elapsed", time.Since(start))
	return nil
}

// fail forgets the kernel state, so that the next sync is full, and returns err.
func (p *Proxier) fail(err error) error {
	p.known = nil
	return err
}

// baseChains are created before the jumps to them; the canaries tell a flush of the table.
var baseChains = []struct {
	table iptables.Table
	chain iptables.Chain
}{
	{iptables.TableNAT, iptables.ChainKubeServices},
	{iptables.TableNAT, iptables.ChainKubePostrouting},
	{iptables.TableFilter, iptables.ChainKubeServices},
	{iptables.TableNAT, iptables.ChainKubeProxyCanary},
	{iptables.TableFilter, iptables.ChainKubeProxyCanary},
}

// baseJumps are the rules in built-in chains that lead to the owned chains.
var baseJumps = []struct {
	table iptables.Table
	from  iptables.Chain
	rule  iptables.Rule
}{
	{iptables.TableNAT, iptables.ChainPrerouting, portalsJump},
	{iptables.TableNAT, iptables.ChainOutput, portalsJump},
	{iptables.TableNAT, iptables.ChainPostrouting, iptables.Rule{"-m", "comment", "--comment", "kubernetes postrouting rules", "-j", string(iptables.ChainKubePostrouting)}},
	{iptables.TableFilter, iptables.ChainInput, filterPortalsJump},
	{iptables.TableFilter, iptables.ChainForward, filterPortalsJump},
	{iptables.TableFilter, iptables.ChainOutput, filterPortalsJump},
}

var (
	portalsJump       = iptables.Rule{"-m", "comment", "--comment", "kubernetes service portals", "-j", string(iptables.ChainKubeServices)}
	filterPortalsJump = slices.Concat(iptables.Rule{"-m", "conntrack", "--ctstate", "NEW"}, portalsJump)
)

// ensureBase creates the base chains and the canaries and puts the jumps at the top of the
// built-in chains.
func (p *Proxier) ensureBase(ctx context.Context) error {
	for _, c := range baseChains {
		if _, err := p.ipt.EnsureChain(ctx, c.table, c.chain); err != nil {
			return fmt.Errorf("ensure chain %s in table %s: %w", c.chain, c.table, err)
		}
	}
	for _, j := range baseJumps {
		if _, err := p.ipt.EnsureRule(ctx, iptables.Prepend, j.table, j.from, j.rule...); err != nil {
			return fmt.Errorf("ensure jump from %s to %s in table %s: %w", j.from, j.rule[len(j.rule)-1], j.table, err)
		}
	}
	return nil
}

// canaryGone reports whether a canary chain had disappeared (and recreates it).
func (p *Proxier) canaryGone(ctx context.Context) (bool, error) {
	gone := false
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		existed, err := p.ipt.EnsureChain(ctx, table, iptables.ChainKubeProxyCanary)
		if err != nil {
			return false, fmt.Errorf("check canary chain in table %s: %w", table, err)
		}
		gone = gone || !existed
	}
	return gone, nil
}

// ownedFixed are the shared chains this mode owns.
var ownedFixed = map[iptables.Table][]iptables.Chain{
	iptables.TableNAT: {iptables.ChainKubeServices, iptables.ChainKubeNodePorts,
		iptables.ChainKubeMarkMasq, iptables.ChainKubePostrouting},
	iptables.TableFilter: {iptables.ChainKubeServices},
}

func owned(table iptables.Table, c iptables.Chain) bool {
	return slices.Contains(ownedFixed[table], c) || (table == iptables.TableNAT && isServiceChain(c))
}

// readKernel reads the owned chains of the nat and filter tables with iptables-save.
func (p *Proxier) readKernel(ctx context.Context) (chainState, error) {
	state := chainState{}
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		data, err := p.ipt.Save(ctx, table)
		if err != nil {
			return nil, fmt.Errorf("save table %s: %w", table, err)
		}
		chains, err := iptables.ParseSave(data, table)
		if err != nil {
			return nil, err
		}
		state[table] = map[iptables.Chain][]string{}
		for c, rules := range chains {
			if owned(table, c) {
				state[table][c] = rules
			}
		}
	}
	return state, nil
}

// canonical returns the rules as iptables-save would print them. A rule that cannot be
// canonicalised keeps its own text: it will differ from the kernel's, so its chain is always
// rewritten, and the kernel judges it.
func (p *Proxier) canonical(rules Rules) chainState {
	next := make(map[string]string, len(p.canon))
	state := chainState{}
	for table, chains := range rules.byTable() {
		state[table] = make(map[iptables.Chain][]string, len(chains))
		for _, c := range chains {
			lines := make([]string, 0, len(c.Rules))
			for _, r := range c.Rules {
				key := string(table) + " " + r.String()
				text, ok := p.canon[key]
				if !ok {
					var err error
					if text, err = iptables.CanonicalRule(p.cfg.Family, table, r...); err != nil {
						text = r.String()
					}
				}
				next[key] = text
				lines = append(lines, text)
			}
			state[table][c.Chain] = lines
		}
	}
	p.canon = next
	return state
}

func (r Rules) byTable() map[iptables.Table][]ChainRules {
	return map[iptables.Table][]ChainRules{iptables.TableFilter: r.Filter, iptables.TableNAT: r.NAT}
}

// plan writes the chains whose desired rules differ from the known ones and deletes the owned
// per-service chains that are no longer desired.
func plan(known, desired chainState, rules Rules) *iptables.Transaction {
	tx := &iptables.Transaction{}
	for _, table := range []iptables.Table{iptables.TableFilter, iptables.TableNAT} {
		for _, c := range rules.byTable()[table] {
			have, ok := known[table][c.Chain]
			if ok && slices.Equal(have, desired[table][c.Chain]) {
				continue
			}
			writeChain(tx, table, c)
		}
		var stale []iptables.Chain
		for c := range known[table] {
			if _, ok := desired[table][c]; !ok && isServiceChain(c) {
				stale = append(stale, c)
			}
		}
		slices.Sort(stale)
		for _, c := range stale {
			tx.Delete(table, c)
		}
	}
	return tx
}

func countRules(r Rules) RuleCounts {
	var c RuleCounts
	for _, ch := range r.NAT {
		c.NATRules += len(ch.Rules)
	}
	for _, ch := range r.Filter {
		c.FilterRules += len(ch.Rules)
	}
	c.NATChains, c.FilterChains = len(r.NAT), len(r.Filter)
	return c
}
