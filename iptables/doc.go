// Package iptables is kproxy's iptables kernel library: typed table and chain names, one small
// Interface (bulk restore, save, and the two idempotent helpers the base-chain jumps need), a
// real implementation that execs the iptables tools inside an explicit network namespace, a
// stateful Fake that validates like the kernel, and a packet tracer over the Fake.
//
// How it works:
//
//   - All bulk writes go through iptables-restore --noflush (Interface.Restore). A Transaction
//     builds the restore text: per table, every chain declaration first (":CHAIN - [0:0]"
//     creates the chain or flushes it), then the rules, then the chain deletions, then COMMIT.
//     That order is the one the nf_tables backend needs: a rule may only jump to a chain that
//     exists at that point of the transaction, and a chain can only be deleted once it is empty
//     and nothing jumps to it any more. Each COMMIT is atomic on its own.
//   - EnsureChain and EnsureRule exec iptables -N, -C, -I/-A, one exec each: they are for the
//     handful of base-chain jumps, never for per-service rules.
//   - CanonicalRule prints a rule the way iptables-save prints it (argument order, /32 on
//     addresses, MARK as --set-xmark, quantised statistic probabilities, quoted comments), for
//     the matches and targets kproxy writes. The Fake stores rules in that form, so the Fake's
//     Save looks like the kernel's, and a caller can compare what it wants with what
//     iptables-save shows without rewriting anything.
//   - The Fake applies each table section of a restore atomically and rejects what the kernel
//     (iptables 1.8, nf_tables backend) rejects: jumps to chains that do not exist yet, chain
//     deletions of non-empty, referenced or missing chains, appends to undeclared chains, bad
//     syntax, unknown matches, targets and options, DROP in the nat table. It reports the same
//     line numbers as iptables-restore through *RestoreError. What it does not model: hook
//     restrictions (MASQUERADE outside POSTROUTING), service names for ports, host names for
//     addresses.
//   - Trace walks a packet through the Fake's nat and filter chains and returns every possible
//     outcome (DNAT destination, masquerade, verdict). A packet the node sends to one of its
//     own addresses comes back through filter INPUT; it has no input interface (-i). A match or target it does not understand
//     is an error, so a test cannot pass on rules the tracer does not really evaluate.
//
// Scaling: a restore's cost grows with the number of chains it declares, far faster than
// linearly with the nf_tables backend (see DESIGN.md): callers keep restores small and write
// only what changed.
//
// This package must not import anything from kproxy (endpoints/, proxier/, the proxy mode in
// iptables/proxy): it is a kernel library, with no Kubernetes types and no logging.
package iptables
