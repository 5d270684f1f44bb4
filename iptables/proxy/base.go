package proxy

import (
	"context"
	"fmt"
	"slices"

	"github.com/kproxy/kproxy/iptables"
)

// baseJump is a rule in a built-in chain that leads to an owned chain.
type baseJump struct {
	table iptables.Table
	from  iptables.Chain
	to    iptables.Chain
	rule  iptables.Rule
}

func newBaseJump(table iptables.Table, to, from iptables.Chain, comment string, extra ...string) baseJump {
	r := slices.Clone(iptables.Rule(extra))
	if comment != "" {
		r = append(r, "-m", "comment", "--comment", comment)
	}
	return baseJump{table: table, from: from, to: to, rule: append(r, "-j", string(to))}
}

var ctNew = []string{"-m", "conntrack", "--ctstate", "NEW"}

// baseJumps are upstream's iptablesJumpChains, in upstream's order. Each is prepended when
// missing, so on a fresh node each built-in chain lists them in the reverse order, as
// iptables-save shows on a kube-proxy node.
var baseJumps = []baseJump{
	newBaseJump(iptables.TableFilter, iptables.ChainKubeExternalServices, iptables.ChainInput, "kubernetes externally-visible service portals", ctNew...),
	newBaseJump(iptables.TableFilter, iptables.ChainKubeExternalServices, iptables.ChainForward, "kubernetes externally-visible service portals", ctNew...),
	newBaseJump(iptables.TableFilter, iptables.ChainKubeNodePorts, iptables.ChainInput, "kubernetes health check service ports"),
	newBaseJump(iptables.TableFilter, iptables.ChainKubeServices, iptables.ChainForward, "kubernetes service portals", ctNew...),
	newBaseJump(iptables.TableFilter, iptables.ChainKubeServices, iptables.ChainOutput, "kubernetes service portals", ctNew...),
	newBaseJump(iptables.TableFilter, iptables.ChainKubeForward, iptables.ChainForward, "kubernetes forwarding rules"),
	newBaseJump(iptables.TableFilter, iptables.ChainKubeProxyFirewall, iptables.ChainInput, "kubernetes load balancer firewall", ctNew...),
	newBaseJump(iptables.TableFilter, iptables.ChainKubeProxyFirewall, iptables.ChainOutput, "kubernetes load balancer firewall", ctNew...),
	newBaseJump(iptables.TableFilter, iptables.ChainKubeProxyFirewall, iptables.ChainForward, "kubernetes load balancer firewall", ctNew...),
	newBaseJump(iptables.TableNAT, iptables.ChainKubeServices, iptables.ChainOutput, "kubernetes service portals"),
	newBaseJump(iptables.TableNAT, iptables.ChainKubeServices, iptables.ChainPrerouting, "kubernetes service portals"),
	newBaseJump(iptables.TableNAT, iptables.ChainKubePostrouting, iptables.ChainPostrouting, "kubernetes postrouting rules"),
}

// localnetJumps are kubelet's jumps to KUBE-FIREWALL, which kube-proxy also ensures; kproxy
// only when it opens NodePorts on localhost.
var localnetJumps = []baseJump{
	newBaseJump(iptables.TableFilter, chainKubeFirewall, iptables.ChainInput, ""),
	newBaseJump(iptables.TableFilter, chainKubeFirewall, iptables.ChainOutput, ""),
}

func (p *Proxier) baseJumps() []baseJump {
	if p.cfg.LocalhostNodePorts && p.cfg.Family == iptables.IPv4 {
		return append(slices.Clone(baseJumps), localnetJumps...)
	}
	return baseJumps
}

var canaryTables = []iptables.Table{iptables.TableNAT, iptables.TableFilter}

// ensureBase creates the jump targets and the canaries and puts the missing jumps at the top
// of the built-in chains. One exec per chain and per jump: only on full syncs that found
// something missing.
func (p *Proxier) ensureBase(ctx context.Context) error {
	for _, j := range p.baseJumps() {
		if _, err := p.ipt.EnsureChain(ctx, j.table, j.to); err != nil {
			return fmt.Errorf("ensure chain %s in table %s: %w", j.to, j.table, err)
		}
	}
	for _, table := range canaryTables {
		if _, err := p.ipt.EnsureChain(ctx, table, iptables.ChainKubeProxyCanary); err != nil {
			return fmt.Errorf("ensure chain %s in table %s: %w", iptables.ChainKubeProxyCanary, table, err)
		}
	}
	for _, j := range p.baseJumps() {
		if _, err := p.ipt.EnsureRule(ctx, iptables.Prepend, j.table, j.from, j.rule...); err != nil {
			return fmt.Errorf("ensure jump from %s to %s in table %s: %w", j.from, j.to, j.table, err)
		}
	}
	return nil
}

// canaryGone reports whether a canary chain had disappeared (and recreates it).
func (p *Proxier) canaryGone(ctx context.Context) (bool, error) {
	gone := false
	for _, table := range canaryTables {
		existed, err := p.ipt.EnsureChain(ctx, table, iptables.ChainKubeProxyCanary)
		if err != nil {
			return false, fmt.Errorf("check canary chain in table %s: %w", table, err)
		}
		gone = gone || !existed
	}
	return gone, nil
}

// HasState reports whether the kernel holds the rules of a proxy that ran before this one (a
// restart, or kube-proxy replaced): the KUBE-PROXY-CANARY chain of the filter table, which
// kproxy and kube-proxy create with their rules and --cleanup removes. It writes nothing.
func (p *Proxier) HasState(ctx context.Context) bool {
	ok, err := p.ipt.HasChain(ctx, iptables.TableFilter, iptables.ChainKubeProxyCanary)
	return err == nil && ok
}

// ownedFixed are the shared chains this mode owns and rewrites (never deletes).
var ownedFixed = map[iptables.Table][]iptables.Chain{
	iptables.TableNAT: {iptables.ChainKubeServices, iptables.ChainKubeNodePorts,
		iptables.ChainKubeMarkMasq, iptables.ChainKubePostrouting},
	iptables.TableFilter: {iptables.ChainKubeServices, iptables.ChainKubeExternalServices,
		iptables.ChainKubeForward, iptables.ChainKubeNodePorts, iptables.ChainKubeProxyFirewall, chainKubeFirewall},
}

func owned(table iptables.Table, c iptables.Chain) bool {
	return slices.Contains(ownedFixed[table], c) || (table == iptables.TableNAT && isServiceChain(c))
}

// savedChains is one table as iptables-save printed it.
type savedChains = map[iptables.Chain][]string

// readKernel reads the nat and filter tables with iptables-save and returns the owned chains,
// and every chain of both tables (to check the base-chain jumps and the canaries).
func (p *Proxier) readKernel(ctx context.Context) (chainState, map[iptables.Table]savedChains, error) {
	state := chainState{}
	all := map[iptables.Table]savedChains{}
	for _, table := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		data, err := p.ipt.Save(ctx, table)
		if err != nil {
			return nil, nil, fmt.Errorf("save table %s: %w", table, err)
		}
		chains, err := iptables.ParseSave(data, table)
		if err != nil {
			return nil, nil, err
		}
		all[table] = chains
		state[table] = map[iptables.Chain][]string{}
		for c, rules := range chains {
			if owned(table, c) {
				state[table][c] = rules
			}
		}
	}
	return state, all, nil
}

// missingBase reports whether a canary chain or a base-chain jump is missing from the saved
// tables.
func (p *Proxier) missingBase(saved map[iptables.Table]savedChains) bool {
	for _, table := range canaryTables {
		if _, ok := saved[table][iptables.ChainKubeProxyCanary]; !ok {
			return true
		}
	}
	for _, j := range p.baseJumps() {
		want, err := iptables.CanonicalRule(p.cfg.Family, j.table, j.rule...)
		if err != nil || !slices.Contains(saved[j.table][j.from], want) {
			return true
		}
	}
	return false
}
