package iptables

import (
	"strconv"
	"strings"
)

// Rule is one rule's arguments, everything after "-A CHAIN".
type Rule []string

// String gives the rule as it appears in restore text, arguments quoted where needed.
func (r Rule) String() string {
	var b strings.Builder
	for i, a := range r {
		if i > 0 {
			b.WriteByte(' ')
		}
		writeArg(&b, a)
	}
	return b.String()
}

// writeArg writes one argument, in double quotes when it is empty or holds a space, a quote
// or a backslash (iptables-restore's quoting: backslash escapes inside double quotes).
func writeArg(b *strings.Builder, a string) {
	if a != "" && !strings.ContainsAny(a, " \t\"'\\") {
		b.WriteString(a)
		return
	}
	b.WriteByte('"')
	for _, c := range a {
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
}

// Transaction builds iptables-restore input. Per table it writes every chain declaration
// first, then the rules in the order they were added, then the chain deletions, then COMMIT:
// the order in which the kernel accepts jumps to chains declared in the same transaction and
// deletions of chains whose referrers were rewritten. Tables come in the order first used.
// The zero value is ready to use.
type Transaction struct {
	tables []*txTable
}

type txTable struct {
	table    Table
	declared map[Chain]bool
	decls    []Chain
	rules    []txRule
	deletes  []Chain
}

// txRule is one rule command: op ("-A", "-I", "-D") on chain, at position pos (from 1; 0 for
// none), with the rule's arguments as text ("" for a deletion by position). Kept in parts and
// written out by Bytes: a restore of 10,000 services holds 60,000 of them.
type txRule struct {
	op    string
	chain Chain
	pos   int
	text  string
}

func (tx *Transaction) get(t Table) *txTable {
	for _, tt := range tx.tables {
		if tt.table == t {
			return tt
		}
	}
	tt := &txTable{table: t, declared: map[Chain]bool{}}
	tx.tables = append(tx.tables, tt)
	return tt
}

// Declare creates the user chain, or flushes it when it exists, so that the rules appended to
// it in this transaction replace its content. Declaring a chain twice is harmless.
func (tx *Transaction) Declare(t Table, c Chain) {
	tt := tx.get(t)
	if !tt.declared[c] {
		tt.declared[c] = true
		tt.decls = append(tt.decls, c)
	}
}

// Append adds a rule at the end of chain c.
func (tx *Transaction) Append(t Table, c Chain, r Rule) {
	tt := tx.get(t)
	tt.rules = append(tt.rules, txRule{op: "-A", chain: c, text: r.String()})
}

// AppendSaved adds a rule given as iptables-save prints it (the text after "-A CHAIN ") at
// the end of chain c: iptables-save's output is iptables-restore's input.
func (tx *Transaction) AppendSaved(t Table, c Chain, text string) {
	tt := tx.get(t)
	tt.rules = append(tt.rules, txRule{op: "-A", chain: c, text: text})
}

// Insert adds a rule at the head of chain c ("-I c 1"), which may be a built-in chain the
// transaction does not declare; rules inserted into one chain end up in reverse order.
func (tx *Transaction) Insert(t Table, c Chain, r Rule) {
	tt := tx.get(t)
	tt.rules = append(tt.rules, txRule{op: "-I", chain: c, pos: 1, text: r.String()})
}

// InsertSavedAt puts a rule, given as iptables-save prints it, at position pos (from 1) of
// chain c, which the transaction must not declare: an edit of a chain it keeps. Position
// len+1 appends.
func (tx *Transaction) InsertSavedAt(t Table, c Chain, pos int, text string) {
	tt := tx.get(t)
	tt.rules = append(tt.rules, txRule{op: "-I", chain: c, pos: pos, text: text})
}

// DeleteRuleAt removes the rule at position pos (from 1) of chain c.
func (tx *Transaction) DeleteRuleAt(t Table, c Chain, pos int) {
	tt := tx.get(t)
	tt.rules = append(tt.rules, txRule{op: "-D", chain: c, pos: pos})
}

// Delete flushes and deletes the user chain c. The chain must exist, and every rule that
// jumps to it must be gone by the end of the transaction's rules.
func (tx *Transaction) Delete(t Table, c Chain) {
	tx.Declare(t, c)
	tt := tx.get(t)
	tt.deletes = append(tt.deletes, c)
}

// Commits is the number of COMMIT lines Bytes writes: one per table the transaction changes.
// iptables-nft commits each as one nf_tables transaction.
func (tx *Transaction) Commits() int { return len(tx.tables) }

// Empty reports whether the transaction changes nothing.
func (tx *Transaction) Empty() bool {
	for _, tt := range tx.tables {
		if len(tt.decls) > 0 || len(tt.rules) > 0 {
			return false
		}
	}
	return true
}

// Counts reports how many chains the transaction declares (and so creates or rewrites), how
// many rules it appends or inserts and how many chains it deletes.
func (tx *Transaction) Counts() (declared, rules, deleted int) {
	for _, tt := range tx.tables {
		declared += len(tt.decls)
		rules += len(tt.rules)
		deleted += len(tt.deletes)
	}
	return declared, rules, deleted
}

// Bytes returns the restore text, in a buffer sized once.
func (tx *Transaction) Bytes() []byte {
	size := 0
	for _, tt := range tx.tables {
		size += len(tt.table) + len("*\nCOMMIT\n")
		for _, c := range tt.decls {
			size += len(c) + len(": - [0:0]\n")
		}
		for _, r := range tt.rules {
			size += len(r.op) + len(r.chain) + len(r.text) + 24 // separators, position
		}
		for _, c := range tt.deletes {
			size += len(c) + len("-X \n")
		}
	}
	b := make([]byte, 0, size)
	for _, tt := range tx.tables {
		b = append(append(append(b, '*'), tt.table...), '\n')
		for _, c := range tt.decls {
			b = append(append(append(b, ':'), c...), " - [0:0]\n"...)
		}
		for _, r := range tt.rules {
			b = append(append(append(b, r.op...), ' '), r.chain...)
			if r.pos > 0 {
				b = strconv.AppendInt(append(b, ' '), int64(r.pos), 10)
			}
			if r.text != "" {
				b = append(append(b, ' '), r.text...)
			}
			b = append(b, '\n')
		}
		for _, c := range tt.deletes {
			b = append(append(append(b, "-X "...), c...), '\n')
		}
		b = append(b, "COMMIT\n"...)
	}
	return b
}

// Merge appends other's content to tx: per table, other's chain declarations, rules and
// deletions after tx's own, so the merged restore keeps the declarations-rules-deletions
// order. other is not changed.
func (tx *Transaction) Merge(other *Transaction) {
	for _, ot := range other.tables {
		tt := tx.get(ot.table)
		for _, c := range ot.decls {
			if !tt.declared[c] {
				tt.declared[c] = true
				tt.decls = append(tt.decls, c)
			}
		}
		tt.rules = append(tt.rules, ot.rules...)
		tt.deletes = append(tt.deletes, ot.deletes...)
	}
}
