package iptables

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Fake is an in-memory Interface for tests. It keeps tables, chains and rules (in canonical
// iptables-save form), applies restores with --noflush semantics and the nf_tables backend's
// validation, one atomic commit per table section, and prints Save output like the kernel.
// It is safe for concurrent use.
type Fake struct {
	mu          sync.Mutex
	fam         Family
	tables      map[Table]*fakeTable
	restores    int
	lastRestore []byte
	gen         uint32 // committed changes, as the nf_tables generation
}

// Generation counts the Fake's committed changes, as Runner.Generation reads the nf_tables
// generation of a namespace.
func (f *Fake) Generation() (uint32, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen, true, nil
}

var _ Interface = (*Fake)(nil)

type fakeTable struct {
	chains map[Chain]*fakeChain
	// refs counts the rules that jump or go to each chain.
	refs map[Chain]int
}

type fakeChain struct {
	builtin bool
	policy  string // built-in chains only: ACCEPT or DROP
	rules   []*ruleSpec
}

// NewFake returns a Fake with the built-in chains of the filter, nat, mangle and raw tables.
func NewFake(fam Family) *Fake {
	f := &Fake{fam: fam, tables: map[Table]*fakeTable{}}
	for t, chains := range builtinChains {
		ft := &fakeTable{chains: map[Chain]*fakeChain{}, refs: map[Chain]int{}}
		for _, c := range chains {
			ft.chains[c] = &fakeChain{builtin: true, policy: "ACCEPT"}
		}
		f.tables[t] = ft
	}
	return f
}

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{chains: make(map[Chain]*fakeChain, len(t.chains)), refs: make(map[Chain]int, len(t.refs))}
	for name, ch := range t.chains {
		cp := *ch
		cp.rules = slices.Clone(ch.rules)
		c.chains[name] = &cp
	}
	for name, n := range t.refs {
		c.refs[name] = n
	}
	return c
}

func (t *fakeTable) addRef(r *ruleSpec, delta int) {
	if target, ok := r.jumpTarget(); ok {
		t.refs[target] += delta
		if t.refs[target] == 0 {
			delete(t.refs, target)
		}
	}
}

func (t *fakeTable) flush(ch *fakeChain) {
	for _, r := range ch.rules {
		t.addRef(r, -1)
	}
	ch.rules = nil
}

// insertRule puts r at index i (0-based) of ch.
func (t *fakeTable) insertRule(ch *fakeChain, i int, r *ruleSpec) {
	ch.rules = slices.Insert(ch.rules, i, r)
	t.addRef(r, 1)
}

// userChains returns the table's user chains, sorted as iptables-save prints them.
func (t *fakeTable) userChains() []Chain {
	var out []Chain
	for name, ch := range t.chains {
		if !ch.builtin {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// pristine reports whether the table is as NewFake left it.
func (t *fakeTable) pristine() bool {
	for _, ch := range t.chains {
		if !ch.builtin || len(ch.rules) > 0 || ch.policy != "ACCEPT" {
			return false
		}
	}
	return true
}

// save prints the table as iptables-save does, without the comment lines.
func (t *fakeTable) save(b *strings.Builder, table Table) {
	b.WriteString("*" + string(table) + "\n")
	order := append(slices.Clone(builtinChains[table]), t.userChains()...)
	for _, name := range order {
		policy := "-"
		if ch := t.chains[name]; ch.builtin {
			policy = ch.policy
		}
		fmt.Fprintf(b, ":%s %s [0:0]\n", name, policy)
	}
	for _, name := range order {
		for _, r := range t.chains[name].rules {
			if r.text == "" {
				fmt.Fprintf(b, "-A %s\n", name)
			} else {
				fmt.Fprintf(b, "-A %s %s\n", name, r.text)
			}
		}
	}
	b.WriteString("COMMIT\n")
}

// Save returns table in iptables-save format.
func (f *Fake) Save(_ context.Context, table Table) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return nil, fmt.Errorf("iptables-save: table %q does not exist", table)
	}
	var b strings.Builder
	t.save(&b, table)
	return []byte(b.String()), nil
}

// Dump returns every table that differs from a fresh Fake, in iptables-save format: a
// canonical text for tests to compare.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, table := range tableOrder {
		if t := f.tables[table]; !t.pristine() {
			t.save(&b, table)
		}
	}
	return b.String()
}

// RestoreCount returns how many times Restore was called, accepted or not.
func (f *Fake) RestoreCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

// LastRestore returns the input of the last Restore call.
func (f *Fake) LastRestore() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.lastRestore)
}

// HasChain reports whether table holds chain.
func (f *Fake) HasChain(_ context.Context, table Table, chain Chain) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return false, nil
	}
	_, ok = t.chains[chain]
	return ok, nil
}

// EnsureChain creates a user chain unless it exists.
func (f *Fake) EnsureChain(_ context.Context, table Table, chain Chain) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return false, fmt.Errorf("table %q: %w", table, ErrNotFound)
	}
	if _, ok := t.chains[chain]; ok {
		return true, nil
	}
	if err := validChainName(chain); err != nil {
		return false, err
	}
	t.chains[chain] = &fakeChain{}
	f.gen++
	return false, nil
}

// EnsureRule adds the rule to chain unless a rule with the same canonical form is there.
func (f *Fake) EnsureRule(_ context.Context, pos RulePosition, table Table, chain Chain, args ...string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tables[table]
	if !ok {
		return false, fmt.Errorf("table %q: %w", table, ErrNotFound)
	}
	ch, ok := t.chains[chain]
	if !ok {
		return false, fmt.Errorf("chain %s in table %s: %w", chain, table, ErrNotFound)
	}
	r, err := parseRule(f.fam, table, args)
	if err != nil {
		return false, fmt.Errorf("rule %q: %w", Rule(args), err)
	}
	for _, existing := range ch.rules {
		if existing.text == r.text {
			return true, nil
		}
	}
	if target, ok := r.jumpTarget(); ok {
		if _, ok := t.chains[target]; !ok {
			return false, fmt.Errorf("jump to chain %s: %w", target, ErrNotFound)
		}
	}
	at := len(ch.rules)
	if pos == Prepend {
		at = 0
	}
	t.insertRule(ch, at, r)
	f.gen++
	return false, nil
}
