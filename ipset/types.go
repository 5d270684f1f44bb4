package ipset

import (
	"fmt"
	"strings"
)

// SetType is an ipset type name, as `ipset create NAME TYPE` spells it.
type SetType string

// The set types kproxy uses. They are the types upstream kube-proxy's IPVS mode creates
// (plus hash:net), each with one entry shape (see Entry).
const (
	HashIP        SetType = "hash:ip"          // Entry{IP}
	HashIPPort    SetType = "hash:ip,port"     // Entry{IP, Protocol, Port}
	HashIPPortIP  SetType = "hash:ip,port,ip"  // Entry{IP, Protocol, Port, IP2}
	HashIPPortNet SetType = "hash:ip,port,net" // Entry{IP, Protocol, Port, Net}
	HashNet       SetType = "hash:net"         // Entry{Net}
	BitmapPort    SetType = "bitmap:port"      // Entry{Port}
)

// SetTypes lists every supported SetType.
var SetTypes = []SetType{HashIP, HashIPPort, HashIPPortIP, HashIPPortNet, HashNet, BitmapPort}

func (t SetType) valid() bool {
	for _, s := range SetTypes {
		if t == s {
			return true
		}
	}
	return false
}

// isHash reports whether sets of this type have an address family.
func (t SetType) isHash() bool { return strings.HasPrefix(string(t), "hash:") }

// features is the kernel's IPSET_TYPE_* feature mask of the type. The kernel swaps two
// sets only when their features and family are equal (ip_set_swap), and the features of
// the supported types are all different, so "same features" means "same type" here.
func (t SetType) features() uint32 {
	const (
		fIP      = 1 << 0 // IPSET_TYPE_IP
		fPort    = 1 << 1 // IPSET_TYPE_PORT
		fIP2     = 1 << 4 // IPSET_TYPE_IP2
		fNomatch = 1 << 6 // IPSET_TYPE_NOMATCH
	)
	switch t {
	case HashIP:
		return fIP
	case HashIPPort:
		return fIP | fPort
	case HashIPPortIP:
		return fIP | fPort | fIP2
	case HashIPPortNet:
		return fIP | fPort | fIP2 | fNomatch
	case HashNet:
		return fIP | fNomatch
	case BitmapPort:
		return fPort
	}
	return 0
}

// Family is the address family of a hash set, as `ipset create ... family F` spells it.
type Family string

// Address families.
const (
	FamilyIPv4 Family = "inet"
	FamilyIPv6 Family = "inet6"
)

// PortRange is the range of a bitmap:port set, both ends included.
type PortRange struct {
	From, To uint16
}

// String formats the range as `ipset create ... range FROM-TO` does.
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.From, r.To) }

// DefaultPortRange is the range kube-proxy gives its bitmap:port sets. A Set whose
// PortRange is the zero value gets it.
var DefaultPortRange = PortRange{From: 0, To: 65535}

// DefaultMaxElem is the kernel's default maximum number of entries of a hash set, the
// value kube-proxy passes explicitly. A Set whose MaxElem is 0 gets it.
const DefaultMaxElem = 65536

// MaxNameLen is the longest set name the kernel accepts (IPSET_MAXNAMELEN - 1).
const MaxNameLen = 31

// Set describes one ipset: what `ipset create` is given.
//
// Only Name, Type, Family, PortRange and MaxElem reach the kernel. Two sets are "the
// same" (EnsureSet succeeds on an existing set) when those are equal after defaults,
// as the kernel's `ipset create -exist` decides.
type Set struct {
	Name string
	Type SetType
	// Family of a hash set: FamilyIPv4 (the default when empty) or FamilyIPv6.
	// Must be empty for bitmap:port.
	Family Family
	// PortRange of a bitmap:port set; the zero value means DefaultPortRange.
	// Must be zero for hash sets.
	PortRange PortRange
	// MaxElem of a hash set; 0 means DefaultMaxElem. Must be 0 for bitmap:port.
	MaxElem uint32
	// Comment says what the set is for. It is not stored in the kernel (kube-proxy
	// creates its sets without the comment extension, and so does kproxy, so that either
	// can take over the other's sets); rule renderers use it for `-m comment`.
	Comment string
}

// withDefaults returns the set with its defaults filled in, the form that reaches the
// kernel and that sets are compared in.
func (s Set) withDefaults() Set {
	if s.Type.isHash() {
		if s.Family == "" {
			s.Family = FamilyIPv4
		}
		if s.MaxElem == 0 {
			s.MaxElem = DefaultMaxElem
		}
	}
	if s.Type == BitmapPort && s.PortRange == (PortRange{}) {
		s.PortRange = DefaultPortRange
	}
	return s
}

// sameAs reports whether the kernel would take a `create -exist` of s as a no-op on an
// existing set o (both with defaults). Comment is not compared: it is not in the kernel.
func (s Set) sameAs(o Set) bool {
	return s.Type == o.Type && s.Family == o.Family && s.PortRange == o.PortRange && s.MaxElem == o.MaxElem
}

// Validate checks the set as the kernel would at create time, plus kproxy's own limits
// (only the supported types).
func (s Set) Validate() error {
	if err := validateName(s.Name); err != nil {
		return err
	}
	if !s.Type.valid() {
		return fmt.Errorf("set %s: %w: unsupported type %q", s.Name, ErrInvalidSet, s.Type)
	}
	if s.Type.isHash() {
		if s.Family != "" && s.Family != FamilyIPv4 && s.Family != FamilyIPv6 {
			return fmt.Errorf("set %s: %w: unknown family %q", s.Name, ErrInvalidSet, s.Family)
		}
		if s.PortRange != (PortRange{}) {
			return fmt.Errorf("set %s: %w: a port range is only for bitmap:port", s.Name, ErrInvalidSet)
		}
		return nil
	}
	if s.Family != "" {
		return fmt.Errorf("set %s: %w: bitmap:port has no family", s.Name, ErrInvalidSet)
	}
	if s.MaxElem != 0 {
		return fmt.Errorf("set %s: %w: bitmap:port has no maxelem", s.Name, ErrInvalidSet)
	}
	if s.PortRange.From > s.PortRange.To {
		return fmt.Errorf("set %s: %w: port range %s is reversed", s.Name, ErrInvalidSet, s.PortRange)
	}
	return nil
}

func validateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty set name", ErrInvalidSet)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("set %s: %w: name longer than %d bytes", name, ErrInvalidSet, MaxNameLen)
	}
	if strings.ContainsRune(name, 0) {
		return fmt.Errorf("set %q: %w: name contains NUL", name, ErrInvalidSet)
	}
	return nil
}

// String formats the set as the `create` line of `ipset save`, with kproxy's defaults
// spelled out, e.g. "create KUBE-CLUSTER-IP hash:ip,port family inet maxelem 65536".
func (s Set) String() string {
	d := s.withDefaults()
	if d.Type.isHash() {
		return fmt.Sprintf("create %s %s family %s maxelem %d", d.Name, d.Type, d.Family, d.MaxElem)
	}
	return fmt.Sprintf("create %s %s range %s", d.Name, d.Type, d.PortRange)
}
