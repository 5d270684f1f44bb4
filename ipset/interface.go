package ipset

import "context"

// Interface reads and writes the ipsets of one network namespace.
//
// Implementations: Handle (the kernel, over netlink) and Fake (in memory). Both return
// the same errors for the same calls; the contract tests run one table against both.
// Every method checks ctx before it starts and between entries; a netlink request
// that has been sent is not interrupted (the socket timeout bounds it).
type Interface interface {
	// ListSets returns the names of all sets in the namespace, sorted.
	// Equivalent to: `ipset list -n`.
	ListSets(ctx context.Context) ([]string, error)

	// EnsureSet creates the set if it is missing. If a set of that name exists with the
	// same type, family, range and maxelem it is left as it is, entries included;
	// otherwise ErrTypeMismatch. Equivalent to: `ipset create -exist NAME TYPE ...`.
	EnsureSet(ctx context.Context, set Set) error

	// DestroySet destroys the set. A missing set is not an error. A set referenced by
	// an iptables rule gives ErrInUse. Equivalent to: `ipset destroy NAME`.
	DestroySet(ctx context.Context, name string) error

	// ListEntries returns the set's entries in canonical form, sorted by String; a
	// missing set gives ErrNotFound. Equivalent to: `ipset list NAME`.
	ListEntries(ctx context.Context, name string) ([]Entry, error)

	// AddEntries adds the entries one by one, in order; an entry already present is
	// fine (`ipset add -exist`). It stops at the first error (ErrNotFound,
	// ErrInvalidEntry, ErrSetFull): entries before it stay added, as in the kernel.
	AddEntries(ctx context.Context, name string, entries []Entry) error

	// DelEntries deletes the entries one by one; an entry not present is fine
	// (`ipset del -exist`). It stops at the first error, like AddEntries.
	DelEntries(ctx context.Context, name string, entries []Entry) error

	// Swap exchanges the contents (entries, type and options) of two sets; the names,
	// and the iptables rules that reference them, stay where they are. Both must exist
	// (ErrNotFound) and have the same type and family (ErrTypeMismatch).
	// Equivalent to: `ipset swap A B`.
	Swap(ctx context.Context, a, b string) error

	// FlushSet removes every entry of the set; a missing set gives ErrNotFound.
	// Equivalent to: `ipset flush NAME`. Never used on live sets by Reconcile.
	FlushSet(ctx context.Context, name string) error
}
