package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/iptables"
)

// --cleanup removes, in each IP family, the iptables chains kproxy's iptables and IPVS modes
// (and the datapath's KPROXY- chains) create, and the jumps to them from the built-in chains,
// then exits, as kube-proxy's --cleanup does. It never touches another chain: an owned chain
// that a foreign chain still jumps to is left in place (with every owned chain it leads to),
// since deleting it would mean editing the foreign chain. KUBE-FIREWALL is kubelet's too and is
// left alone, as kube-proxy leaves it. The IPVS mode's virtual servers, kube-proxy's ipsets and
// the kube-ipvs0 device go too, around the chains (cleanup_ipvs.go, ipvs/cleanup.go); foreign
// virtual servers and sets stay.

// cleanupOwned are the fixed chains of both modes, per table (iptables mode: ownedFixed in
// iptables/proxy plus the canary; IPVS mode: ownedChains in ipvs/rules.go).
var cleanupOwned = map[iptables.Table][]iptables.Chain{
	iptables.TableNAT: {
		iptables.ChainKubeServices, iptables.ChainKubeNodePorts, iptables.ChainKubePostrouting,
		iptables.ChainKubeMarkMasq, iptables.ChainKubeProxyCanary,
		"KUBE-NODE-PORT", "KUBE-LOAD-BALANCER",
	},
	iptables.TableFilter: {
		iptables.ChainKubeServices, iptables.ChainKubeExternalServices, iptables.ChainKubeForward,
		iptables.ChainKubeNodePorts, iptables.ChainKubeProxyFirewall, iptables.ChainKubeProxyCanary,
		"KUBE-NODE-PORT", "KUBE-SOURCE-RANGES-FIREWALL", "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER",
	},
}

// cleanupOwnedNATPrefixes are the per-service nat chains (kube-proxy's names, see
// iptables/proxy/names.go).
var cleanupOwnedNATPrefixes = []string{"KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SVL-", "KUBE-XLB-"}

// cleanupOwnedPrefix is kproxy's own chain prefix (the datapath's KPROXY-POSTROUTING).
const cleanupOwnedPrefix = "KPROXY-"

var cleanupTables = []iptables.Table{iptables.TableNAT, iptables.TableFilter}

func ownedByKProxy(table iptables.Table, c iptables.Chain) bool {
	if slices.Contains(cleanupOwned[table], c) || strings.HasPrefix(string(c), cleanupOwnedPrefix) {
		return true
	}
	if table != iptables.TableNAT {
		return false
	}
	return slices.ContainsFunc(cleanupOwnedNATPrefixes, func(p string) bool { return strings.HasPrefix(string(c), p) })
}

// cleanupPlan is what --cleanup removes from one table.
type cleanupPlan struct {
	// Jumps are the rules of built-in chains that lead to a deleted chain, as "-D CHAIN args".
	Jumps []string
	// Deleted are the owned chains to flush and delete, sorted.
	Deleted []iptables.Chain
	// Kept are owned chains left in place because a foreign chain leads to them, sorted.
	Kept []iptables.Chain
}

// chainOwner reports whether a chain of a table is one the cleanup removes.
type chainOwner func(iptables.Table, iptables.Chain) bool

// computeCleanup plans the cleanup of one table from its saved chains (iptables.ParseSave).
func computeCleanup(table iptables.Table, saved map[iptables.Chain][]string) cleanupPlan {
	return computeCleanupOf(table, saved, ownedByKProxy)
}

// computeCleanupOf is computeCleanup of the chains ownedByKProxy accepts.
func computeCleanupOf(table iptables.Table, saved map[iptables.Chain][]string, ownedByKProxy chainOwner) cleanupPlan {
	// Owned chains reachable from a foreign user chain stay, and so does everything they
	// lead to.
	kept := map[iptables.Chain]bool{}
	var queue []iptables.Chain
	for c, rules := range saved {
		if iptables.IsBuiltin(table, c) || ownedByKProxy(table, c) {
			continue
		}
		for _, r := range rules {
			if t := ruleTarget(r); ownedByKProxy(table, t) && !kept[t] {
				if _, ok := saved[t]; ok {
					kept[t] = true
					queue = append(queue, t)
				}
			}
		}
	}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		for _, r := range saved[c] {
			if t := ruleTarget(r); ownedByKProxy(table, t) && !kept[t] {
				if _, ok := saved[t]; ok {
					kept[t] = true
					queue = append(queue, t)
				}
			}
		}
	}
	var plan cleanupPlan
	deleted := map[iptables.Chain]bool{}
	for c := range saved {
		switch {
		case !ownedByKProxy(table, c) || iptables.IsBuiltin(table, c):
		case kept[c]:
			plan.Kept = append(plan.Kept, c)
		default:
			deleted[c] = true
			plan.Deleted = append(plan.Deleted, c)
		}
	}
	slices.Sort(plan.Deleted)
	slices.Sort(plan.Kept)
	for _, c := range sortedChains(saved) {
		if !iptables.IsBuiltin(table, c) {
			continue
		}
		for _, r := range saved[c] {
			if deleted[ruleTarget(r)] {
				plan.Jumps = append(plan.Jumps, "-D "+string(c)+" "+r)
			}
		}
	}
	return plan
}

// restoreText renders the plan as iptables-restore input: flush every deleted chain (so that
// no deleted chain references another), delete the jumps, delete the chains. Empty when there
// is nothing to do.
func (p cleanupPlan) restoreText(table iptables.Table) []byte {
	if len(p.Deleted) == 0 && len(p.Jumps) == 0 {
		return nil
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%s\n", table)
	for _, c := range p.Deleted {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, j := range p.Jumps {
		b.WriteString(j + "\n")
	}
	for _, c := range p.Deleted {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

func sortedChains(saved map[iptables.Chain][]string) []iptables.Chain {
	out := make([]iptables.Chain, 0, len(saved))
	for c := range saved {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// ruleTarget returns the chain a saved rule jumps (-j) or goes (-g) to; "" when none.
func ruleTarget(rule string) iptables.Chain {
	args := splitSaved(rule)
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-j" || args[i] == "--jump" || args[i] == "-g" || args[i] == "--goto" {
			return iptables.Chain(args[i+1])
		}
	}
	return ""
}

// splitSaved splits a rule as iptables-save prints it into arguments: blanks separate them,
// double quotes group them (a comment's text is one argument) and a backslash inside them
// escapes the next character.
func splitSaved(s string) []string {
	var (
		out           []string
		cur           strings.Builder
		inArg, quoted bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			quoted, inArg = !quoted, true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				out = append(out, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		out = append(out, cur.String())
	}
	return out
}

// cleanupFamily applies the cleanup of the chains owned accepts to the nat and filter tables
// of one family. A table is read and written on its own (one atomic restore each).
func cleanupFamily(ctx context.Context, ipt iptables.Interface, family iptables.Family, owned chainOwner) error {
	logger := klog.FromContext(ctx)
	for _, table := range cleanupTables {
		data, err := ipt.Save(ctx, table)
		if err != nil {
			return fmt.Errorf("save %s table %s: %w", family, table, err)
		}
		saved, err := iptables.ParseSave(data, table)
		if err != nil {
			return fmt.Errorf("parse %s table %s: %w", family, table, err)
		}
		plan := computeCleanupOf(table, saved, owned)
		if len(plan.Kept) > 0 {
			logger.Info("Leaving chains a foreign chain still jumps to", "ipFamily", family,
				"table", table, "chains", plan.Kept)
		}
		text := plan.restoreText(table)
		if text == nil {
			continue
		}
		logger.V(9).Info("Cleanup restore", "ipFamily", family, "table", table, "data", string(text))
		if err := ipt.Restore(ctx, text); err != nil {
			return fmt.Errorf("clean up %s table %s: %w", family, table, err)
		}
		logger.V(2).Info("Cleaned up", "ipFamily", family, "table", table,
			"chainsDeleted", len(plan.Deleted), "jumpsDeleted", len(plan.Jumps))
	}
	return nil
}

// cleanup runs cleanupFamily for IPv4 and IPv6, for every chain of kproxy's.
func cleanup(ctx context.Context, ipts map[iptables.Family]iptables.Interface) error {
	return cleanupChains(ctx, ipts, ownedByKProxy)
}

// cleanupChains runs cleanupFamily for IPv4 and IPv6. A family whose tools are not installed
// (ip6tables on an IPv4-only image) has nothing of kproxy's to remove and is skipped.
func cleanupChains(ctx context.Context, ipts map[iptables.Family]iptables.Interface, owned chainOwner) error {
	logger := klog.FromContext(ctx)
	var errs []error
	for _, family := range []iptables.Family{iptables.IPv4, iptables.IPv6} {
		ipt, ok := ipts[family]
		if !ok {
			continue
		}
		err := cleanupFamily(ctx, ipt, family, owned)
		if errors.Is(err, exec.ErrNotFound) {
			logger.Info("Skipping the cleanup of an IP family: its iptables tools are not installed", "ipFamily", family, "err", err)
			continue
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// runCleanup is kproxy --cleanup on this node's network namespace; excludeCIDRs is
// --ipvs-exclude-cidrs (virtual servers and kube-ipvs0 addresses there are left).
func runCleanup(ctx context.Context, excludeCIDRs []netip.Prefix) error {
	ic, closeIPVS := openIPVSCleanup(ctx, excludeCIDRs)
	defer closeIPVS()
	return cleanupAll(ctx, map[iptables.Family]iptables.Interface{
		iptables.IPv4: iptables.New(iptables.Options{}),
		iptables.IPv6: iptables.New(iptables.Options{IPv6: true}),
	}, ic, ownedByKProxy)
}
