package ipset

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Options configure a Handle.
type Options struct {
	// NetNSPath is the network namespace to work in, e.g. /run/netns/NAME or
	// /proc/PID/ns/net. Empty: the namespace of the thread that calls New.
	NetNSPath string
	// Timeout bounds each netlink request (send and each receive). 0 means 30 s.
	Timeout time.Duration
}

// Handle is the kernel's ipsets of one network namespace, over netlink: one netlink
// request per set operation and per entry, never an exec of ipset(8). It is safe for
// concurrent use; Close releases its sockets.
type Handle struct {
	nlh *netlink.Handle  // netlink's ipset API: create, destroy, flush, swap, add, del
	raw *nl.SocketHandle // our own messages: list, bitmap:port add/del (see codec_linux.go)
}

var _ Interface = (*Handle)(nil)

// New opens netlink sockets in the namespace. It changes nothing in the kernel.
func New(opts Options) (*Handle, error) {
	ns := netns.None()
	if opts.NetNSPath != "" {
		var err error
		if ns, err = netns.GetFromPath(opts.NetNSPath); err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", opts.NetNSPath, err)
		}
		defer func() { _ = ns.Close() }() // (the sockets keep the namespace)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	nlh, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %q: %w", opts.NetNSPath, err)
	}
	if err := nlh.SetSocketTimeout(timeout); err != nil {
		nlh.Close()
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		nlh.Close()
		return nil, fmt.Errorf("netlink socket in %q: %w", opts.NetNSPath, err)
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	_ = sock.SetSendTimeout(&tv)    // (only stores the value; cannot fail)
	_ = sock.SetReceiveTimeout(&tv) // (idem)
	return &Handle{nlh: nlh, raw: &nl.SocketHandle{Socket: sock}}, nil
}

// Close releases the sockets. The Handle must not be used afterwards.
func (h *Handle) Close() {
	h.nlh.Close()
	h.raw.Close()
}

// ListSets implements Interface. It dumps set headers only, not members.
func (h *Handle) ListSets(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dumps, err := h.list("", true)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", mapErr(err, opList))
	}
	names := make([]string, 0, len(dumps))
	for _, d := range dumps {
		names = append(names, d.name)
	}
	sort.Strings(names)
	return names, nil
}

// EnsureSet implements Interface. It reads the set's header first and compares it
// itself: the kernel's `create -exist` takes a set of the other family as the same
// set (it compares the type's families, which are both "any" for hash types).
func (h *Handle) EnsureSet(ctx context.Context, set Set) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := set.Validate(); err != nil {
		return err
	}
	set = set.withDefaults()
	old, err := h.header(set.Name)
	switch {
	case err == nil:
		if !old.sameAs(set) {
			return fmt.Errorf("ensure set %s: %w: it is %q, want %q", set.Name, ErrTypeMismatch, old, set)
		}
		return nil
	case !errors.Is(err, ErrNotFound):
		return fmt.Errorf("ensure set %s: %w", set.Name, err)
	}
	opts := netlink.IpsetCreateOptions{
		Replace:     true, // no NLM_F_EXCL: `create -exist`, in case another creator was faster
		PortFrom:    set.PortRange.From,
		PortTo:      set.PortRange.To,
		Family:      unix.AF_INET,
		MaxElements: set.MaxElem,
	}
	if set.Family == FamilyIPv6 {
		opts.Family = unix.AF_INET6
	}
	err = safe(func() error { return h.nlh.IpsetCreate(set.Name, string(set.Type), opts) })
	if errno(err) == unix.EEXIST {
		return fmt.Errorf("ensure set %s: %w: created meanwhile as another set", set.Name, ErrTypeMismatch)
	}
	if err != nil {
		return fmt.Errorf("ensure set %q: %w", set, mapErr(err, opCreate))
	}
	return nil
}

// header returns an existing set's type and options (with defaults, as sets compare),
// or ErrNotFound. One small request: the header is dumped without members.
func (h *Handle) header(name string) (Set, error) {
	if err := validateName(name); err != nil {
		return Set{}, err
	}
	dumps, err := h.list(name, true)
	if err != nil {
		return Set{}, mapErr(err, opList)
	}
	if len(dumps) != 1 {
		return Set{}, fmt.Errorf("header of set %s: got %d sets back", name, len(dumps))
	}
	return dumps[0].toSet()
}

// DestroySet implements Interface.
func (h *Handle) DestroySet(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := safe(func() error { return h.nlh.IpsetDestroy(name) })
	if err == nil || errno(err) == unix.ENOENT { // (6.1 and 6.18 say nothing; some kernel may say ENOENT)
		return nil
	}
	return fmt.Errorf("destroy set %s: %w", name, mapErr(err, opDestroy))
}

// ListEntries implements Interface.
func (h *Handle) ListEntries(ctx context.Context, name string) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validateName(name); err != nil {
		return nil, err
	}
	dumps, err := h.list(name, false)
	if err != nil {
		return nil, fmt.Errorf("list set %s: %w", name, mapErr(err, opList))
	}
	if len(dumps) != 1 {
		return nil, fmt.Errorf("list set %s: got %d sets back", name, len(dumps))
	}
	d := dumps[0]
	out := make([]Entry, 0, len(d.entries))
	for _, r := range d.entries {
		e, err := r.toEntry(SetType(d.typeName))
		if err != nil {
			return nil, fmt.Errorf("list set %s: %w", name, err)
		}
		out = append(out, e)
	}
	sortEntries(out)
	return out, nil
}

// AddEntries implements Interface.
func (h *Handle) AddEntries(ctx context.Context, name string, entries []Entry) error {
	return h.addDel(ctx, nl.IPSET_CMD_ADD, name, entries)
}

// DelEntries implements Interface.
func (h *Handle) DelEntries(ctx context.Context, name string, entries []Entry) error {
	return h.addDel(ctx, nl.IPSET_CMD_DEL, name, entries)
}

// addDel reads the set's header once and checks every entry against it, since the
// kernel alone takes some entries of another type's shape with another meaning (an
// address with a prefix into hash:ip is a range of addresses; a bare address into
// hash:net, or as the net of hash:ip,port,net, a host network). Then it sends one
// request per entry.
func (h *Handle) addDel(ctx context.Context, cmd int, name string, entries []Entry) error {
	op := map[int]string{nl.IPSET_CMD_ADD: "add", nl.IPSET_CMD_DEL: "del"}[cmd]
	if err := ctx.Err(); err != nil {
		return err
	}
	set, err := h.header(name)
	if err != nil {
		return fmt.Errorf("%s entries to set %s: %w", op, name, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		e = e.canonical()
		if err := e.validateFor(set); err != nil {
			return fmt.Errorf("%s %s to set %s: %w", op, e.debugString(), name, err)
		}
		if set.Type == BitmapPort {
			err = h.addDelPort(cmd, name, e.Port)
		} else {
			ne := toNetlinkEntry(e)
			err = safe(func() error {
				if cmd == nl.IPSET_CMD_ADD {
					return h.nlh.IpsetAdd(name, ne)
				}
				return h.nlh.IpsetDel(name, ne)
			})
		}
		if err != nil {
			opKind := opEntryHash
			if set.Type == BitmapPort {
				opKind = opEntryBitmap
			}
			return fmt.Errorf("%s %s to set %s: %w", op, e, name, mapErr(err, opKind))
		}
	}
	return nil
}

// toNetlinkEntry encodes a validated, canonical entry by its shape. Replace (no
// NLM_F_EXCL) gives `add -exist` / `del -exist`.
func toNetlinkEntry(e Entry) *netlink.IPSetEntry {
	ne := &netlink.IPSetEntry{Replace: true}
	if e.IP.IsValid() {
		ne.IP = net.IP(e.IP.AsSlice())
	}
	if e.Protocol != "" {
		proto, _ := protocolNumber(e.Protocol) // validated
		port := e.Port
		ne.Protocol, ne.Port = &proto, &port
	}
	if e.IP2.IsValid() {
		ne.IP2 = net.IP(e.IP2.AsSlice())
	}
	if e.Net.IsValid() {
		addr, bits := net.IP(e.Net.Addr().AsSlice()), uint8(e.Net.Bits()) // bits > 0: validated
		if e.IP.IsValid() {
			ne.IP2, ne.CIDR2 = addr, bits // hash:ip,port,net
		} else {
			ne.IP, ne.CIDR = addr, bits // hash:net
		}
	}
	return ne
}

// Swap implements Interface.
func (h *Handle) Swap(ctx context.Context, a, b string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := safe(func() error { return h.nlh.IpsetSwap(a, b) })
	if err != nil {
		return fmt.Errorf("swap sets %s and %s: %w", a, b, mapErr(err, opSwap))
	}
	return nil
}

// FlushSet implements Interface.
func (h *Handle) FlushSet(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := safe(func() error { return h.nlh.IpsetFlush(name) })
	if err != nil {
		return fmt.Errorf("flush set %s: %w", name, mapErr(err, opFlush))
	}
	return nil
}

// toSet converts a dumped header to a Set (with defaults, as sets compare). A set of a
// type kproxy does not use comes back with just its name and type, which compare
// unequal to any Set kproxy makes.
func (d *setDump) toSet() (Set, error) {
	s := Set{Name: d.name, Type: SetType(d.typeName)}
	if d.typeName == "" {
		return s, fmt.Errorf("set %s: no type in the kernel's reply", d.name)
	}
	if !s.Type.valid() {
		return s, nil
	}
	if s.Type.isHash() {
		s.Family = FamilyIPv4
		if d.family == unix.AF_INET6 {
			s.Family = FamilyIPv6
		}
		s.MaxElem = d.maxElem
	} else {
		s.PortRange = PortRange{From: d.portFrom, To: d.portTo}
	}
	return s, nil
}

// safe runs a call into netlink's ipset API and turns a panic into an error: its
// ipsetExecute type-asserts every error to syscall.Errno and panics on any other
// (ErrDumpInterrupted, "Wrong sender portid", extended-ack messages).
func safe(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("netlink ipset call panicked: %v", r)
		}
	}()
	return fn()
}

type opKind int

const (
	opList opKind = iota
	opCreate
	opDestroy
	opFlush
	opSwap
	opEntryHash   // add/del of an entry of a hash type
	opEntryBitmap // add/del of a bitmap:port entry
)

// mapErr maps a kernel error to this package's sentinels, keeping the kernel error in
// the chain ("<sentinel>: <kernel message>").
func mapErr(err error, op opKind) error {
	var sentinel error
	switch en := errno(err); {
	case en == unix.ENOENT:
		sentinel = ErrNotFound
	case en == unix.EPROTONOSUPPORT || en == syscall.Errno(nl.IPSET_ERR_FIND_TYPE):
		sentinel = ErrUnsupported
	case en == syscall.Errno(nl.IPSET_ERR_EXIST_SETNAME2) && op == opSwap:
		sentinel = ErrNotFound // the second set is missing
	case en == syscall.Errno(nl.IPSET_ERR_TYPE_MISMATCH):
		sentinel = ErrTypeMismatch
	case en == errBusy || en == syscall.Errno(nl.IPSET_ERR_REFERENCED):
		sentinel = ErrInUse
	case op == opEntryHash && en == errTypeSpecific:
		sentinel = ErrSetFull
	case (op == opEntryHash || op == opEntryBitmap) && (en == syscall.Errno(nl.IPSET_ERR_PROTOCOL) ||
		en == syscall.Errno(nl.IPSET_ERR_IPADDR_IPV4) || en == syscall.Errno(nl.IPSET_ERR_IPADDR_IPV6) ||
		en == syscall.Errno(nl.IPSET_ERR_INVALID_CIDR) || (en >= errTypeSpecific && en <= errHashElemLast)):
		sentinel = ErrInvalidEntry
	case op == opCreate && en == syscall.Errno(nl.IPSET_ERR_PROTOCOL):
		sentinel = ErrInvalidSet
	}
	if sentinel == nil {
		return err
	}
	if errors.Is(err, sentinel) {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}
