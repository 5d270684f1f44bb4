package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Handle is the Writer of one network namespace, over netlink (no exec of ip(8)).
type Handle struct {
	nl *netlink.Handle
	ns netns.NsHandle
}

var _ Writer = (*Handle)(nil)

// NewHandle opens netlink sockets in the network namespace at nsPath (/run/netns/NAME,
// /proc/PID/ns/net; /proc/self/ns/net for the daemon's own namespace).
func NewHandle(nsPath string) (*Handle, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("netlink handle in %s: %w", nsPath, err)
	}
	return &Handle{nl: h, ns: ns}, nil
}

// Close releases the sockets.
func (h *Handle) Close() error {
	h.nl.Close()
	return h.ns.Close()
}

// ListDevices implements Writer.
func (h *Handle) ListDevices() ([]Device, error) {
	links, err := h.nl.LinkList()
	if err != nil {
		return nil, err
	}
	var out []Device
	for _, l := range links {
		if !strings.HasPrefix(l.Attrs().Name, DevicePrefix) {
			continue
		}
		d, ok := deviceFromLink(l)
		if !ok {
			continue
		}
		addrs, err := h.nl.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", d.Name, err)
		}
		for _, a := range addrs {
			if p, ok := prefixFromIPNet(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
				d.Addrs = append(d.Addrs, p)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

func deviceFromLink(l netlink.Link) (Device, bool) {
	a := l.Attrs()
	d := Device{Name: a.Name, MTU: a.MTU}
	switch v := l.(type) {
	case *netlink.Vxlan:
		d.Kind, d.VNI, d.Port = KindVXLAN, v.VxlanId, v.Port
		d.Local, _ = netip.AddrFromSlice(v.SrcAddr)
		d.MAC, _ = MACFrom(a.HardwareAddr)
		if v.Learning {
			d.Local = netip.Addr{} // learning on: not what kproxy creates; EnsureDevice recreates it
		}
	case *netlink.Iptun:
		d.Kind = KindIPIP
		d.Local, _ = netip.AddrFromSlice(v.Local)
	default:
		return Device{}, false
	}
	d.Local = d.Local.Unmap()
	return d, true
}

// EnsureDevice implements Writer.
func (h *Handle) EnsureDevice(d Device) error {
	l, err := h.nl.LinkByName(d.Name)
	if err != nil && !isNotFound(err) {
		return err
	}
	if l != nil {
		have, ok := deviceFromLink(l)
		if !ok || have.Kind != d.Kind || have.VNI != d.VNI || have.Port != d.Port || have.Local != d.Local {
			if err := h.nl.LinkDel(l); err != nil {
				return fmt.Errorf("delete incompatible %s: %w", d.Name, err)
			}
			l = nil
		}
	}
	if l == nil {
		if l, err = h.addLink(d); err != nil {
			return err
		}
	}
	if l.Attrs().MTU != d.MTU {
		if err := h.nl.LinkSetMTU(l, d.MTU); err != nil {
			return fmt.Errorf("set mtu: %w", err)
		}
	}
	if m, _ := MACFrom(l.Attrs().HardwareAddr); d.Kind == KindVXLAN && m != d.MAC {
		if err := h.nl.LinkSetHardwareAddr(l, d.MAC.HardwareAddr()); err != nil {
			return fmt.Errorf("set mac: %w", err)
		}
	}
	if err := h.ensureAddrs(l, d.Addrs); err != nil {
		return err
	}
	return h.nl.LinkSetUp(l)
}

func (h *Handle) addLink(d Device) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = d.Name, d.MTU
	var l netlink.Link
	switch d.Kind {
	case KindVXLAN:
		attrs.HardwareAddr = d.MAC.HardwareAddr()
		l = &netlink.Vxlan{LinkAttrs: attrs, VxlanId: d.VNI, Port: d.Port, SrcAddr: d.Local.AsSlice(), Learning: false}
	case KindIPIP:
		l = &netlink.Iptun{LinkAttrs: attrs, Local: d.Local.AsSlice(), PMtuDisc: 1}
	default:
		return nil, fmt.Errorf("device kind %q: %w", d.Kind, unix.EOPNOTSUPP)
	}
	if err := h.nl.LinkAdd(l); err != nil {
		return nil, fmt.Errorf("add %s device %s: %w", d.Kind, d.Name, err)
	}
	return h.nl.LinkByName(d.Name)
}

func (h *Handle) ensureAddrs(l netlink.Link, want []netip.Prefix) error {
	have, err := h.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
	}
	var haveP []netip.Prefix
	for _, a := range have {
		p, ok := prefixFromIPNet(a.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		haveP = append(haveP, p)
		if !slices.Contains(want, p) {
			if err := h.nl.AddrDel(l, &a); err != nil && !isNotFound(err) {
				return fmt.Errorf("delete address %s: %w", p, err)
			}
		}
	}
	for _, p := range want {
		if slices.Contains(haveP, p) {
			continue
		}
		if err := h.nl.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
			return fmt.Errorf("add address %s: %w", p, err)
		}
	}
	return nil
}

// DeleteDevice implements Writer.
func (h *Handle) DeleteDevice(name string) error {
	l, err := h.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return h.nl.LinkDel(l)
}

// ListRoutes implements Writer.
func (h *Handle) ListRoutes() ([]Route, error) {
	rs, err := h.nl.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		dst, ok := prefixFromIPNet(r.Dst)
		if !ok {
			continue
		}
		rt := Route{Dst: dst, OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0}
		rt.Gw, _ = netip.AddrFromSlice(r.Gw)
		rt.Gw = rt.Gw.Unmap()
		if r.LinkIndex > 0 {
			if _, ok := names[r.LinkIndex]; !ok {
				if l, err := h.nl.LinkByIndex(r.LinkIndex); err == nil {
					names[r.LinkIndex] = l.Attrs().Name
				}
			}
			rt.Dev = names[r.LinkIndex]
		}
		out = append(out, rt)
	}
	return out, nil
}

func (h *Handle) toNetlinkRoute(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{Dst: ipNet(r.Dst), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	if r.Dev != "" {
		l, err := h.nl.LinkByName(r.Dev)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", r.Dev, err)
		}
		nr.LinkIndex = l.Attrs().Index
	}
	return nr, nil
}

// AddRoute implements Writer. Equivalent to `ip route add ... proto 107`.
func (h *Handle) AddRoute(r Route) error {
	nr, err := h.toNetlinkRoute(r)
	if err != nil {
		return err
	}
	return h.nl.RouteAdd(nr)
}

// ReplaceRoute implements Writer. Equivalent to `ip route replace ... proto 107`.
func (h *Handle) ReplaceRoute(r Route) error {
	nr, err := h.toNetlinkRoute(r)
	if err != nil {
		return err
	}
	return h.nl.RouteReplace(nr)
}

// DeleteRoute implements Writer. Only a route with kproxy's protocol is deleted.
func (h *Handle) DeleteRoute(r Route) error {
	nr := &netlink.Route{Dst: ipNet(r.Dst), Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	if err := h.nl.RouteDel(nr); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func (h *Handle) linkIndex(dev string) (int, error) {
	l, err := h.nl.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("device %s: %w", dev, err)
	}
	return l.Attrs().Index, nil
}

// ListNeighs implements Writer.
func (h *Handle) ListNeighs(dev string) ([]Neigh, error) {
	idx, err := h.linkIndex(dev)
	if err != nil {
		return nil, err
	}
	var out []Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := h.nl.NeighList(idx, fam)
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			ip, ok := netip.AddrFromSlice(n.IP)
			mac, okMAC := MACFrom(n.HardwareAddr)
			if ok && okMAC && n.State&netlink.NUD_PERMANENT != 0 {
				out = append(out, Neigh{Dev: dev, IP: ip.Unmap(), MAC: mac})
			}
		}
	}
	return out, nil
}

// SetNeigh implements Writer. Equivalent to `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
func (h *Handle) SetNeigh(n Neigh) error {
	idx, err := h.linkIndex(n.Dev)
	if err != nil {
		return err
	}
	return h.nl.NeighSet(&netlink.Neigh{LinkIndex: idx, State: netlink.NUD_PERMANENT, Type: unix.RTN_UNICAST,
		IP: n.IP.AsSlice(), HardwareAddr: n.MAC.HardwareAddr()})
}

// DeleteNeigh implements Writer.
func (h *Handle) DeleteNeigh(n Neigh) error {
	idx, err := h.linkIndex(n.Dev)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	err = h.nl.NeighDel(&netlink.Neigh{LinkIndex: idx, IP: n.IP.AsSlice()})
	if err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// ListFDBs implements Writer.
func (h *Handle) ListFDBs(dev string) ([]FDB, error) {
	idx, err := h.linkIndex(dev)
	if err != nil {
		return nil, err
	}
	ns, err := h.nl.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	var out []FDB
	for _, n := range ns {
		dst, ok := netip.AddrFromSlice(n.IP)
		mac, okMAC := MACFrom(n.HardwareAddr)
		if ok && okMAC && !mac.IsZero() && n.State&netlink.NUD_PERMANENT != 0 {
			out = append(out, FDB{Dev: dev, MAC: mac, Dst: dst.Unmap()})
		}
	}
	return out, nil
}

func (h *Handle) fdbNeigh(f FDB) (*netlink.Neigh, error) {
	idx, err := h.linkIndex(f.Dev)
	if err != nil {
		return nil, err
	}
	return &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, IP: f.Dst.AsSlice(), HardwareAddr: f.MAC.HardwareAddr()}, nil
}

// SetFDB implements Writer. Equivalent to `bridge fdb replace MAC dev DEV dst DST self permanent`.
func (h *Handle) SetFDB(f FDB) error {
	n, err := h.fdbNeigh(f)
	if err != nil {
		return err
	}
	return h.nl.NeighSet(n)
}

// DeleteFDB implements Writer.
func (h *Handle) DeleteFDB(f FDB) error {
	n, err := h.fdbNeigh(f)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := h.nl.NeighDel(n); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV)
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	a = a.Unmap()
	return netip.PrefixFrom(a, ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// FindUnderlay implements UnderlayFinder: the link named ifname (its first global address
// of ip's family, ip's own when it holds it), or the link holding ip when ifname is empty.
func (h *Handle) FindUnderlay(ifname string, ip netip.Addr) (Underlay, error) {
	var links []netlink.Link
	if ifname != "" {
		l, err := h.nl.LinkByName(ifname)
		if err != nil {
			return Underlay{}, fmt.Errorf("interface %s: %w", ifname, err)
		}
		links = []netlink.Link{l}
	} else {
		all, err := h.nl.LinkList()
		if err != nil {
			return Underlay{}, err
		}
		links = all
	}
	for _, l := range links {
		addrs, err := h.nl.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return Underlay{}, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
		}
		var first netip.Prefix
		for _, a := range addrs {
			p, ok := prefixFromIPNet(a.IPNet)
			if !ok || !p.Addr().IsGlobalUnicast() {
				continue
			}
			u := Underlay{Interface: l.Attrs().Name, Prefix: p, MTU: l.Attrs().MTU}
			if p.Addr() == ip {
				return u, nil
			}
			if !first.IsValid() && (!ip.IsValid() || p.Addr().Is4() == ip.Is4()) {
				first = p
			}
		}
		if ifname != "" && first.IsValid() {
			return Underlay{Interface: ifname, Prefix: first, MTU: l.Attrs().MTU}, nil
		}
	}
	if ifname != "" {
		return Underlay{}, fmt.Errorf("interface %s has no global address of the node IP's family", ifname)
	}
	return Underlay{}, fmt.Errorf("no interface holds the node IP %s", ip)
}
