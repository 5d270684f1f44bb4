package ipvs

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
)

// FakeIPVS is an in-memory IPVS table that validates like the kernel: unknown schedulers,
// protocols, port 0 and family mismatches are ErrInvalid; duplicates ErrExists; missing
// objects ErrNotFound. Tests set connection counters with SetConns and count writes with
// Writes. Safe for concurrent use.
type FakeIPVS struct {
	mu     sync.Mutex
	vs     map[VSKey]*fakeVS
	writes int
	// Timeouts holds the last SetTimeouts call.
	Timeouts [3]time.Duration
}

type fakeVS struct {
	vs  VirtualServer
	rss map[netip.AddrPort]RealServer
}

var _ IPVS = (*FakeIPVS)(nil)

// NewFakeIPVS returns an empty table.
func NewFakeIPVS() *FakeIPVS { return &FakeIPVS{vs: map[VSKey]*fakeVS{}} }

// Writes counts the successful changes (adds, updates, deletes) so far.
func (f *FakeIPVS) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// SetConns sets the active and inactive connection counters of a real server.
func (f *FakeIPVS) SetConns(key VSKey, addr netip.AddrPort, active, inactive int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vs[key]
	if !ok {
		return fmt.Errorf("virtual server %s: %w", key, ErrNotFound)
	}
	rs, ok := v.rss[addr]
	if !ok {
		return fmt.Errorf("real server %s of %s: %w", addr, key, ErrNotFound)
	}
	rs.ActiveConn, rs.InactiveConn = active, inactive
	v.rss[addr] = rs
	return nil
}

func validKey(k VSKey) error {
	switch {
	case !k.IP.IsValid() || k.IP.Zone() != "":
		return fmt.Errorf("%w: address %v", ErrInvalid, k.IP)
	case k.Port == 0:
		return fmt.Errorf("%w: port 0", ErrInvalid)
	case k.Protocol != v1.ProtocolTCP && k.Protocol != v1.ProtocolUDP && k.Protocol != v1.ProtocolSCTP:
		return fmt.Errorf("%w: protocol %q", ErrInvalid, k.Protocol)
	}
	return nil
}

func validVS(vs VirtualServer) error {
	if err := validKey(vs.VSKey); err != nil {
		return err
	}
	if !slices.Contains(Schedulers, vs.Scheduler) {
		return fmt.Errorf("%w: scheduler %q", ErrInvalid, vs.Scheduler)
	}
	return nil
}

// ListVirtualServers implements IPVS.
func (f *FakeIPVS) ListVirtualServers(ctx context.Context) ([]VirtualServer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]VirtualServer, 0, len(f.vs))
	for _, v := range f.vs {
		out = append(out, v.vs)
	}
	slices.SortFunc(out, func(a, b VirtualServer) int { return compareVSKey(a.VSKey, b.VSKey) })
	return out, nil
}

// AddVirtualServer implements IPVS.
func (f *FakeIPVS) AddVirtualServer(ctx context.Context, vs VirtualServer) error {
	return f.do(ctx, func() error {
		if err := validVS(vs); err != nil {
			return fmt.Errorf("add virtual server %s: %w", vs, err)
		}
		if _, ok := f.vs[vs.VSKey]; ok {
			return fmt.Errorf("add virtual server %s: %w", vs, ErrExists)
		}
		f.vs[vs.VSKey] = &fakeVS{vs: vs, rss: map[netip.AddrPort]RealServer{}}
		return nil
	})
}

// UpdateVirtualServer implements IPVS.
func (f *FakeIPVS) UpdateVirtualServer(ctx context.Context, vs VirtualServer) error {
	return f.do(ctx, func() error {
		if err := validVS(vs); err != nil {
			return fmt.Errorf("update virtual server %s: %w", vs, err)
		}
		v, ok := f.vs[vs.VSKey]
		if !ok {
			return fmt.Errorf("update virtual server %s: %w", vs, ErrNotFound)
		}
		v.vs = vs
		return nil
	})
}

// DeleteVirtualServer implements IPVS.
func (f *FakeIPVS) DeleteVirtualServer(ctx context.Context, key VSKey) error {
	return f.do(ctx, func() error {
		if _, ok := f.vs[key]; !ok {
			return fmt.Errorf("delete virtual server %s: %w", key, ErrNotFound)
		}
		delete(f.vs, key)
		return nil
	})
}

// ListRealServers implements IPVS.
func (f *FakeIPVS) ListRealServers(ctx context.Context, key VSKey) ([]RealServer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vs[key]
	if !ok {
		return nil, fmt.Errorf("list real servers of %s: %w", key, ErrNotFound)
	}
	out := slices.Collect(maps.Values(v.rss))
	sortRealServers(out)
	return out, nil
}

// ListAllRealServers implements IPVS.
func (f *FakeIPVS) ListAllRealServers(ctx context.Context) (map[VSKey][]RealServer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[VSKey][]RealServer, len(f.vs))
	for k, v := range f.vs {
		rss := slices.Collect(maps.Values(v.rss))
		sortRealServers(rss)
		out[k] = rss
	}
	return out, nil
}

// AddRealServer implements IPVS.
func (f *FakeIPVS) AddRealServer(ctx context.Context, key VSKey, rs RealServer) error {
	return f.rsOp(ctx, "add", key, rs.Addr, func(v *fakeVS, exists bool) error {
		if exists {
			return ErrExists
		}
		v.rss[rs.Addr] = RealServer{Addr: rs.Addr, Weight: rs.Weight}
		return nil
	})
}

// UpdateRealServer implements IPVS.
func (f *FakeIPVS) UpdateRealServer(ctx context.Context, key VSKey, rs RealServer) error {
	return f.rsOp(ctx, "update", key, rs.Addr, func(v *fakeVS, exists bool) error {
		if !exists {
			return ErrNotFound
		}
		cur := v.rss[rs.Addr]
		cur.Weight = rs.Weight
		v.rss[rs.Addr] = cur
		return nil
	})
}

// DeleteRealServer implements IPVS.
func (f *FakeIPVS) DeleteRealServer(ctx context.Context, key VSKey, addr netip.AddrPort) error {
	return f.rsOp(ctx, "delete", key, addr, func(v *fakeVS, exists bool) error {
		if !exists {
			return ErrNotFound
		}
		delete(v.rss, addr)
		return nil
	})
}

func (f *FakeIPVS) rsOp(ctx context.Context, op string, key VSKey, addr netip.AddrPort, fn func(*fakeVS, bool) error) error {
	return f.do(ctx, func() error {
		v, ok := f.vs[key]
		if !ok {
			return fmt.Errorf("%s real server %s of %s: virtual server %w", op, addr, key, ErrNotFound)
		}
		if !addr.IsValid() || addr.Addr().Is4() != key.IP.Is4() {
			return fmt.Errorf("%s real server %s of %s: %w", op, addr, key, ErrInvalid)
		}
		_, exists := v.rss[addr]
		if err := fn(v, exists); err != nil {
			return fmt.Errorf("%s real server %s of %s: %w", op, addr, key, err)
		}
		return nil
	})
}

// SetTimeouts implements IPVS.
func (f *FakeIPVS) SetTimeouts(ctx context.Context, tcp, tcpFin, udp time.Duration) error {
	return f.do(ctx, func() error {
		f.Timeouts = [3]time.Duration{tcp, tcpFin, udp}
		return nil
	})
}

func (f *FakeIPVS) do(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := fn(); err != nil {
		return err
	}
	f.writes++
	return nil
}

// Dump prints the table as `ipvsadm -Ln` would, without the header: one line per virtual
// server and one per real server, with weights and connection counters.
func (f *FakeIPVS) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(f.vs), compareVSKey)
	var b strings.Builder
	for _, k := range keys {
		v := f.vs[k]
		b.WriteString(v.vs.String() + "\n")
		for _, a := range slices.SortedFunc(maps.Keys(v.rss), netip.AddrPort.Compare) {
			rs := v.rss[a]
			fmt.Fprintf(&b, "  -> %s active %d inactive %d\n", rs, rs.ActiveConn, rs.InactiveConn)
		}
	}
	return b.String()
}

// FakeLinks holds dummy devices and their addresses in memory. Safe for concurrent use.
type FakeLinks struct {
	mu     sync.Mutex
	links  map[string]map[netip.Addr]bool
	writes int
}

var _ Links = (*FakeLinks)(nil)

// NewFakeLinks returns a namespace with no dummy device.
func NewFakeLinks() *FakeLinks { return &FakeLinks{links: map[string]map[netip.Addr]bool{}} }

// Writes counts the changes (device created, address added or removed).
func (f *FakeLinks) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// EnsureDummy implements Links.
func (f *FakeLinks) EnsureDummy(ctx context.Context, name string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.links[name]; ok {
		return true, nil
	}
	f.links[name] = map[netip.Addr]bool{}
	f.writes++
	return false, nil
}

// ListAddrs implements Links.
func (f *FakeLinks) ListAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return nil, fmt.Errorf("link %s: %w", name, ErrNotFound)
	}
	return slices.SortedFunc(maps.Keys(l), netip.Addr.Compare), nil
}

// AddAddr implements Links.
func (f *FakeLinks) AddAddr(ctx context.Context, name string, ip netip.Addr) error {
	return f.addrOp(ctx, name, ip, true)
}

// DelAddr implements Links.
func (f *FakeLinks) DelAddr(ctx context.Context, name string, ip netip.Addr) error {
	return f.addrOp(ctx, name, ip, false)
}

// DeleteDummy implements Links.
func (f *FakeLinks) DeleteDummy(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.links[name]; ok {
		delete(f.links, name)
		f.writes++
	}
	return nil
}

func (f *FakeLinks) addrOp(ctx context.Context, name string, ip netip.Addr, add bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[name]
	if !ok {
		return fmt.Errorf("link %s: %w", name, ErrNotFound)
	}
	if !ip.IsValid() {
		return fmt.Errorf("address %v: %w", ip, ErrInvalid)
	}
	if l[ip] == add {
		return nil
	}
	if add {
		l[ip] = true
	} else {
		delete(l, ip)
	}
	f.writes++
	return nil
}
