package ipvs

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/kproxy/kproxy/iptables"
)

// fakeIPT is a minimal stateful iptables.Interface for this package's tests: iptables.Fake
// rejects the set, physdev and ipvs matches the IPVS mode uses. It keeps each chain's rules
// in canonicalRule's form (what iptables-save would print), applies restores with
// declare-flushes semantics, and counts writes.
type fakeIPT struct {
	chains   map[iptables.Table]map[iptables.Chain][]string
	order    map[iptables.Table][]iptables.Chain
	restores int
	ensures  int
}

func newFakeIPT() *fakeIPT {
	f := &fakeIPT{chains: map[iptables.Table]map[iptables.Chain][]string{}, order: map[iptables.Table][]iptables.Chain{}}
	for _, t := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		f.chains[t] = map[iptables.Chain][]string{}
		for _, c := range []iptables.Chain{iptables.ChainPrerouting, iptables.ChainInput, iptables.ChainForward, iptables.ChainOutput, iptables.ChainPostrouting} {
			f.declare(t, c)
		}
	}
	return f
}

func (f *fakeIPT) declare(t iptables.Table, c iptables.Chain) {
	if _, ok := f.chains[t][c]; !ok {
		f.order[t] = append(f.order[t], c)
	}
	f.chains[t][c] = nil
}

func (f *fakeIPT) Restore(_ context.Context, data []byte) error {
	f.restores++
	var table iptables.Table
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case line == "" || line == "COMMIT":
		case strings.HasPrefix(line, "*"):
			table = iptables.Table(line[1:])
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			f.declare(table, iptables.Chain(name))
		case strings.HasPrefix(line, "-I "):
			name, rest, _ := strings.Cut(line[3:], " ")
			rest, ok := strings.CutPrefix(rest, "1 ")
			if _, exists := f.chains[table][iptables.Chain(name)]; !exists || !ok {
				return &iptables.RestoreError{Msg: "bad insert " + line}
			}
			args, err := splitRestoreArgs(rest)
			if err != nil {
				return err
			}
			c := iptables.Chain(name)
			f.chains[table][c] = append([]string{canonicalRule(iptables.IPv4, table, args)}, f.chains[table][c]...)
		case strings.HasPrefix(line, "-A "):
			name, rest, _ := strings.Cut(line[3:], " ")
			if _, ok := f.chains[table][iptables.Chain(name)]; !ok {
				return &iptables.RestoreError{Msg: "no chain " + name}
			}
			args, err := splitRestoreArgs(rest)
			if err != nil {
				return err
			}
			f.chains[table][iptables.Chain(name)] = append(f.chains[table][iptables.Chain(name)], canonicalRule(iptables.IPv4, table, args))
		default:
			return &iptables.RestoreError{Msg: "unexpected " + line}
		}
	}
	return nil
}

// splitRestoreArgs splits restore text into arguments, honouring double quotes.
func splitRestoreArgs(s string) (iptables.Rule, error) {
	var out iptables.Rule
	var cur strings.Builder
	inQ, has := false, false
	for _, c := range s {
		switch {
		case c == '"':
			inQ, has = !inQ, true
		case c == ' ' && !inQ:
			if has {
				out = append(out, cur.String())
			}
			cur.Reset()
			has = false
		default:
			cur.WriteRune(c)
			has = true
		}
	}
	if inQ {
		return nil, fmt.Errorf("unbalanced quote in %q", s)
	}
	if has {
		out = append(out, cur.String())
	}
	return out, nil
}

func (f *fakeIPT) Save(_ context.Context, t iptables.Table) ([]byte, error) {
	var b strings.Builder
	b.WriteString("*" + string(t) + "\n")
	for _, c := range f.order[t] {
		if _, ok := f.chains[t][c]; ok {
			b.WriteString(":" + string(c) + " - [0:0]\n")
		}
	}
	for _, c := range f.order[t] {
		for _, r := range f.chains[t][c] {
			b.WriteString("-A " + string(c) + " " + r + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String()), nil
}

func (f *fakeIPT) HasChain(_ context.Context, t iptables.Table, c iptables.Chain) (bool, error) {
	_, ok := f.chains[t][c]
	return ok, nil
}

func (f *fakeIPT) EnsureChain(_ context.Context, t iptables.Table, c iptables.Chain) (bool, error) {
	if _, ok := f.chains[t][c]; ok {
		return true, nil
	}
	f.declare(t, c)
	return false, nil
}

func (f *fakeIPT) EnsureRule(_ context.Context, pos iptables.RulePosition, t iptables.Table, c iptables.Chain, args ...string) (bool, error) {
	rules, ok := f.chains[t][c]
	if !ok {
		return false, fmt.Errorf("chain %s: %w", c, iptables.ErrNotFound)
	}
	r := canonicalRule(iptables.IPv4, t, args)
	if slices.Contains(rules, r) {
		return true, nil
	}
	f.ensures++
	if pos == iptables.Prepend {
		f.chains[t][c] = append([]string{r}, rules...)
	} else {
		f.chains[t][c] = append(rules, r)
	}
	return false, nil
}
