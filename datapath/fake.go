package datapath

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Fake is an in-memory Writer for one namespace. It keeps state and rejects what the kernel
// rejects, with the kernel's errnos: a route, neighbour or FDB entry on a missing device
// (ENODEV), an FDB entry on a non-VXLAN device (EOPNOTSUPP), a second route to one
// destination (EEXIST), onlink without a device or a gateway of another family (EINVAL), a
// gateway outside every connected subnet without onlink (ENETUNREACH). Deleting a device
// deletes its routes, neighbours and FDB entries, as the kernel does.
type Fake struct {
	mu sync.Mutex
	// Connected are the subnets directly reachable in this namespace (the underlay), against
	// which routes without onlink are checked.
	Connected []netip.Prefix
	devices   map[string]Device
	routes    map[netip.Prefix]fakeRoute
	neighs    map[Neigh]bool
	fdbs      map[FDB]bool
}

type fakeRoute struct {
	Route
	proto int
}

var _ Writer = (*Fake)(nil)

// NewFake returns an empty namespace whose underlay is connected.
func NewFake(connected ...netip.Prefix) *Fake {
	return &Fake{Connected: connected, devices: map[string]Device{}, routes: map[netip.Prefix]fakeRoute{},
		neighs: map[Neigh]bool{}, fdbs: map[FDB]bool{}}
}

// AddForeignRoute adds a route that is not kproxy's (another protocol), as an admin would.
func (f *Fake) AddForeignRoute(r Route) error { return f.addRoute(r, unix.RTPROT_STATIC) }

// ListDevices implements Writer.
func (f *Fake) ListDevices() ([]Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Device
	for _, d := range f.devices {
		if strings.HasPrefix(d.Name, DevicePrefix) {
			d.Addrs = slices.Clone(d.Addrs)
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// EnsureDevice implements Writer.
func (f *Fake) EnsureDevice(d Device) error {
	if len(d.Name) == 0 || len(d.Name) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("device name %q: %w", d.Name, unix.EINVAL)
	}
	if d.Kind != KindVXLAN && d.Kind != KindIPIP {
		return fmt.Errorf("device kind %q: %w", d.Kind, unix.EOPNOTSUPP)
	}
	if d.MTU < 68 {
		return fmt.Errorf("device %s mtu %d: %w", d.Name, d.MTU, unix.EINVAL)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.devices[d.Name]
	if ok && (old.Kind != d.Kind || old.VNI != d.VNI || old.Port != d.Port || old.Local != d.Local) {
		f.deleteDeviceLocked(d.Name)
	}
	d.Addrs = slices.Clone(d.Addrs)
	f.devices[d.Name] = d
	return nil
}

// DeleteDevice implements Writer.
func (f *Fake) DeleteDevice(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteDeviceLocked(name)
	return nil
}

func (f *Fake) deleteDeviceLocked(name string) {
	delete(f.devices, name)
	for k, r := range f.routes {
		if r.Dev == name {
			delete(f.routes, k)
		}
	}
	for n := range f.neighs {
		if n.Dev == name {
			delete(f.neighs, n)
		}
	}
	for e := range f.fdbs {
		if e.Dev == name {
			delete(f.fdbs, e)
		}
	}
}

// ListRoutes implements Writer.
func (f *Fake) ListRoutes() ([]Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Route
	for _, r := range f.routes {
		if r.proto == RouteProtocol {
			out = append(out, r.Route)
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Dst, b.Dst) })
	return out, nil
}

// AddRoute implements Writer.
func (f *Fake) AddRoute(r Route) error { return f.addRoute(r, RouteProtocol) }

func (f *Fake) addRoute(r Route, proto int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkRouteLocked(r); err != nil {
		return err
	}
	if _, ok := f.routes[r.Dst]; ok {
		return fmt.Errorf("route %s: %w", r, unix.EEXIST)
	}
	f.routes[r.Dst] = fakeRoute{Route: r, proto: proto}
	return nil
}

// ReplaceRoute implements Writer.
func (f *Fake) ReplaceRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkRouteLocked(r); err != nil {
		return err
	}
	f.routes[r.Dst] = fakeRoute{Route: r, proto: RouteProtocol}
	return nil
}

func (f *Fake) checkRouteLocked(r Route) error {
	switch {
	case !r.Dst.IsValid() || r.Dst != r.Dst.Masked():
		return fmt.Errorf("route %s: invalid destination: %w", r, unix.EINVAL)
	case r.Gw.IsValid() && r.Gw.Is4() != r.Dst.Addr().Is4():
		return fmt.Errorf("route %s: gateway of another family: %w", r, unix.EINVAL)
	case r.OnLink && r.Dev == "":
		return fmt.Errorf("route %s: onlink needs a device: %w", r, unix.EINVAL)
	}
	if r.Dev != "" {
		if _, ok := f.devices[r.Dev]; !ok {
			return fmt.Errorf("route %s: %w", r, unix.ENODEV)
		}
	}
	if !r.OnLink && r.Gw.IsValid() && !slices.ContainsFunc(f.Connected, func(p netip.Prefix) bool { return p.Contains(r.Gw) }) {
		return fmt.Errorf("route %s: gateway not directly reachable: %w", r, unix.ENETUNREACH)
	}
	return nil
}

// DeleteRoute implements Writer.
func (f *Fake) DeleteRoute(r Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if got, ok := f.routes[r.Dst]; ok && got.proto == RouteProtocol {
		delete(f.routes, r.Dst)
	}
	return nil
}

// ListNeighs implements Writer.
func (f *Fake) ListNeighs(dev string) ([]Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[dev]; !ok {
		return nil, fmt.Errorf("list neighbours of %s: %w", dev, unix.ENODEV)
	}
	var out []Neigh
	for n := range f.neighs {
		if n.Dev == dev {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b Neigh) int { return a.IP.Compare(b.IP) })
	return out, nil
}

// SetNeigh implements Writer.
func (f *Fake) SetNeigh(n Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[n.Dev]; !ok {
		return fmt.Errorf("neighbour %s: %w", n, unix.ENODEV)
	}
	for o := range f.neighs {
		if o.Dev == n.Dev && o.IP == n.IP {
			delete(f.neighs, o)
		}
	}
	f.neighs[n] = true
	return nil
}

// DeleteNeigh implements Writer.
func (f *Fake) DeleteNeigh(n Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for o := range f.neighs {
		if o.Dev == n.Dev && o.IP == n.IP {
			delete(f.neighs, o)
		}
	}
	return nil
}

// ListFDBs implements Writer.
func (f *Fake) ListFDBs(dev string) ([]FDB, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[dev]; !ok {
		return nil, fmt.Errorf("list fdb of %s: %w", dev, unix.ENODEV)
	}
	var out []FDB
	for e := range f.fdbs {
		if e.Dev == dev {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b FDB) int { return strings.Compare(a.MAC.String(), b.MAC.String()) })
	return out, nil
}

// SetFDB implements Writer.
func (f *Fake) SetFDB(e FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[e.Dev]
	switch {
	case !ok:
		return fmt.Errorf("fdb %s: %w", e, unix.ENODEV)
	case d.Kind != KindVXLAN:
		return fmt.Errorf("fdb %s: not a vxlan device: %w", e, unix.EOPNOTSUPP)
	}
	f.deleteFDBLocked(e)
	f.fdbs[e] = true
	return nil
}

// DeleteFDB implements Writer.
func (f *Fake) DeleteFDB(e FDB) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteFDBLocked(e)
	return nil
}

func (f *Fake) deleteFDBLocked(e FDB) {
	for o := range f.fdbs {
		if o.Dev == e.Dev && o.MAC == e.MAC {
			delete(f.fdbs, o)
		}
	}
}

// Dump prints the namespace canonically, one object a line, sorted: for tests to compare.
func (f *Fake) Dump() string {
	devs, _ := f.ListDevices()
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, d := range devs {
		lines = append(lines, fmt.Sprintf("device %s %s vni=%d port=%d local=%s mtu=%d mac=%s addrs=%v",
			d.Name, d.Kind, d.VNI, d.Port, d.Local, d.MTU, d.MAC, sortedPrefixes(d.Addrs)))
	}
	for _, r := range f.routes {
		lines = append(lines, fmt.Sprintf("route %s proto %d", r.Route, r.proto))
	}
	for n := range f.neighs {
		lines = append(lines, "neigh "+n.String())
	}
	for e := range f.fdbs {
		lines = append(lines, "fdb "+e.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
