package ipset

import "errors"

// Errors returned by every Interface implementation (the kernel one and Fake), wrapped
// with the operation, the set and the entry. Check them with errors.Is.
var (
	// ErrNotFound: the set does not exist (ENOENT; for Swap also the kernel's
	// IPSET_ERR_EXIST_SETNAME2 when the second set is missing).
	ErrNotFound = errors.New("set not found")
	// ErrTypeMismatch: EnsureSet found a set of that name with another type, family,
	// range or maxelem (the kernel's EEXIST on `create -exist`); or Swap was given sets
	// of different types or families (IPSET_ERR_TYPE_MISMATCH).
	ErrTypeMismatch = errors.New("set exists with another type or options")
	// ErrInvalidSet: the Set fails Validate (name, type, family, range).
	ErrInvalidSet = errors.New("invalid set")
	// ErrInvalidEntry: the entry does not fit the set: wrong shape for the type, wrong
	// family, unknown protocol, a /0 network, a port outside a bitmap's range (the
	// kernel's IPSET_ERR_PROTOCOL, IPSET_ERR_IPADDR_IPV4/6, IPSET_ERR_INVALID_CIDR,
	// IPSET_ERR_BITMAP_RANGE).
	ErrInvalidEntry = errors.New("invalid entry for the set")
	// ErrSetFull: a hash set already holds maxelem entries (IPSET_ERR_HASH_FULL).
	ErrSetFull = errors.New("set is full")
	// ErrInUse: DestroySet of a set that a kernel component (an iptables rule, a
	// list:set) references (IPSET_ERR_BUSY; IPSET_ERR_REFERENCED on older kernels).
	ErrInUse = errors.New("set is in use by a kernel component")
	// ErrUnsupported: the kernel lacks the set type (IPSET_ERR_FIND_TYPE) or ipset
	// altogether (EPROTONOSUPPORT, no ip_set module).
	ErrUnsupported = errors.New("ipset type not supported by the kernel")
)
