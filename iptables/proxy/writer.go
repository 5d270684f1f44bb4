package proxy

import (
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/iptables"
)

// writePlan is the restores one sync runs, in order, and what they write.
type writePlan struct {
	restores                                   []*iptables.Transaction
	chainsWritten, rulesWritten, chainsDeleted int
	// written and deleted are what the restores change, for record.
	written []tableChain
	deleted []iptables.Chain
}

// tableChain is a chain of a table with its rules.
type tableChain struct {
	table iptables.Table
	chain ChainRules
}

// leafChains are shared nat chains the per-service chains jump to: written before them.
var leafChains = []iptables.Chain{iptables.ChainKubeMarkMasq, iptables.ChainKubePostrouting}

// planWrite compares chains to write (nat: the shared chains and per-service chains in
// service port order; filter), canonicalised, with the known ones and returns the restores
// that bring the kernel there, writing only the chains that differ and deleting the stale
// per-service nat chains. A full sync passes every chain; a partial one only the shared
// chains and the changed ports' chains. The iptables-restore cost grows much faster than
// linearly with the chains one restore declares (DESIGN.md), so a large change is split:
//
//  1. KUBE-MARK-MASQ and KUBE-POSTROUTING (what the service chains jump to), with the first
//     batch of services;
//  2. the changed services' chains, batch services at a time, every chain of a service in the
//     same restore, so that each restore jumps only to chains that exist;
//  3. the shared chains that jump to the service chains (nat KUBE-SERVICES, KUBE-NODEPORTS)
//     and the filter chains;
//  4. the deletion of stale per-service chains, once nothing jumps to them any more, the
//     chains that jump to others first.
//
// A change of at most batch services and batch stale chains is one restore.
func planWrite(known chainState, nat, filter []ChainRules, stale []iptables.Chain, batch int) writePlan {
	var w writePlan
	differs := func(table iptables.Table, c ChainRules) bool {
		have, ok := known[table][c.Chain]
		return !ok || !slices.Equal(have, c.lines)
	}
	leaf, shared := &iptables.Transaction{}, &iptables.Transaction{}
	var services []*iptables.Transaction
	var current *iptables.Transaction
	lastService, inBatch := types.NamespacedName{}, 0
	for _, c := range nat {
		if !differs(iptables.TableNAT, c) {
			continue
		}
		w.count(iptables.TableNAT, c)
		switch {
		case c.Service == (types.NamespacedName{}) && slices.Contains(leafChains, c.Chain):
			writeChain(leaf, iptables.TableNAT, c)
		case c.Service == (types.NamespacedName{}):
			writeChain(shared, iptables.TableNAT, c)
		default:
			if current == nil || (c.Service != lastService && inBatch == batch) {
				current = &iptables.Transaction{}
				services = append(services, current)
				inBatch = 0
			}
			if c.Service != lastService {
				lastService = c.Service
				inBatch++
			}
			writeChain(current, iptables.TableNAT, c)
		}
	}
	for _, c := range filter {
		if differs(iptables.TableFilter, c) {
			w.count(iptables.TableFilter, c)
			writeChain(shared, iptables.TableFilter, c)
		}
	}
	deletions := deletionRestores(stale, batch, &w)
	return w.assemble(leaf, services, shared, deletions)
}

// record applies what the plan wrote to known.
func (w *writePlan) record(known chainState) {
	for _, tc := range w.written {
		known[tc.table][tc.chain.Chain] = tc.chain.lines
	}
	for _, c := range w.deleted {
		delete(known[iptables.TableNAT], c)
	}
}

func (w *writePlan) count(table iptables.Table, c ChainRules) {
	w.written = append(w.written, tableChain{table: table, chain: c})
	w.chainsWritten++
	w.rulesWritten += len(c.lines)
}

// assemble orders the restores, merging them into one when the change is small.
func (w *writePlan) assemble(leaf *iptables.Transaction, services []*iptables.Transaction, shared *iptables.Transaction, deletions []*iptables.Transaction) writePlan {
	if len(services) <= 1 && len(deletions) <= 1 {
		one := &iptables.Transaction{}
		one.Merge(leaf)
		for _, tx := range services {
			one.Merge(tx)
		}
		one.Merge(shared)
		for _, tx := range deletions {
			one.Merge(tx)
		}
		if !one.Empty() {
			w.restores = []*iptables.Transaction{one}
		}
		return *w
	}
	first := leaf
	if len(services) > 0 {
		first.Merge(services[0])
		services = services[1:]
	}
	for _, tx := range slices.Concat([]*iptables.Transaction{first}, services, []*iptables.Transaction{shared}, deletions) {
		if !tx.Empty() {
			w.restores = append(w.restores, tx)
		}
	}
	return *w
}

// deleteOrder ranks stale chains so that a chain is deleted no later than the chains it
// jumps to: KUBE-FW- jumps to KUBE-EXT- (and upstream's old KUBE-XLB-), those to KUBE-SVC-
// and KUBE-SVL-, those to KUBE-SEP-.
func deleteOrder(c iptables.Chain) int {
	for i, prefix := range []string{firewallChainPrefix, externalChainPrefix, "KUBE-XLB-", serviceChainPrefix, localChainPrefix, endpointChainPrefix} {
		if strings.HasPrefix(string(c), prefix) {
			return i
		}
	}
	return 0
}

// staleChains are the owned per-service nat chains known holds and desired does not.
func staleChains(known, desired chainState) []iptables.Chain {
	var stale []iptables.Chain
	for c := range known[iptables.TableNAT] {
		if _, ok := desired[iptables.TableNAT][c]; !ok && isServiceChain(c) {
			stale = append(stale, c)
		}
	}
	return stale
}

// deletionRestores returns the restores that delete the stale chains, batch*5 chains per
// restore, the chains that jump to others first.
func deletionRestores(stale []iptables.Chain, batch int, w *writePlan) []*iptables.Transaction {
	stale = slices.Clone(stale)
	slices.SortFunc(stale, func(a, b iptables.Chain) int {
		if d := deleteOrder(a) - deleteOrder(b); d != 0 {
			return d
		}
		return strings.Compare(string(a), string(b))
	})
	w.chainsDeleted = len(stale)
	w.deleted = stale
	var out []*iptables.Transaction
	for chunk := range slices.Chunk(stale, batch*5) {
		tx := &iptables.Transaction{}
		for _, c := range chunk {
			tx.Delete(iptables.TableNAT, c)
		}
		out = append(out, tx)
	}
	return out
}
