// Package ipset owns kproxy's ipsets: the set and entry model, a writer over the
// kernel's ipset netlink API bound to one network namespace, a stateful Fake, and
// Reconcile, which brings a namespace's sets to a desired state by difference.
//
// # What it owns, what it must not import
//
// The model (Set, Entry, SetType, kube-proxy's set names in kube.go) and the Interface
// with its two implementations. It imports no other kproxy package, no klog (no
// logging: errors are returned and logged once by the caller's sync loop) and no
// Kubernetes types; the IPVS planner computes []SetState from services and hands them
// here. Only handle_linux.go and codec_linux.go touch the kernel.
//
// # How it works
//
// Handle sends one netlink request per set operation and per entry, on sockets opened
// in the namespace given to New (never an exec of ipset(8)). It uses
// github.com/vishvananda/netlink v1.3.1's ipset API (IpsetCreate, IpsetDestroy,
// IpsetFlush, IpsetSwap, IpsetAdd, IpsetDel) where that API works, and its own messages
// (codec_linux.go, built from netlink's nl primitives) where it does not:
//
//   - bitmap:port entries cannot be added or deleted through IpsetAdd/IpsetDel: they
//     always send a protocol attribute with a port, which bitmap:port rejects
//     (IPSET_ERR_PROTOCOL, "invalid protocol"). kube-proxy's KUBE-NODE-PORT-* sets are
//     bitmap:port, so Handle sends those ADD/DEL messages itself.
//   - IpsetList/IpsetListAll cannot list headers only, so listing set names would dump
//     every member of every set; and they log "unknown ipset data attribute" through
//     the standard logger, on every call, for sets of revision >= 6 (those the ipset 7.x
//     CLI creates, e.g. kube-proxy's). Handle sends LIST itself and parses the reply.
//   - IpsetCreateOptions has no hashsize (the kernel default 1024 is kube-proxy's value)
//     and picks the lowest revision of each type (hash:ip,port 1, hash:net 0,
//     bitmap:port 0); the kernel's `create -exist` check ignores revisions, so kproxy and
//     kube-proxy still take over each other's sets.
//   - Its internal ipsetExecute panics on an error that is not a syscall.Errno; Handle
//     recovers and returns it as an error.
//   - No multi-entry messages (the kernel accepts many entries in one ADT message, as
//     `ipset restore` sends): one round trip per entry. Measured in a namespace on the
//     2-core dev host (TestKernelLargeSets): ~8 µs per added entry (20,000 in 0.17 s),
//     listing 20,000 entries 0.15-0.2 s, ListSets (headers only) under 1 ms.
//   - The hash:net nomatch flag, timeouts, counters and comments are not modelled, nor
//     protocols other than tcp, udp and sctp: an entry another program added with, say,
//     icmp lists with its protocol number and cannot be deleted alone; Reconcile drops
//     it by rebuilding the set and swapping.
//
// What the kernel does, and what Handle and Fake therefore do (the contract tests
// check every line against both, on the host's 6.18 and the VM's Debian 6.1):
//
//   - Each type takes one entry shape (see Entry). The kernel rejects attributes its
//     type does not know (IPSET_ERR_PROTOCOL), but takes some other shapes with another
//     meaning: an address with a prefix length into hash:ip adds a whole range, a bare
//     address into hash:net (or as the net of hash:ip,port,net) a host network. So
//     AddEntries/DelEntries read the set's header (one small request per call) and
//     check every entry against the set's type and family before sending it
//     (ErrInvalidEntry).
//   - A network is stored masked; /0 cannot be stored (netlink would silently send no
//     prefix length and the kernel would store a host address, so it is rejected before
//     sending).
//   - `add` of a present entry and `del` of an absent one are no-ops (-exist).
//   - `create -exist` of an existing set is a no-op when type, maxelem and range are the
//     same, else EEXIST; but it does not compare the family (it compares the type's
//     families, "any" for hash types): hash:ip,port family inet6 over an inet set
//     succeeds. So EnsureSet reads the header and compares the set itself
//     (ErrTypeMismatch), creating only a missing set.
//   - Destroy of a missing set: Linux 6.1 (Debian, in the VM) and 6.18 (the host) return
//     success when NLM_F_EXCL is not set, as netlink sends it; DestroySet also maps
//     ENOENT to nil, for kernels that return it. Destroy of a set an iptables rule uses:
//     IPSET_ERR_BUSY, mapped to ErrInUse.
//   - Swap needs both sets (a missing first set is ENOENT, a missing second one
//     IPSET_ERR_EXIST_SETNAME2, both ErrNotFound) with the same type features and
//     family (IPSET_ERR_TYPE_MISMATCH); names and references stay, contents and options
//     (maxelem, range) move. A swap of a set with itself is a no-op.
//   - A hash set at maxelem refuses new entries (IPSET_ERR_HASH_FULL, ErrSetFull) but
//     takes present ones; a port outside a bitmap's range is IPSET_ERR_BITMAP_RANGE.
//     (Both are the same type-specific error number, told apart by the set's type.)
//
// Linux only (Handle); the model, Fake and Reconcile are portable.
//
// # Ordering and what scales with what
//
// Reconcile lists each desired set (one dump, O(entries)) and applies only the
// difference: additions before deletions, so an entry that stays is never absent; a
// live set is never flushed. Past ReconcileOptions.RebuildThreshold changes a set is
// rebuilt into TempName(set) and swapped in atomically. Sets are ensured before the
// iptables rules that reference them are written (the caller's order), and stale sets
// are destroyed (DestroyStale) only after those rules are gone, and only if owned
// (Ownership: kube-proxy's names, or a prefix the caller gives).
package ipset
