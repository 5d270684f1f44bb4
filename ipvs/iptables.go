package ipvs

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/kproxy/kproxy/iptables"
)

// unknownMatches are the match extensions iptables.CanonicalRule does not parse. They are
// swapped for comment placeholders while the rest of the rule is canonicalised, then put
// back in iptables-save's spelling.
var unknownMatches = []string{"set", "physdev", "ipvs"}

const placeholderPrefix = "kproxy-ph-"

var placeholderRE = regexp.MustCompile(`-m comment --comment "?` + placeholderPrefix + `(\d+)"?`)

// canonicalRule returns the rule as iptables-save prints it (after "-A CHAIN "). A rule it
// cannot canonicalise keeps its restore text: it then differs from the kernel's, so its
// chain is rewritten each sync, and the kernel judges it.
func canonicalRule(fam iptables.Family, table iptables.Table, r iptables.Rule) string {
	args, segments := hideUnknownMatches(r)
	text, err := iptables.CanonicalRule(fam, table, args...)
	if err != nil {
		return r.String()
	}
	return placeholderRE.ReplaceAllStringFunc(text, func(m string) string {
		i, _ := strconv.Atoi(placeholderRE.FindStringSubmatch(m)[1])
		return saveSegment(segments[i])
	})
}

// hideUnknownMatches replaces each "-m NAME opts..." of an unknownMatches extension with a
// comment placeholder and returns the replaced segments.
func hideUnknownMatches(r iptables.Rule) ([]string, [][]string) {
	var out []string
	var segments [][]string
	for i := 0; i < len(r); i++ {
		if r[i] != "-m" || i+1 >= len(r) || !slices.Contains(unknownMatches, r[i+1]) {
			out = append(out, r[i])
			continue
		}
		end := i + 2
		for end < len(r) && !endsSegment(r, end) {
			end++
		}
		out = append(out, "-m", "comment", "--comment", placeholderPrefix+strconv.Itoa(len(segments)))
		segments = append(segments, r[i:end])
		i = end - 1
	}
	return out, segments
}

// endsSegment reports whether r[i] starts something outside a match's options.
func endsSegment(r iptables.Rule, i int) bool {
	generic := []string{"-s", "-d", "-i", "-o", "-p"}
	switch {
	case r[i] == "-m" || r[i] == "-j" || r[i] == "-g" || slices.Contains(generic, r[i]):
		return true
	case r[i] == "!" && i+1 < len(r) && slices.Contains(generic, r[i+1]):
		return true
	}
	return false
}

// saveSegment prints an unknown match as iptables-save does: set and physdev as written;
// ipvs with a numeric protocol, in vproto, vaddr, vport order.
func saveSegment(seg []string) string {
	if seg[1] != "ipvs" {
		return strings.Join(seg, " ")
	}
	opts := map[string]string{}
	for i := 2; i+1 < len(seg); i += 2 {
		opts[seg[i]] = seg[i+1]
	}
	parts := []string{"-m", "ipvs"}
	if p, ok := opts["--vproto"]; ok {
		parts = append(parts, "--vproto", map[string]string{"tcp": "6", "udp": "17", "sctp": "132"}[p])
	}
	if a, ok := opts["--vaddr"]; ok {
		// a host address is printed without its mask (measured: iptables 1.8.9, nft)
		a = strings.TrimSuffix(strings.TrimSuffix(a, "/32"), "/128")
		parts = append(parts, "--vaddr", a)
	}
	if p, ok := opts["--vport"]; ok {
		parts = append(parts, "--vport", p)
	}
	return strings.Join(parts, " ")
}

// iptablesStats counts what one rules sync wrote.
type iptablesStats struct {
	ChainsWritten, RulesWritten, JumpsEnsured int
	// RestoreFailed: the iptables-restore of the changed chains failed.
	RestoreFailed bool
}

// syncRules reads the nat and filter tables and, in one iptables-restore --noflush, rewrites
// only the owned chains whose rules differ from the plan's and inserts the missing jumps from
// the built-in chains. Nothing is written when the kernel already matches.
func syncRules(ctx context.Context, ipt iptables.Interface, fam iptables.Family, chains []ChainRules) (iptablesStats, error) {
	var st iptablesStats
	kernel := map[iptables.Table]map[iptables.Chain][]string{}
	for _, t := range []iptables.Table{iptables.TableNAT, iptables.TableFilter} {
		data, err := ipt.Save(ctx, t)
		if err != nil {
			return st, fmt.Errorf("save %s table: %w", t, err)
		}
		if kernel[t], err = iptables.ParseSave(data, t); err != nil {
			return st, err
		}
	}
	tx := &iptables.Transaction{}
	for _, c := range chains {
		want := make([]string, 0, len(c.Rules))
		for _, r := range c.Rules {
			want = append(want, canonicalRule(fam, c.Table, r))
		}
		have, ok := kernel[c.Table][c.Chain]
		if ok && slices.Equal(have, want) {
			continue
		}
		tx.Declare(c.Table, c.Chain)
		for _, r := range c.Rules {
			tx.Append(c.Table, c.Chain, r)
		}
		st.ChainsWritten++
		st.RulesWritten += len(c.Rules)
	}
	for _, j := range baseJumps {
		if !slices.Contains(kernel[j.table][j.from], canonicalRule(fam, j.table, j.rule())) {
			tx.Insert(j.table, j.from, j.rule())
			st.JumpsEnsured++
		}
	}
	if !tx.Empty() {
		if err := ipt.Restore(ctx, tx.Bytes()); err != nil {
			st.RestoreFailed = true
			return st, fmt.Errorf("restore IPVS mode chains and jumps: %w", err)
		}
	}
	return st, nil
}
