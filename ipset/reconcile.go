package ipset

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// SetState is a set and the entries it must hold.
type SetState struct {
	Set     Set
	Entries []Entry
}

// ReconcileOptions tune Reconcile.
type ReconcileOptions struct {
	// RebuildThreshold: when more than this many entries of one set must change, the
	// set is rebuilt through a temporary set and swapped in (one atomic switch) instead
	// of changed entry by entry. 0 never rebuilds for size.
	RebuildThreshold int
	// Observe, when set, is called with each existing set's entries as listed before any
	// change (the IPVS mode reads which virtual servers were its own from them).
	Observe func(set string, entries []Entry)
}

// ReconcileResult counts what Reconcile did, for the caller's one-line sync summary.
type ReconcileResult struct {
	Added    int // entries added in place (or into a replaced set)
	Deleted  int // entries deleted in place
	Rebuilt  int // sets rebuilt through a temporary set and swapped in
	Replaced int // sets destroyed and created again because their type changed
}

// Reconcile makes each desired set exist and hold exactly its entries, and touches no
// other set. Per set:
//
//  1. EnsureSet (a set kproxy or kube-proxy made before is reused as it is);
//  2. list its entries, computeEntryChanges against the desired ones;
//  3. apply the difference in place, additions before deletions, so entries that stay
//     never leave the set (a live set is never flushed); or, past RebuildThreshold or
//     when an entry to delete cannot be expressed (another program's icmp entry), fill
//     a temporary set (TempName) and Swap it in, then destroy the temporary.
//
// A set that exists with another type or options is rebuilt and swapped when the
// kernel allows the swap (same type and family, e.g. another maxelem); otherwise it is
// destroyed and created again, which the kernel refuses (ErrInUse) while an iptables
// rule references it: the caller must drop such rules first.
//
// An error in one set does not stop the others; all errors are returned joined.
// Stale sets are removed separately by DestroyStale, after the rules that used them.
func Reconcile(ctx context.Context, iface Interface, desired []SetState, opts ReconcileOptions) (ReconcileResult, error) {
	var res ReconcileResult
	var errs []error
	for _, st := range desired {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := reconcileSet(ctx, iface, st, opts, &res); err != nil {
			errs = append(errs, fmt.Errorf("reconcile set %s: %w", st.Set.Name, err))
		}
	}
	return res, errors.Join(errs...)
}

// ReconcileFrom is Reconcile for a caller that knows what the sets hold: prev is the
// desired state of its last successful Reconcile or ReconcileFrom, which it vouches is still
// the kernel's. A set whose definition and entries equal prev's is not touched (no listing,
// no EnsureSet); a set whose entries differ gets the difference, computed against prev, in
// place (additions first) or through a rebuild past RebuildThreshold; a set new or changed
// in definition since prev goes through Reconcile's path. A wrong prev (a set changed by
// hand since) shows as an error from the kernel or goes unseen until the caller's next
// Reconcile, which lists every set.
func ReconcileFrom(ctx context.Context, iface Interface, prev, desired []SetState, opts ReconcileOptions) (ReconcileResult, error) {
	var res ReconcileResult
	var errs []error
	before := make(map[string]SetState, len(prev))
	for _, st := range prev {
		before[st.Set.Name] = st
	}
	for _, st := range desired {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		old, ok := before[st.Set.Name]
		var err error
		switch {
		case !ok || !reflect.DeepEqual(old.Set, st.Set):
			err = reconcileSet(ctx, iface, st, opts, &res)
		case slices.Equal(old.Entries, st.Entries):
			continue
		default:
			var want []Entry
			if want, err = validEntries(st); err == nil {
				err = applyEntryChanges(ctx, iface, st.Set, old.Entries, want, opts, &res)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reconcile set %s: %w", st.Set.Name, err))
		}
	}
	return res, errors.Join(errs...)
}

func reconcileSet(ctx context.Context, iface Interface, st SetState, opts ReconcileOptions, res *ReconcileResult) error {
	if err := st.Set.Validate(); err != nil {
		return err
	}
	want, err := validEntries(st)
	if err != nil {
		return err
	}
	err = iface.EnsureSet(ctx, st.Set)
	if errors.Is(err, ErrTypeMismatch) {
		return replaceSet(ctx, iface, st.Set, want, res)
	}
	if err != nil {
		return err
	}
	have, err := iface.ListEntries(ctx, st.Set.Name)
	if err != nil {
		return err
	}
	if opts.Observe != nil {
		opts.Observe(st.Set.Name, have)
	}
	return applyEntryChanges(ctx, iface, st.Set, have, want, opts, res)
}

// applyEntryChanges brings the set, holding have, to want (validated): in place, additions
// before deletions, or rebuilt and swapped in (see Reconcile).
func applyEntryChanges(ctx context.Context, iface Interface, set Set, have, want []Entry, opts ReconcileOptions, res *ReconcileResult) error {
	add, del := computeEntryChanges(have, want)
	if len(add) == 0 && len(del) == 0 {
		return nil
	}
	if (opts.RebuildThreshold > 0 && len(add)+len(del) > opts.RebuildThreshold) || !allValid(del) {
		if err := rebuildSet(ctx, iface, set, want); err != nil {
			return err
		}
		res.Rebuilt++
		return nil
	}
	if len(add) > 0 {
		if err := iface.AddEntries(ctx, set.Name, add); err != nil {
			return err
		}
		res.Added += len(add)
	}
	if len(del) > 0 {
		if err := iface.DelEntries(ctx, set.Name, del); err != nil {
			return err
		}
		res.Deleted += len(del)
	}
	return nil
}

// allValid reports whether every entry can be sent to the kernel. An entry another
// program added that kproxy cannot express (another protocol, say icmp) cannot be
// deleted by DelEntries; rebuilding the set through a swap drops it.
func allValid(es []Entry) bool {
	for _, e := range es {
		if _, err := e.validate(); err != nil {
			return false
		}
	}
	return true
}

// validEntries checks every desired entry against its set before anything is written,
// so that one bad entry fails its set without a half-applied change.
func validEntries(st SetState) ([]Entry, error) {
	set := st.Set.withDefaults()
	out := make([]Entry, 0, len(st.Entries))
	for _, e := range st.Entries {
		e = e.canonical()
		if err := e.validateFor(set); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// rebuildSet fills a temporary set with want and swaps it with the live set, which
// must exist and be swappable with set; the old contents are then destroyed.
func rebuildSet(ctx context.Context, iface Interface, set Set, want []Entry) error {
	tmp := set
	tmp.Name = TempName(set.Name)
	// A temporary set left by an interrupted run may have any contents or type.
	if err := iface.DestroySet(ctx, tmp.Name); err != nil {
		return err
	}
	if err := iface.EnsureSet(ctx, tmp); err != nil {
		return err
	}
	if len(want) > 0 {
		if err := iface.AddEntries(ctx, tmp.Name, want); err != nil {
			_ = iface.DestroySet(ctx, tmp.Name) // (best effort; the error above is the one to report)
			return err
		}
	}
	if err := iface.Swap(ctx, set.Name, tmp.Name); err != nil {
		_ = iface.DestroySet(ctx, tmp.Name) // (idem)
		return err
	}
	return iface.DestroySet(ctx, tmp.Name)
}

// replaceSet handles a set that exists with another type or options: swap in a
// rebuilt set when the kernel allows it, else destroy and create.
func replaceSet(ctx context.Context, iface Interface, set Set, want []Entry, res *ReconcileResult) error {
	err := rebuildSet(ctx, iface, set, want)
	if err == nil {
		res.Rebuilt++
		return nil
	}
	if !errors.Is(err, ErrTypeMismatch) {
		return err
	}
	if err := iface.DestroySet(ctx, set.Name); err != nil {
		return fmt.Errorf("replace set of another type: %w", err)
	}
	if err := iface.EnsureSet(ctx, set); err != nil {
		return err
	}
	res.Replaced++
	if len(want) == 0 {
		return nil
	}
	if err := iface.AddEntries(ctx, set.Name, want); err != nil {
		return err
	}
	res.Added += len(want)
	return nil
}

// computeEntryChanges returns the entries to add (in want, not in have) and to delete
// (in have, not in want), each sorted by String and without duplicates. Entries are
// compared in canonical form, as the kernel stores them.
func computeEntryChanges(have, want []Entry) (add, del []Entry) {
	index := func(es []Entry) map[string]Entry {
		m := make(map[string]Entry, len(es))
		for _, e := range es {
			e = e.canonical()
			m[e.String()] = e
		}
		return m
	}
	h, w := index(have), index(want)
	for k, e := range w {
		if _, ok := h[k]; !ok {
			add = append(add, e)
		}
	}
	for k, e := range h {
		if _, ok := w[k]; !ok {
			del = append(del, e)
		}
	}
	sortEntries(add)
	sortEntries(del)
	return add, del
}

// Ownership says which sets kproxy may destroy when they are no longer desired: those
// named in Names and those whose names start with Prefix (if not empty). Sets of other
// programs (kube-router's, Calico's, an operator's) must match neither.
type Ownership struct {
	Names  []string
	Prefix string
}

// Owns reports whether the set is kproxy's to destroy. Temporary sets of owned sets
// (TempName) are owned too.
func (o Ownership) Owns(name string) bool {
	if o.Prefix != "" && strings.HasPrefix(name, o.Prefix) {
		return true
	}
	for _, n := range o.Names {
		if name == n || name == TempName(n) {
			return true
		}
	}
	return false
}

// computeStaleSets returns the existing sets that are owned and not desired, sorted.
func computeStaleSets(existing []string, desired []SetState, own Ownership) []string {
	keep := map[string]bool{}
	for _, st := range desired {
		keep[st.Set.Name] = true
	}
	var stale []string
	for _, n := range existing {
		if !keep[n] && own.Owns(n) {
			stale = append(stale, n)
		}
	}
	sort.Strings(stale)
	return stale
}

// DestroyStale destroys the owned sets that are not desired (and leftover temporary
// sets). Call it after the iptables rules that referenced them are gone: a referenced
// set gives ErrInUse and is left for the next sync. It returns the destroyed names.
func DestroyStale(ctx context.Context, iface Interface, desired []SetState, own Ownership) ([]string, error) {
	existing, err := iface.ListSets(ctx)
	if err != nil {
		return nil, err
	}
	var destroyed []string
	var errs []error
	for _, n := range computeStaleSets(existing, desired, own) {
		if err := iface.DestroySet(ctx, n); err != nil {
			errs = append(errs, err)
			continue
		}
		destroyed = append(destroyed, n)
	}
	return destroyed, errors.Join(errs...)
}

// TempName is the temporary set used to rebuild a set: "<name>-tmp" when that fits in
// MaxNameLen, else the name cut short plus a hash of the full name, so that two long
// names with a common beginning get different temporaries.
func TempName(name string) string {
	const suffix = "-tmp"
	if len(name)+len(suffix) <= MaxNameLen {
		return name + suffix
	}
	sum := sha256.Sum256([]byte(name))
	h := strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:6]
	keep := MaxNameLen - len(suffix) - len(h) - 1
	return name[:keep] + "-" + h + suffix
}
