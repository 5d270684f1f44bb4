package iptables

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// fakeTx is one table section of a restore, applied to a copy of the table until COMMIT.
type fakeTx struct {
	fam   Family
	table Table
	t     *fakeTable
	// missing is the first chain a rule jumped to that did not exist at that point; the
	// nf_tables backend reports it at COMMIT.
	missing Chain
}

// Restore applies restore text with --noflush semantics. See the package documentation for
// what it validates.
func (f *Fake) Restore(_ context.Context, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores++
	f.lastRestore = bytes.Clone(data)

	lines := strings.Split(string(data), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var tx *fakeTx
	for i, raw := range lines {
		n := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var err error
		switch {
		case strings.HasPrefix(line, "*"):
			tx, err = f.begin(tx, n, line)
		case line == "COMMIT":
			err = f.commit(tx, n)
			tx = nil
		case tx == nil:
			err = &RestoreError{Line: n, Msg: "no table selected"}
		case strings.HasPrefix(line, ":"):
			err = tx.declare(n, line)
		default:
			err = tx.command(n, line)
		}
		if err != nil {
			return err
		}
	}
	if tx != nil {
		return &RestoreError{Line: len(lines) + 1, Msg: "COMMIT expected"}
	}
	return nil
}

func (f *Fake) begin(open *fakeTx, n int, line string) (*fakeTx, error) {
	if open != nil {
		return nil, &RestoreError{Line: n, Msg: fmt.Sprintf("Bad argument `%s'", line)}
	}
	table := Table(line[1:])
	t, ok := f.tables[table]
	if !ok {
		return nil, &RestoreError{Line: n, Msg: fmt.Sprintf("table name '%s' invalid", table)}
	}
	return &fakeTx{fam: f.fam, table: table, t: t.clone()}, nil
}

func (f *Fake) commit(tx *fakeTx, n int) error {
	if tx == nil {
		return &RestoreError{Line: n, Msg: "COMMIT without a table"}
	}
	if tx.missing != "" {
		return &RestoreError{Line: n, Msg: fmt.Sprintf("Chain '%s' does not exist", tx.missing)}
	}
	f.tables[tx.table] = tx.t
	f.gen++
	return nil
}

// declare handles ":CHAIN POLICY [packets:bytes]": a user chain is created, or flushed when
// it exists; a built-in chain gets its policy set ("-" leaves it).
func (tx *fakeTx) declare(n int, line string) error {
	fields := strings.Fields(line[1:])
	if len(fields) < 2 {
		return &RestoreError{Line: n, Msg: "policy invalid"}
	}
	name, policy := Chain(fields[0]), fields[1]
	if ch, ok := tx.t.chains[name]; ok && ch.builtin {
		switch policy {
		case "ACCEPT", "DROP":
			ch.policy = policy
		case "-":
		default:
			return &RestoreError{Line: n, Msg: fmt.Sprintf("policy `%s' invalid", policy)}
		}
		return nil
	}
	if err := validChainName(name); err != nil {
		return &RestoreError{Line: n, Msg: err.Error()}
	}
	if ch, ok := tx.t.chains[name]; ok {
		tx.t.flush(ch)
		return nil
	}
	tx.t.chains[name] = &fakeChain{}
	return nil
}

func errNoChain(n int) error {
	return &RestoreError{Line: n, Msg: "No chain/target/match by that name."}
}

// command handles one "-A", "-I", "-D", "-F", "-X", "-N" or "-P" line.
func (tx *fakeTx) command(n int, line string) error {
	args, err := splitArgs(line)
	if err != nil {
		return &RestoreError{Line: n, Msg: err.Error()}
	}
	op := args[0]
	var chain Chain
	if len(args) > 1 {
		chain = Chain(args[1])
	}
	ch := tx.t.chains[chain]
	switch {
	case op != "-F" && op != "--flush" && len(args) < 2:
		return &RestoreError{Line: n, Msg: fmt.Sprintf("option %q requires an argument", op)}
	case op == "-A" || op == "--append" || op == "-I" || op == "--insert":
		return tx.addRule(n, ch, args)
	case op == "-D" || op == "--delete":
		return tx.deleteRule(n, ch, args[2:])
	case op == "-F" || op == "--flush":
		return tx.flushChains(n, chain)
	case op == "-X" || op == "--delete-chain":
		return tx.deleteChain(n, chain)
	case op == "-N" || op == "--new-chain":
		if ch != nil {
			return &RestoreError{Line: n, Msg: "Chain already exists."}
		}
		if err := validChainName(chain); err != nil {
			return &RestoreError{Line: n, Msg: err.Error()}
		}
		tx.t.chains[chain] = &fakeChain{}
		return nil
	case op == "-P" || op == "--policy":
		if ch == nil || !ch.builtin || len(args) != 3 || (args[2] != "ACCEPT" && args[2] != "DROP") {
			return &RestoreError{Line: n, Msg: "Bad built-in chain name or policy"}
		}
		ch.policy = args[2]
		return nil
	}
	return &RestoreError{Line: n, Msg: fmt.Sprintf("Bad argument `%s'", op)}
}

// addRule handles "-A CHAIN rule..." and "-I CHAIN [position] rule...".
func (tx *fakeTx) addRule(n int, ch *fakeChain, args []string) error {
	rest := args[2:]
	at := -1 // append
	if args[0] == "-I" || args[0] == "--insert" {
		at = 0
		if len(rest) > 0 {
			if pos, err := strconv.Atoi(rest[0]); err == nil {
				at, rest = pos-1, rest[1:]
			}
		}
	}
	r, err := parseRule(tx.fam, tx.table, rest)
	if err != nil {
		return &RestoreError{Line: n, Msg: err.Error()}
	}
	if ch == nil {
		return errNoChain(n)
	}
	if at < -1 || at > len(ch.rules) {
		return &RestoreError{Line: n, Msg: "Index of insertion too big."}
	}
	if target, ok := r.jumpTarget(); ok && tx.missing == "" {
		if _, exists := tx.t.chains[target]; !exists {
			tx.missing = target
		}
	}
	if at == -1 {
		at = len(ch.rules)
	}
	tx.t.insertRule(ch, at, r)
	return nil
}

// deleteRule handles "-D CHAIN rule..." and "-D CHAIN position".
func (tx *fakeTx) deleteRule(n int, ch *fakeChain, rest []string) error {
	if ch == nil {
		return errNoChain(n)
	}
	idx, err := tx.findRule(ch, rest)
	if err != nil {
		return &RestoreError{Line: n, Msg: err.Error()}
	}
	if idx < 0 || idx >= len(ch.rules) {
		return &RestoreError{Line: n, Msg: "Bad rule (does a matching rule exist in that chain?)."}
	}
	tx.t.addRef(ch.rules[idx], -1)
	ch.rules = slices.Delete(ch.rules, idx, idx+1)
	return nil
}

// findRule returns the 0-based index of the rule a -D names by position or by spec, -1 when
// no rule matches.
func (tx *fakeTx) findRule(ch *fakeChain, rest []string) (int, error) {
	if len(rest) == 1 {
		if pos, err := strconv.Atoi(rest[0]); err == nil {
			return pos - 1, nil
		}
	}
	r, err := parseRule(tx.fam, tx.table, rest)
	if err != nil {
		return 0, err
	}
	return slices.IndexFunc(ch.rules, func(existing *ruleSpec) bool { return existing.text == r.text }), nil
}

// flushChains handles "-F [CHAIN]".
func (tx *fakeTx) flushChains(n int, chain Chain) error {
	if chain == "" {
		for _, ch := range tx.t.chains {
			tx.t.flush(ch)
		}
		return nil
	}
	ch, ok := tx.t.chains[chain]
	if !ok {
		return errNoChain(n)
	}
	tx.t.flush(ch)
	return nil
}

// deleteChain handles "-X CHAIN": the chain must be a user chain, empty and unreferenced.
func (tx *fakeTx) deleteChain(n int, chain Chain) error {
	ch, ok := tx.t.chains[chain]
	if !ok {
		return errNoChain(n)
	}
	if ch.builtin || len(ch.rules) > 0 || tx.t.refs[chain] > 0 {
		return &RestoreError{Line: n, Msg: fmt.Sprintf("CHAIN_DEL failed (Device or resource busy): chain %s", chain)}
	}
	delete(tx.t.chains, chain)
	return nil
}
