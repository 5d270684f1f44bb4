package ipvs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/internal/netnsutil"
)

// Kernel is the real IPVS table and links of one network namespace: IPVS over
// github.com/moby/ipvs (generic netlink), links and addresses over vishvananda/netlink
// (NETLINK_ROUTE only: with no family given, netlink also opens NETLINK_XFRM, which fails
// where xfrm_user is not loaded). Both sockets are bound to the namespace at NewKernel and
// stay there whatever thread later uses them. Safe for concurrent use.
type Kernel struct {
	mu   sync.Mutex // moby/ipvs's Handle shares one socket: one request at a time
	ipvs *libipvs.Handle
	nl   *netlink.Handle
	// nsPath is the namespace's file ("" for the process's own), for ListAllRealServers.
	nsPath string

	// linkIndex caches the interface index of a link by name, so that binding N addresses
	// costs N requests and not 2N (a look-up each): set by EnsureDummy and every look-up,
	// dropped when the kernel says the index is gone (the link was deleted) and by
	// DeleteDummy.
	linkMu    sync.Mutex
	linkIndex map[string]int
}

var (
	_ IPVS  = (*Kernel)(nil)
	_ Links = (*Kernel)(nil)
)

// NewKernel opens the IPVS and netlink sockets in the namespace at nsPath
// ("/run/netns/NAME"; "" is the process's own). It fails when the kernel has no IPVS.
func NewKernel(nsPath string) (*Kernel, error) {
	h, err := libipvs.New(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open IPVS netlink socket in %q: %w", nsPath, err)
	}
	ns := netns.None()
	if nsPath != "" {
		if ns, err = netns.GetFromPath(nsPath); err != nil {
			h.Close()
			return nil, fmt.Errorf("open network namespace %q: %w", nsPath, err)
		}
		defer func() { _ = ns.Close() }()
	}
	var nlh *netlink.Handle
	if nsPath == "" {
		nlh, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		nlh, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	}
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open rtnetlink socket in %q: %w", nsPath, err)
	}
	return &Kernel{ipvs: h, nl: nlh, nsPath: nsPath, linkIndex: map[string]int{}}, nil
}

// Close closes the sockets.
func (k *Kernel) Close() {
	k.ipvs.Close()
	k.nl.Close()
}

// mapErr turns the kernel's errno into the package's sentinels (keeping the errno).
func mapErr(err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return err
	}
	switch errno {
	case unix.EEXIST:
		return fmt.Errorf("%w (%w)", ErrExists, err)
	case unix.ESRCH, unix.ENOENT:
		return fmt.Errorf("%w (%w)", ErrNotFound, err)
	case unix.EINVAL:
		return fmt.Errorf("%w (%w)", ErrInvalid, err)
	}
	return err
}

var protocolNumbers = map[v1.Protocol]uint16{v1.ProtocolTCP: unix.IPPROTO_TCP, v1.ProtocolUDP: unix.IPPROTO_UDP, v1.ProtocolSCTP: unix.IPPROTO_SCTP}

func toService(vs VirtualServer) *libipvs.Service {
	s := &libipvs.Service{
		Address: net.IP(vs.IP.AsSlice()), Protocol: protocolNumbers[vs.Protocol], Port: vs.Port,
		SchedName: vs.Scheduler, Flags: uint32(vs.Flags), Timeout: vs.Timeout,
		AddressFamily: unix.AF_INET, Netmask: 0xffffffff,
	}
	if vs.IP.Is6() {
		s.AddressFamily, s.Netmask = unix.AF_INET6, 128
	}
	return s
}

func fromService(s *libipvs.Service) (VirtualServer, bool) {
	ip, ok := netip.AddrFromSlice(s.Address)
	if !ok || s.FWMark != 0 {
		return VirtualServer{}, false // a firewall-mark service: not kproxy's kind
	}
	var proto v1.Protocol
	for p, n := range protocolNumbers {
		if n == s.Protocol {
			proto = p
		}
	}
	if s.AddressFamily == unix.AF_INET {
		ip = ip.Unmap()
	}
	return VirtualServer{
		VSKey:     VSKey{IP: ip, Port: s.Port, Protocol: proto},
		Scheduler: s.SchedName, Flags: Flags(s.Flags) &^ FlagHashed, Timeout: s.Timeout,
	}, true
}

func (k *Kernel) call(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return mapErr(fn())
}

// ListVirtualServers implements IPVS. Firewall-mark services are left out.
func (k *Kernel) ListVirtualServers(ctx context.Context) ([]VirtualServer, error) {
	var svcs []*libipvs.Service
	if err := k.call(ctx, func() (err error) { svcs, err = k.ipvs.GetServices(); return err }); err != nil {
		return nil, fmt.Errorf("list virtual servers: %w", err)
	}
	out := make([]VirtualServer, 0, len(svcs))
	for _, s := range svcs {
		if vs, ok := fromService(s); ok {
			out = append(out, vs)
		}
	}
	slices.SortFunc(out, func(a, b VirtualServer) int { return compareVSKey(a.VSKey, b.VSKey) })
	return out, nil
}

// AddVirtualServer implements IPVS.
func (k *Kernel) AddVirtualServer(ctx context.Context, vs VirtualServer) error {
	if err := k.call(ctx, func() error { return k.ipvs.NewService(toService(vs)) }); err != nil {
		return fmt.Errorf("add virtual server %s: %w", vs, err)
	}
	return nil
}

// UpdateVirtualServer implements IPVS.
func (k *Kernel) UpdateVirtualServer(ctx context.Context, vs VirtualServer) error {
	if err := k.call(ctx, func() error { return k.ipvs.UpdateService(toService(vs)) }); err != nil {
		return fmt.Errorf("update virtual server %s: %w", vs, err)
	}
	return nil
}

// DeleteVirtualServer implements IPVS.
func (k *Kernel) DeleteVirtualServer(ctx context.Context, key VSKey) error {
	if err := k.call(ctx, func() error { return k.ipvs.DelService(toService(VirtualServer{VSKey: key})) }); err != nil {
		return fmt.Errorf("delete virtual server %s: %w", key, err)
	}
	return nil
}

// ListRealServers implements IPVS.
func (k *Kernel) ListRealServers(ctx context.Context, key VSKey) ([]RealServer, error) {
	var dsts []*libipvs.Destination
	err := k.call(ctx, func() (err error) {
		dsts, err = k.ipvs.GetDestinations(toService(VirtualServer{VSKey: key}))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list real servers of %s: %w", key, err)
	}
	out := make([]RealServer, 0, len(dsts))
	for _, d := range dsts {
		ip, ok := netip.AddrFromSlice(d.Address)
		if !ok {
			continue
		}
		if key.IP.Is4() {
			ip = ip.Unmap()
		}
		out = append(out, RealServer{Addr: netip.AddrPortFrom(ip, d.Port), Weight: d.Weight,
			ActiveConn: d.ActiveConnections, InactiveConn: d.InactiveConnections})
	}
	sortRealServers(out)
	return out, nil
}

// ListAllRealServers implements IPVS: one read of the namespace's /proc/net/ip_vs, opened
// from a thread in the namespace (the file shows the IPVS table of the namespace it was
// opened in). At 10,000 virtual servers in the TCG test VM the read took 0.91-0.98 s where
// 10,000 ListRealServers dumps took 7.6-12.6 s (bench/results/2026-12-07-ipvs-proc-table.md).
func (k *Kernel) ListAllRealServers(ctx context.Context) (map[VSKey][]RealServer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var f *os.File
	open := func() (err error) { f, err = os.Open("/proc/thread-self/net/ip_vs"); return err }
	var err error
	if k.nsPath == "" {
		err = open()
	} else {
		err = netnsutil.Do(k.nsPath, open)
	}
	if err != nil {
		return nil, fmt.Errorf("list all real servers: %w", err)
	}
	defer func() { _ = f.Close() }()
	out, err := parseIPVSTable(f)
	if err != nil {
		return nil, fmt.Errorf("list all real servers: read %s: %w", f.Name(), err)
	}
	return out, nil
}

func toDestination(rs RealServer) *libipvs.Destination {
	d := &libipvs.Destination{Address: net.IP(rs.Addr.Addr().AsSlice()), Port: rs.Addr.Port(), Weight: rs.Weight,
		ConnectionFlags: libipvs.ConnectionFlagMasq, AddressFamily: unix.AF_INET}
	if rs.Addr.Addr().Is6() {
		d.AddressFamily = unix.AF_INET6
	}
	return d
}

// AddRealServer implements IPVS.
func (k *Kernel) AddRealServer(ctx context.Context, key VSKey, rs RealServer) error {
	svc := toService(VirtualServer{VSKey: key})
	if err := k.call(ctx, func() error { return k.ipvs.NewDestination(svc, toDestination(rs)) }); err != nil {
		return fmt.Errorf("add real server %s to %s: %w", rs, key, err)
	}
	return nil
}

// UpdateRealServer implements IPVS.
func (k *Kernel) UpdateRealServer(ctx context.Context, key VSKey, rs RealServer) error {
	svc := toService(VirtualServer{VSKey: key})
	if err := k.call(ctx, func() error { return k.ipvs.UpdateDestination(svc, toDestination(rs)) }); err != nil {
		return fmt.Errorf("update real server %s of %s: %w", rs, key, err)
	}
	return nil
}

// DeleteRealServer implements IPVS.
func (k *Kernel) DeleteRealServer(ctx context.Context, key VSKey, addr netip.AddrPort) error {
	svc := toService(VirtualServer{VSKey: key})
	err := k.call(ctx, func() error { return k.ipvs.DelDestination(svc, toDestination(RealServer{Addr: addr})) })
	if err != nil {
		return fmt.Errorf("delete real server %s of %s: %w", addr, key, err)
	}
	return nil
}

// SetTimeouts implements IPVS.
func (k *Kernel) SetTimeouts(ctx context.Context, tcp, tcpFin, udp time.Duration) error {
	cfg := &libipvs.Config{TimeoutTCP: tcp, TimeoutTCPFin: tcpFin, TimeoutUDP: udp}
	if err := k.call(ctx, func() error { return k.ipvs.SetConfig(cfg) }); err != nil {
		return fmt.Errorf("set IPVS timeouts: %w", err)
	}
	return nil
}

// EnsureDummy implements Links.
func (k *Kernel) EnsureDummy(ctx context.Context, name string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if l, err := k.nl.LinkByName(name); err == nil {
		k.cacheLink(name, l.Attrs().Index)
		return true, nil
	} else if !isLinkNotFound(err) {
		return false, fmt.Errorf("look up link %s: %w", name, err)
	}
	if err := k.nl.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		return false, fmt.Errorf("add dummy link %s: %w", name, mapErr(err))
	}
	return false, nil
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func (k *Kernel) link(name string) (netlink.Link, error) {
	l, err := k.nl.LinkByName(name)
	if isLinkNotFound(err) {
		k.cacheLink(name, 0)
		return nil, fmt.Errorf("link %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("look up link %s: %w", name, err)
	}
	k.cacheLink(name, l.Attrs().Index)
	return l, nil
}

// cacheLink records a link's index (0: forget it).
func (k *Kernel) cacheLink(name string, index int) {
	k.linkMu.Lock()
	defer k.linkMu.Unlock()
	if index == 0 {
		delete(k.linkIndex, name)
		return
	}
	k.linkIndex[name] = index
}

// withLink runs fn on the link called name: on its cached index when there is one, looked up
// otherwise, and looked up again when the cached index is gone (ENODEV: the link was deleted,
// perhaps made again with a new index).
func (k *Kernel) withLink(name string, fn func(netlink.Link) error) error {
	k.linkMu.Lock()
	idx, ok := k.linkIndex[name]
	k.linkMu.Unlock()
	if ok {
		err := fn(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: idx}})
		if !errors.Is(err, unix.ENODEV) {
			return err
		}
		k.cacheLink(name, 0)
	}
	l, err := k.link(name)
	if err != nil {
		return err
	}
	return fn(l)
}

// ListAddrs implements Links.
func (k *Kernel) ListAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := k.link(name)
	if err != nil {
		return nil, err
	}
	list, err := k.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	var out []netip.Addr
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			if a.IP.To4() != nil {
				ip = ip.Unmap()
			}
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

func hostAddr(ip netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}}
}

// AddAddr implements Links.
func (k *Kernel) AddAddr(ctx context.Context, name string, ip netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := k.withLink(name, func(l netlink.Link) error { return k.nl.AddrAdd(l, hostAddr(ip)) })
	if err != nil && !errors.Is(err, unix.EEXIST) {
		if errors.Is(err, ErrNotFound) {
			return err
		}
		return fmt.Errorf("bind %s to %s: %w", ip, name, mapErr(err))
	}
	return nil
}

// DelAddr implements Links.
func (k *Kernel) DelAddr(ctx context.Context, name string, ip netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := k.withLink(name, func(l netlink.Link) error { return k.nl.AddrDel(l, hostAddr(ip)) })
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENXIO) {
		if errors.Is(err, ErrNotFound) {
			return err
		}
		return fmt.Errorf("unbind %s from %s: %w", ip, name, mapErr(err))
	}
	return nil
}

// DeleteDummy implements Links.
func (k *Kernel) DeleteDummy(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l, err := k.link(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.Type() != "dummy" {
		return fmt.Errorf("link %s is a %s, not a dummy: %w", name, l.Type(), ErrInvalid)
	}
	k.cacheLink(name, 0)
	if err := k.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, mapErr(err))
	}
	return nil
}
