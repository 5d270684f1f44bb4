package ipset

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Protocols of the entries of the hash:ip,port* types.
const (
	ProtocolTCP  = "tcp"
	ProtocolUDP  = "udp"
	ProtocolSCTP = "sctp"
)

var protocolNumbers = map[string]uint8{ProtocolTCP: 6, ProtocolUDP: 17, ProtocolSCTP: 132}

// protocolNumber maps "tcp", "udp", "sctp" to their IP protocol numbers.
func protocolNumber(p string) (uint8, bool) {
	n, ok := protocolNumbers[p]
	return n, ok
}

// protocolName is the inverse of protocolNumber; other protocols (which kproxy never
// adds, but another program may have) come back as their decimal number, which
// protocolNumber rejects.
func protocolName(n uint8) string {
	for name, num := range protocolNumbers {
		if num == n {
			return name
		}
	}
	return strconv.Itoa(int(n))
}

// Entry is one member of a set. Which fields are set (the entry's shape) must match the
// type of its set:
//
//	hash:ip           IP
//	hash:ip,port      IP, Protocol, Port
//	hash:ip,port,ip   IP, Protocol, Port, IP2
//	hash:ip,port,net  IP, Protocol, Port, Net
//	hash:net          Net
//	bitmap:port       Port (Protocol empty: a bitmap:port set holds bare port numbers)
//
// Addresses must be of the set's family. Net is stored masked (10.0.0.5/8 is the entry
// 10.0.0.0/8, as the kernel stores it) and must not be a /0, which the kernel cannot
// store. String gives the `ipset list` form.
type Entry struct {
	IP       netip.Addr
	Port     uint16
	Protocol string // "tcp", "udp" or "sctp"
	IP2      netip.Addr
	Net      netip.Prefix
}

// shape returns the set type whose entries look like e, or an error if no type fits.
func (e Entry) shape() (SetType, error) {
	hasIP, hasIP2, hasNet, hasProto := e.IP.IsValid(), e.IP2.IsValid(), e.Net.IsValid(), e.Protocol != ""
	switch {
	case hasIP && !hasProto && e.Port == 0 && !hasIP2 && !hasNet:
		return HashIP, nil
	case hasIP && hasProto && !hasIP2 && !hasNet:
		return HashIPPort, nil
	case hasIP && hasProto && hasIP2 && !hasNet:
		return HashIPPortIP, nil
	case hasIP && hasProto && !hasIP2 && hasNet:
		return HashIPPortNet, nil
	case !hasIP && !hasProto && e.Port == 0 && !hasIP2 && hasNet:
		return HashNet, nil
	case !hasIP && !hasProto && !hasIP2 && !hasNet:
		return BitmapPort, nil
	}
	return "", fmt.Errorf("%w: %s fits no set type", ErrInvalidEntry, e.debugString())
}

// canonical returns the entry as the kernel stores it: IPv4-mapped IPv6 addresses
// unmapped (netlink sends them as IPv4) and Net masked.
func (e Entry) canonical() Entry {
	if e.IP.IsValid() {
		e.IP = e.IP.Unmap()
	}
	if e.IP2.IsValid() {
		e.IP2 = e.IP2.Unmap()
	}
	if e.Net.IsValid() {
		e.Net = netip.PrefixFrom(e.Net.Addr().Unmap(), e.Net.Bits()-unmapBits(e.Net.Addr())).Masked()
	}
	return e
}

// unmapBits is how many prefix bits an IPv4-mapped IPv6 prefix loses when unmapped.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// validate checks the entry on its own (without its set): one shape, known protocol,
// no zones, a storable Net. It returns the entry's shape.
func (e Entry) validate() (SetType, error) {
	t, err := e.shape()
	if err != nil {
		return "", err
	}
	if e.Protocol != "" {
		if _, ok := protocolNumber(e.Protocol); !ok {
			return "", fmt.Errorf("%w: %s: unknown protocol %q", ErrInvalidEntry, e.debugString(), e.Protocol)
		}
	}
	for _, a := range []netip.Addr{e.IP, e.IP2, e.Net.Addr()} {
		if a.Zone() != "" {
			return "", fmt.Errorf("%w: %s: address with a zone", ErrInvalidEntry, e.debugString())
		}
	}
	if e.Net.IsValid() && e.Net.Bits()-unmapBits(e.Net.Addr()) <= 0 {
		return "", fmt.Errorf("%w: %s: a /0 network cannot be stored", ErrInvalidEntry, e.debugString())
	}
	return t, nil
}

// validateFor checks that the entry fits the set (with defaults): its shape, family and,
// for bitmap:port, range. Callers pass canonical entries.
func (e Entry) validateFor(s Set) error {
	t, err := e.validate()
	if err != nil {
		return err
	}
	if t != s.Type {
		return fmt.Errorf("%w: %s has the shape of %s, not of %s set %s", ErrInvalidEntry, e, t, s.Type, s.Name)
	}
	want4 := s.Family == FamilyIPv4
	for _, a := range []netip.Addr{e.IP, e.IP2, e.Net.Addr()} {
		if a.IsValid() && a.Is4() != want4 {
			return fmt.Errorf("%w: %s is not of family %s of set %s", ErrInvalidEntry, e, s.Family, s.Name)
		}
	}
	if s.Type == BitmapPort && (e.Port < s.PortRange.From || e.Port > s.PortRange.To) {
		return fmt.Errorf("%w: port %d outside range %s of set %s", ErrInvalidEntry, e.Port, s.PortRange, s.Name)
	}
	return nil
}

// String formats the entry as `ipset list` prints it: "100.100.0.10",
// "100.100.0.10,tcp:80", "100.100.0.10,tcp:80,100.64.1.2",
// "198.51.100.7,tcp:80,203.0.113.0/24", "100.64.0.0/16", "30080".
// A host network (/32, /128) is printed without its length, as ipset does.
func (e Entry) String() string {
	t, err := e.shape()
	if err != nil {
		return e.debugString()
	}
	if t == BitmapPort {
		return strconv.Itoa(int(e.Port))
	}
	if t == HashNet {
		return formatNet(e.Net)
	}
	// appended, not fmt.Sprintf: a sync's set comparison formats every entry
	b := make([]byte, 0, 48)
	b = e.IP.AppendTo(b)
	if t == HashIP {
		return string(b)
	}
	b = append(b, ',')
	b = append(b, e.Protocol...)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(e.Port), 10)
	switch t {
	case HashIPPortIP:
		b = append(b, ',')
		b = e.IP2.AppendTo(b)
	case HashIPPortNet:
		b = append(b, ',')
		b = append(b, formatNet(e.Net)...)
	}
	return string(b)
}

func formatNet(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// debugString shows every field, for entries that fit no type.
func (e Entry) debugString() string {
	var parts []string
	if e.IP.IsValid() {
		parts = append(parts, "ip="+e.IP.String())
	}
	if e.Protocol != "" || e.Port != 0 {
		parts = append(parts, fmt.Sprintf("port=%s:%d", e.Protocol, e.Port))
	}
	if e.IP2.IsValid() {
		parts = append(parts, "ip2="+e.IP2.String())
	}
	if e.Net.IsValid() {
		parts = append(parts, "net="+e.Net.String())
	}
	return "entry{" + strings.Join(parts, " ") + "}"
}

// ParseEntry parses the `ipset list` form of an entry of a set of type t (the inverse of
// Entry.String). A network without a length is a host network.
func ParseEntry(t SetType, s string) (Entry, error) {
	bad := func(why string) (Entry, error) {
		return Entry{}, fmt.Errorf("%w: parse %s entry %q: %s", ErrInvalidEntry, t, s, why)
	}
	parts := strings.Split(s, ",")
	var e Entry
	var err error
	switch t {
	case HashIP:
		if len(parts) != 1 {
			return bad("want IP")
		}
		e.IP, err = netip.ParseAddr(parts[0])
	case HashNet:
		if len(parts) != 1 {
			return bad("want NET")
		}
		e.Net, err = parseNet(parts[0])
	case BitmapPort:
		var p uint64
		p, err = strconv.ParseUint(s, 10, 16)
		e.Port = uint16(p)
	case HashIPPort, HashIPPortIP, HashIPPortNet:
		want := map[SetType]int{HashIPPort: 2, HashIPPortIP: 3, HashIPPortNet: 3}[t]
		if len(parts) != want {
			return bad("wrong number of parts")
		}
		if e.IP, err = netip.ParseAddr(parts[0]); err != nil {
			return bad(err.Error())
		}
		proto, port, ok := strings.Cut(parts[1], ":")
		if !ok {
			return bad("want PROTO:PORT")
		}
		p, perr := strconv.ParseUint(port, 10, 16)
		if perr != nil {
			return bad(perr.Error())
		}
		e.Protocol, e.Port = proto, uint16(p)
		switch t {
		case HashIPPortIP:
			e.IP2, err = netip.ParseAddr(parts[2])
		case HashIPPortNet:
			e.Net, err = parseNet(parts[2])
		}
	default:
		return bad("unsupported type")
	}
	if err != nil {
		return bad(err.Error())
	}
	e = e.canonical()
	if _, err := e.validate(); err != nil {
		return Entry{}, err
	}
	return e, nil
}

func parseNet(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
