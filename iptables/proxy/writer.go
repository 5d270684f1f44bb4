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
	// chainsEdited counts the chains of chainsWritten edited in place, rulesDeleted the
	// rules those edits delete (their insertions count in rulesWritten).
	chainsEdited, rulesDeleted int
	// written and deleted are what the restores change, for record.
	written []tableChain
	deleted []iptables.Chain
}

// tableChain is a chain of a table with its rules as iptables-save prints them.
type tableChain struct {
	table iptables.Table
	chain iptables.Chain
	lines []string
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
//
// With edit set (the kernel holds exactly what known says, see Proxier.sync), a long shared
// chain that differs from known in a few rules is edited in place, rules deleted and inserted
// by position, rather than flushed and written again: a service that comes or goes changes
// one line of nat KUBE-SERVICES, and at 10,000 services a partial sync that rewrites the
// chain takes 0.9 s, one that edits it 0.2-0.3 s, most of it the kernel's check of the
// table on commit (bench/results/2026-12-07-iptables-shared-chain-edits.md).
func planWrite(known chainState, nat, filter []ChainRules, stale []iptables.Chain, batch int, edit bool) writePlan {
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
			w.writeShared(shared, iptables.TableNAT, c, known, edit)
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
			w.writeShared(shared, iptables.TableFilter, c, known, edit)
		}
	}
	deletions := deletionRestores(stale, batch, &w)
	return w.assemble(leaf, services, shared, deletions)
}

// writeShared writes a shared chain that differs from known: edited in place when edit is set
// and a few positional edits do it (lineEdits), else flushed and written whole.
func (w *writePlan) writeShared(tx *iptables.Transaction, table iptables.Table, c ChainRules, known chainState, edit bool) {
	if have, ok := known[table][c.Chain]; ok && edit {
		if del, ins, ok := lineEdits(have, c.lines); ok {
			for _, i := range slices.Backward(del) {
				tx.DeleteRuleAt(table, c.Chain, i+1)
			}
			if headBlock(ins) {
				// Each at position 1, the last first: iptables-nft then inserts at the head
				// without reading the chain's rules (at 10,000 services, 0.1 s of nat
				// KUBE-SERVICES per restore), which any other position needs.
				for _, j := range slices.Backward(ins) {
					tx.InsertSavedAt(table, c.Chain, 1, c.lines[j])
				}
			} else {
				for _, j := range ins {
					tx.InsertSavedAt(table, c.Chain, j+1, c.lines[j])
				}
			}
			w.chainsEdited++
			w.rulesWritten += len(ins) - len(c.lines) // count() added the whole chain
			w.rulesDeleted += len(del)
			return
		}
	}
	writeChain(tx, table, c)
}

// headBlock reports whether the positions are 0, 1, 2, ...: lines inserted at the head.
func headBlock(ins []int) bool {
	for k, j := range ins {
		if j != k {
			return false
		}
	}
	return true
}

// arrangeServices returns the lines of nat KUBE-SERVICES or KUBE-NODEPORTS that a sync wants
// (want: the service ports' rules in service port name order, then, in KUBE-SERVICES, the
// jumps to KUBE-NODEPORTS that must end the chain) in the order the kernel holds them (have):
// the rules both hold, in have's order, after the rules have lacks, in name order. The rules
// of different service ports exclude each other (one destination address, protocol and port,
// or one node port and protocol, each), so their order does not change what the chain does;
// keeping the kernel's order lets planWrite insert a new service's rules at the head of the
// chain, where iptables-nft does not read the chain's rules first, and a restart or an idle
// sync find nothing to rewrite after such inserts.
// When have does not end with the same jumps to KUBE-NODEPORTS, or want holds a line twice,
// want is returned as it is (the chain is then written, or edited, into name order); reordered
// reports that the lines returned are not want.
func arrangeServices(have, want []string) (lines []string, reordered bool) {
	tail := 0
	for tail < len(want) && strings.Contains(want[len(want)-1-tail], commentNodePorts) {
		tail++
	}
	body, trailer := want[:len(want)-tail], want[len(want)-tail:]
	if len(have) < tail || !slices.Equal(have[len(have)-tail:], trailer) {
		return want, false
	}
	haveBody := have[:len(have)-tail]
	if slices.Equal(haveBody, body) {
		return want, false
	}
	// index holds each line's position in body; kept takes body's strings, not have's, so
	// that the result does not keep iptables-save's whole output alive.
	index := make(map[string]int, len(body))
	for i, l := range body {
		if _, dup := index[l]; dup {
			return want, false
		}
		index[l] = i
	}
	placed := make([]bool, len(body))
	kept := make([]string, 0, len(body))
	for _, l := range haveBody {
		if i, ok := index[l]; ok && !placed[i] {
			placed[i] = true
			kept = append(kept, body[i])
		}
	}
	out := make([]string, 0, len(want))
	for i, l := range body {
		if !placed[i] {
			out = append(out, l)
		}
	}
	out = append(append(out, kept...), trailer...)
	return out, !slices.Equal(out, want)
}

// minEditLines is the shortest chain lineEdits edits: below it, writing the chain whole costs
// next to nothing. A variable for the tests.
var minEditLines = 64

// lineEdits returns the positions (from 0, ascending) of the lines of have to delete and of
// the lines of want to insert that turn have into want: deleting the first from the highest
// down, then inserting the second from the lowest up, each at its position in want. ok is
// false when that takes more edits than half of want's lines, when want is shorter than
// minEditLines, or when the lines both hold are not in the same order.
func lineEdits(have, want []string) (del, ins []int, ok bool) {
	if len(want) < minEditLines {
		return nil, nil, false
	}
	// Trim the common head and tail: a single change needs nothing else.
	head := 0
	for head < len(have) && head < len(want) && have[head] == want[head] {
		head++
	}
	tail := 0
	for tail < len(have)-head && tail < len(want)-head && have[len(have)-1-tail] == want[len(want)-1-tail] {
		tail++
	}
	midHave, midWant := have[head:len(have)-tail], want[head:len(want)-tail]
	if 2*max(len(midHave)-len(midWant), len(midWant)-len(midHave)) > len(want) {
		return nil, nil, false // at least that many edits: no need to build the maps
	}
	inWant := make(map[string]struct{}, len(midWant))
	for _, l := range midWant {
		inWant[l] = struct{}{}
	}
	inHave := make(map[string]struct{}, len(midHave))
	for i, l := range midHave {
		inHave[l] = struct{}{}
		if _, keep := inWant[l]; !keep {
			del = append(del, head+i)
		}
	}
	for j, l := range midWant {
		if _, had := inHave[l]; !had {
			ins = append(ins, head+j)
		}
	}
	if 2*(len(del)+len(ins)) > len(want) {
		return nil, nil, false
	}
	// What is left of have after the deletions must be want without the insertions, line
	// for line (this also catches duplicated lines that the maps cannot tell apart).
	i, j, d, n := head, head, 0, 0
	for {
		for d < len(del) && del[d] == i {
			i, d = i+1, d+1
		}
		for n < len(ins) && ins[n] == j {
			j, n = j+1, n+1
		}
		if i == len(have) || j == len(want) {
			break
		}
		if have[i] != want[j] {
			return nil, nil, false
		}
		i, j = i+1, j+1
	}
	return del, ins, i == len(have) && j == len(want)
}

// record applies what the plan wrote to known.
func (w *writePlan) record(known chainState) {
	for _, tc := range w.written {
		known[tc.table][tc.chain] = tc.lines
	}
	for _, c := range w.deleted {
		delete(known[iptables.TableNAT], c)
	}
}

func (w *writePlan) count(table iptables.Table, c ChainRules) {
	w.written = append(w.written, tableChain{table: table, chain: c.Chain, lines: c.lines})
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
