package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
)

// Options configures the netlink conntrack writer.
type Options struct {
	// NetNSPath is the network namespace to work in ("/run/netns/<name>",
	// "/proc/<pid>/ns/net"). Empty means the namespace of the calling thread at New.
	NetNSPath string
}

// Netlink reads and deletes conntrack entries over a netlink socket bound to one network
// namespace. Its methods must not be called concurrently.
type Netlink struct {
	handle *netlink.Handle
}

var _ Interface = (*Netlink)(nil)

// dumpRetries is how many times a dump interrupted by concurrent table changes is retried.
const dumpRetries = 3

// New opens a netfilter netlink socket in the namespace opts names. Close releases it.
func New(opts Options) (*Netlink, error) {
	ns := netns.None()
	if opts.NetNSPath != "" {
		var err error
		ns, err = netns.GetFromPath(opts.NetNSPath)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", opts.NetNSPath, err)
		}
		defer func() { _ = ns.Close() }()
	}
	var h *netlink.Handle
	var err error
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return nil, fmt.Errorf("open netfilter netlink socket in namespace %q: %w", opts.NetNSPath, err)
	}
	return &Netlink{handle: h}, nil
}

// Close releases the netlink socket.
func (n *Netlink) Close() { n.handle.Close() }

func inetFamily(family v1.IPFamily) netlink.InetFamily {
	if family == v1.IPv6Protocol {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// List implements Interface. Equivalent to: `conntrack -L -f ipv4 -p udp`. The kernel dumps
// the whole family; other protocols are dropped here.
func (n *Netlink) List(ctx context.Context, family v1.IPFamily, protocols ...v1.Protocol) ([]Flow, error) {
	if err := checkFamilyProto(family, protocols); err != nil {
		return nil, err
	}
	var raw []*netlink.ConntrackFlow
	var err error
	for range dumpRetries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		raw, err = n.handle.ConntrackTableList(netlink.ConntrackTable, inetFamily(family))
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list %s conntrack entries: %w", family, err)
	}
	var out []Flow
	for _, r := range raw {
		proto, ok := protocolOf(r.Forward.Protocol)
		if !ok || !slices.Contains(protocols, proto) {
			continue
		}
		if fl, ok := fromNetlink(r, proto); ok {
			out = append(out, fl)
		}
	}
	return out, nil
}

// Delete implements Interface. It dumps the table once per family and deletes the entries
// equal to one of flows in both directions (`conntrack -D` of each).
func (n *Netlink) Delete(ctx context.Context, flows []Flow) (int, error) {
	byFamily := map[v1.IPFamily]exactFilter{}
	for _, fl := range flows {
		if err := validate(fl); err != nil {
			return 0, err
		}
		fam := fl.Family()
		if byFamily[fam] == nil {
			byFamily[fam] = exactFilter{}
		}
		byFamily[fam][fl] = struct{}{}
	}
	total := 0
	var errs []error
	for _, fam := range []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol} {
		filter := byFamily[fam]
		if len(filter) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
		deleted, err := n.handle.ConntrackDeleteFilters(netlink.ConntrackTable, inetFamily(fam), filter)
		total += int(deleted)
		if err != nil {
			errs = append(errs, fmt.Errorf("delete %d %s conntrack entries: %w", len(filter), fam, err))
		}
	}
	return total, errors.Join(errs...)
}

// exactFilter matches the flows it holds, by protocol, both tuples and zone.
type exactFilter map[Flow]struct{}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f exactFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	proto, ok := protocolOf(flow.Forward.Protocol)
	if !ok {
		return false
	}
	fl, ok := fromNetlink(flow, proto)
	if !ok {
		return false
	}
	_, ok = f[fl]
	return ok
}

// fromNetlink converts a kernel entry; ok is false for one without valid addresses.
func fromNetlink(r *netlink.ConntrackFlow, proto v1.Protocol) (Flow, bool) {
	var fl Flow
	var ok [4]bool
	fl.Protocol, fl.Zone = proto, r.Zone
	fl.Original.Src, ok[0] = addrPort(r.Forward.SrcIP, r.Forward.SrcPort)
	fl.Original.Dst, ok[1] = addrPort(r.Forward.DstIP, r.Forward.DstPort)
	fl.Reply.Src, ok[2] = addrPort(r.Reverse.SrcIP, r.Reverse.SrcPort)
	fl.Reply.Dst, ok[3] = addrPort(r.Reverse.DstIP, r.Reverse.DstPort)
	return fl, ok == [4]bool{true, true, true, true}
}

func addrPort(ip net.IP, port uint16) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), port), true
}
