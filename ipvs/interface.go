package ipvs

import (
	"context"
	"net/netip"
	"time"
)

// IPVS reads and writes the IPVS table of one network namespace.
//
// Implementations: Kernel (over github.com/moby/ipvs) and FakeIPVS (in memory). Both
// return ErrExists, ErrNotFound and ErrInvalid for the same calls.
type IPVS interface {
	// ListVirtualServers returns every virtual server of the namespace (any family, any
	// owner), sorted by key. Equivalent to: `ipvsadm -Ln` (services only).
	ListVirtualServers(ctx context.Context) ([]VirtualServer, error)
	// AddVirtualServer creates a virtual server; ErrExists if its key is taken.
	// Equivalent to: `ipvsadm -A -t IP:PORT -s SCHED [-p TIMEOUT]`.
	AddVirtualServer(ctx context.Context, vs VirtualServer) error
	// UpdateVirtualServer changes the scheduler, flags and timeout of an existing virtual
	// server; ErrNotFound if missing. Equivalent to: `ipvsadm -E -t IP:PORT -s SCHED ...`.
	UpdateVirtualServer(ctx context.Context, vs VirtualServer) error
	// DeleteVirtualServer deletes a virtual server and its real servers; ErrNotFound if
	// missing. Equivalent to: `ipvsadm -D -t IP:PORT`.
	DeleteVirtualServer(ctx context.Context, key VSKey) error
	// ListRealServers returns the real servers of a virtual server with their weights and
	// connection counters, sorted; ErrNotFound if the virtual server is missing.
	// Equivalent to: `ipvsadm -Ln -t IP:PORT`.
	ListRealServers(ctx context.Context, key VSKey) ([]RealServer, error)
	// ListAllRealServers returns the real servers of every virtual server (as
	// ListRealServers lists them, keyed as ListVirtualServers returns them) in one read, where
	// N ListRealServers calls cost N requests. A virtual server created or deleted during
	// the read may be missing; callers list those with ListRealServers.
	// Equivalent to: `ipvsadm -Ln` (cat /proc/net/ip_vs).
	ListAllRealServers(ctx context.Context) (map[VSKey][]RealServer, error)
	// AddRealServer adds a masquerading real server; ErrExists if present.
	// Equivalent to: `ipvsadm -a -t IP:PORT -r RIP:RPORT -m -w WEIGHT`.
	AddRealServer(ctx context.Context, key VSKey, rs RealServer) error
	// UpdateRealServer sets the weight of a real server; ErrNotFound if missing.
	// Equivalent to: `ipvsadm -e -t IP:PORT -r RIP:RPORT -m -w WEIGHT`.
	UpdateRealServer(ctx context.Context, key VSKey, rs RealServer) error
	// DeleteRealServer deletes a real server; ErrNotFound if missing.
	// Equivalent to: `ipvsadm -d -t IP:PORT -r RIP:RPORT`.
	DeleteRealServer(ctx context.Context, key VSKey, addr netip.AddrPort) error
	// SetTimeouts sets the TCP, TCP FIN and UDP connection timeouts; 0 keeps the current.
	// Equivalent to: `ipvsadm --set TCP TCPFIN UDP`.
	SetTimeouts(ctx context.Context, tcp, tcpFin, udp time.Duration) error
}

// Links manages the dummy device the service addresses are bound to, in one namespace.
//
// Implementations: Kernel (over netlink) and FakeLinks.
type Links interface {
	// EnsureDummy creates the dummy device if missing and reports whether it existed. As
	// upstream, the device is left down (IPVS sees packets to its addresses at LOCAL_IN
	// anyway) and keeps the dummy driver's NOARP flag: the node never answers ARP for
	// service addresses. Equivalent to: `ip link add NAME type dummy`.
	EnsureDummy(ctx context.Context, name string) (bool, error)
	// ListAddrs returns the device's addresses, sorted; ErrNotFound if it is missing.
	// Equivalent to: `ip -o addr show dev NAME`.
	ListAddrs(ctx context.Context, name string) ([]netip.Addr, error)
	// AddAddr binds a host address (/32 or /128) to the device; one already bound is fine.
	// Equivalent to: `ip addr add IP/32 dev NAME`.
	AddAddr(ctx context.Context, name string, ip netip.Addr) error
	// DelAddr removes an address from the device; one not bound is fine.
	// Equivalent to: `ip addr del IP/32 dev NAME`.
	DelAddr(ctx context.Context, name string, ip netip.Addr) error
	// DeleteDummy deletes the dummy device (and its addresses); a missing one is fine. A
	// link of that name that is not a dummy is left alone (ErrInvalid): it is not kproxy's.
	// Equivalent to: `ip link del NAME`.
	DeleteDummy(ctx context.Context, name string) error
}
