package ipset

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Fake is an in-memory Interface for tests. It keeps state and returns the errors the
// kernel returns for the same calls (checked by the contract tests against a real
// kernel), in particular:
//
//   - an entry of the wrong shape or family for the set's type, a /0 network and a port
//     outside a bitmap:port range are ErrInvalidEntry; a hash set at maxelem is ErrSetFull;
//   - EnsureSet over a set with another type, family, range or maxelem is ErrTypeMismatch;
//   - Swap of sets of different types or families is ErrTypeMismatch, of a missing set
//     ErrNotFound, of a set with itself a no-op;
//   - DestroySet of a missing set is nil (as the kernel does without NLM_F_EXCL, and as
//     Handle does on kernels that return ENOENT); of a referenced set ErrInUse;
//   - adding an entry already present and deleting one that is absent are no-ops;
//   - AddEntries and DelEntries apply entries in order and stop at the first error,
//     keeping what was done before it (the kernel has no multi-entry transaction).
//
// References (iptables rules using a set) are simulated with SetReferenced.
// Fake is safe for concurrent use.
type Fake struct {
	mu   sync.Mutex
	sets map[string]*fakeSet
}

type fakeSet struct {
	set        Set              // with defaults
	entries    map[string]Entry // by Entry.String
	referenced bool
}

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{sets: map[string]*fakeSet{}}
}

var _ Interface = (*Fake)(nil)

// SetReferenced marks a set as used by a kernel component (as an iptables
// `-m set --match-set` rule does), so that DestroySet fails with ErrInUse.
func (f *Fake) SetReferenced(name string, referenced bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.sets[name]; s != nil {
		s.referenced = referenced
	}
}

// ListSets implements Interface.
func (f *Fake) ListSets(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.sets))
	for n := range f.sets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// EnsureSet implements Interface.
func (f *Fake) EnsureSet(ctx context.Context, set Set) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := set.Validate(); err != nil {
		return err
	}
	set = set.withDefaults()
	set.Comment = "" // not in the kernel
	f.mu.Lock()
	defer f.mu.Unlock()
	if old := f.sets[set.Name]; old != nil {
		if !old.set.sameAs(set) {
			return fmt.Errorf("ensure set %s: %w: it is %q, want %q", set.Name, ErrTypeMismatch, old.set, set)
		}
		return nil
	}
	f.sets[set.Name] = &fakeSet{set: set, entries: map[string]Entry{}}
	return nil
}

// DestroySet implements Interface.
func (f *Fake) DestroySet(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[name]
	if s == nil {
		return nil
	}
	if s.referenced {
		return fmt.Errorf("destroy set %s: %w", name, ErrInUse)
	}
	delete(f.sets, name)
	return nil
}

// ListEntries implements Interface.
func (f *Fake) ListEntries(ctx context.Context, name string) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[name]
	if s == nil {
		return nil, fmt.Errorf("list set %s: %w", name, ErrNotFound)
	}
	out := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	sortEntries(out)
	return out, nil
}

// AddEntries implements Interface.
func (f *Fake) AddEntries(ctx context.Context, name string, entries []Entry) error {
	return f.addDel(ctx, "add", name, entries)
}

// DelEntries implements Interface.
func (f *Fake) DelEntries(ctx context.Context, name string, entries []Entry) error {
	return f.addDel(ctx, "del", name, entries)
}

func (f *Fake) addDel(ctx context.Context, op, name string, entries []Entry) error {
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f.addDelOne(op, name, e.canonical()); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fake) addDelOne(op, name string, e Entry) error {
	// Entries are checked on their own first, as Handle does before it sends them.
	if _, err := e.validate(); err != nil {
		return fmt.Errorf("%s %s to set %s: %w", op, e.debugString(), name, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[name]
	if s == nil {
		return fmt.Errorf("%s %s to set %s: %w", op, e, name, ErrNotFound)
	}
	if err := e.validateFor(s.set); err != nil {
		return fmt.Errorf("%s %s to set %s: %w", op, e, name, err)
	}
	key := e.String()
	if op == "del" {
		delete(s.entries, key)
		return nil
	}
	if _, ok := s.entries[key]; ok {
		return nil
	}
	if s.set.Type.isHash() && uint32(len(s.entries)) >= s.set.MaxElem {
		return fmt.Errorf("%s %s to set %s: %w (maxelem %d)", op, e, name, ErrSetFull, s.set.MaxElem)
	}
	s.entries[key] = e
	return nil
}

// Swap implements Interface.
func (f *Fake) Swap(ctx context.Context, a, b string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sa, sb := f.sets[a], f.sets[b]
	if sa == nil || sb == nil {
		return fmt.Errorf("swap sets %s and %s: %w", a, b, ErrNotFound)
	}
	if sa.set.Type.features() != sb.set.Type.features() || sa.set.Family != sb.set.Family {
		return fmt.Errorf("swap sets %s (%s %s) and %s (%s %s): %w", a, sa.set.Type, sa.set.Family, b, sb.set.Type, sb.set.Family, ErrTypeMismatch)
	}
	// Contents, type and options move; names and references stay.
	sa.set, sb.set = sb.set, sa.set
	sa.set.Name, sb.set.Name = a, b
	sa.entries, sb.entries = sb.entries, sa.entries
	return nil
}

// FlushSet implements Interface.
func (f *Fake) FlushSet(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sets[name]
	if s == nil {
		return fmt.Errorf("flush set %s: %w", name, ErrNotFound)
	}
	s.entries = map[string]Entry{}
	return nil
}

// Dump returns the whole state in `ipset save` form, sets and entries sorted, for tests
// to compare against:
//
//	create KUBE-CLUSTER-IP hash:ip,port family inet maxelem 65536
//	add KUBE-CLUSTER-IP 100.100.0.10,tcp:80
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.sets))
	for n := range f.sets {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		s := f.sets[n]
		b.WriteString(s.set.String())
		b.WriteByte('\n')
		keys := make([]string, 0, len(s.entries))
		for k := range s.entries {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "add %s %s\n", n, k)
		}
	}
	return b.String()
}

// sortEntries sorts entries by their String form, the order ListEntries returns.
func sortEntries(es []Entry) {
	// each entry's String once, not twice per comparison (10,000 entries: 176 ms -> a tenth)
	keyed := make([]struct {
		key string
		e   Entry
	}, len(es))
	for i, e := range es {
		keyed[i].key, keyed[i].e = e.String(), e
	}
	sort.Slice(keyed, func(i, j int) bool { return keyed[i].key < keyed[j].key })
	for i := range keyed {
		es[i] = keyed[i].e
	}
}
