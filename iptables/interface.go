package iptables

import (
	"context"
	"errors"
	"fmt"
)

// RulePosition says where EnsureRule puts a missing rule.
type RulePosition string

const (
	// Append adds the rule at the end of the chain (iptables -A).
	Append RulePosition = "-A"
	// Prepend inserts the rule at the top of the chain (iptables -I).
	Prepend RulePosition = "-I"
)

// Interface is what kproxy needs from iptables (or ip6tables) in one network namespace.
type Interface interface {
	// Restore applies data, a complete restore text ("*table" ... "COMMIT", one or more
	// tables), without flushing the tables first. Each table section is atomic. A rejected
	// input returns a *RestoreError.
	// Equivalent to: iptables-restore --noflush -w < data
	Restore(ctx context.Context, data []byte) error
	// Save returns one table in iptables-save format.
	// Equivalent to: iptables-save -t table
	Save(ctx context.Context, table Table) ([]byte, error)
	// EnsureChain creates chain in table if it does not exist and reports whether it existed.
	// Equivalent to: iptables -w -t table -N chain
	EnsureChain(ctx context.Context, table Table, chain Chain) (bool, error)
	// EnsureRule adds a rule to chain (which must exist) unless an identical rule is already
	// there, at the top of the chain for Prepend and at the end for Append. It reports whether
	// the rule existed.
	// Equivalent to: iptables -w -t table -C chain args... || iptables -w -t table -I chain args...
	EnsureRule(ctx context.Context, pos RulePosition, table Table, chain Chain, args ...string) (bool, error)
	// HasChain reports whether table holds the user chain, without reading the whole table
	// where the backend allows (iptables-nft: one netlink request; it creates built-in chains
	// only when a rule needs them, so ask for user chains only).
	// Equivalent to: iptables -w -t table -S chain >/dev/null
	HasChain(ctx context.Context, table Table, chain Chain) (bool, error)
}

// RestoreError is a restore input that iptables-restore (or the Fake) rejected.
type RestoreError struct {
	// Line is the 1-based line of the input the error is reported at (for errors found when
	// the transaction is committed, the COMMIT line), 0 when unknown.
	Line int
	// Msg is iptables-restore's explanation.
	Msg string
}

func (e *RestoreError) Error() string {
	if e.Line == 0 {
		return "iptables-restore: " + e.Msg
	}
	return fmt.Sprintf("iptables-restore: line %d: %s", e.Line, e.Msg)
}

// ErrNotFound is returned (wrapped) by the Fake's EnsureRule when the chain does not exist.
var ErrNotFound = errors.New("not found")
