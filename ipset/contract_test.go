package ipset

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The contract: one table of operations and expected outcomes, run against Fake here
// and against the kernel (in a fresh network namespace) by contract_netns_test.go, so
// that Fake keeps returning what the kernel returns.

// backend is an Interface under test plus the few things the table needs that the
// Interface does not offer.
type backend interface {
	iface() Interface
	// reference makes a kernel component use the set (an iptables rule).
	reference(t *testing.T, name string)
	// unreference drops what reference made.
	unreference(t *testing.T, name string)
}

// stateChecker is a backend that can also read the state another way (the ipset CLI)
// and compare.
type stateChecker interface {
	checkState(t *testing.T, state map[string][]string)
}

type fakeBackend struct{ f *Fake }

func (b fakeBackend) iface() Interface                      { return b.f }
func (b fakeBackend) reference(_ *testing.T, name string)   { b.f.SetReferenced(name, true) }
func (b fakeBackend) unreference(_ *testing.T, name string) { b.f.SetReferenced(name, false) }

// step is one call. Exactly one of the op fields is set.
type step struct {
	ensure  *Set
	destroy string
	add     string // set name; entries in entries
	del     string
	flush   string
	swap    [2]string
	list    string // ListEntries; compare with wantList
	ref     string // backend.reference
	unref   string
	entries []Entry
	// wantErr is the sentinel the call must return (nil: success).
	wantErr  error
	wantList []string
}

type contractCase struct {
	name  string
	steps []step
	// want is every set in the namespace and its entries (as strings) at the end.
	want map[string][]string
}

// Helpers to write entries briefly.
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }
func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func eIP(a string) Entry        { return Entry{IP: ip(a)} }
func eNet(n string) Entry       { return Entry{Net: pfx(n)} }
func ePort(p uint16) Entry      { return Entry{Port: p} }
func eIPPort(a, proto string, p uint16) Entry {
	return Entry{IP: ip(a), Protocol: proto, Port: p}
}
func eIPPortIP(a, proto string, p uint16, b string) Entry {
	return Entry{IP: ip(a), Protocol: proto, Port: p, IP2: ip(b)}
}
func eIPPortNet(a, proto string, p uint16, n string) Entry {
	return Entry{IP: ip(a), Protocol: proto, Port: p, Net: pfx(n)}
}
func setp(s Set) *Set { return &s }

var (
	sHIP    = Set{Name: "KPT-HIP", Type: HashIP}
	sHIP6   = Set{Name: "KPT-HIP6", Type: HashIP, Family: FamilyIPv6}
	sHIPP   = Set{Name: "KPT-HIPP", Type: HashIPPort}
	sHIPP2  = Set{Name: "KPT-HIPP2", Type: HashIPPort}
	sHIPP6  = Set{Name: "KPT-HIPP6", Type: HashIPPort, Family: FamilyIPv6}
	sHIPPI  = Set{Name: "KPT-HIPPI", Type: HashIPPortIP}
	sHIPPN  = Set{Name: "KPT-HIPPN", Type: HashIPPortNet}
	sHIPPN6 = Set{Name: "KPT-HIPPN6", Type: HashIPPortNet, Family: FamilyIPv6}
	sHN     = Set{Name: "KPT-HN", Type: HashNet}
	sHN6    = Set{Name: "KPT-HN6", Type: HashNet, Family: FamilyIPv6}
	sBP     = Set{Name: "KPT-BP", Type: BitmapPort}
	sBPN    = Set{Name: "KPT-BPN", Type: BitmapPort, PortRange: PortRange{From: 30000, To: 32767}}
)

func contractCases() []contractCase {
	return []contractCase{{
		name: "every type, both families: entries read back in ipset list form",
		steps: []step{
			{ensure: &sHIP}, {add: sHIP.Name, entries: []Entry{eIP("100.100.0.10"), eIP("100.100.0.11")}},
			{ensure: &sHIP6}, {add: sHIP6.Name, entries: []Entry{eIP("2001:db8:2::10")}},
			{ensure: &sHIPP}, {add: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80), eIPPort("100.100.0.10", "udp", 53), eIPPort("100.100.0.10", "sctp", 9), eIPPort("100.100.0.12", "tcp", 0)}},
			{ensure: &sHIPP6}, {add: sHIPP6.Name, entries: []Entry{eIPPort("2001:db8:2::10", "tcp", 443)}},
			{ensure: &sHIPPI}, {add: sHIPPI.Name, entries: []Entry{eIPPortIP("100.64.1.2", "tcp", 8080, "100.64.1.2")}},
			{ensure: &sHIPPN}, {add: sHIPPN.Name, entries: []Entry{eIPPortNet("198.51.100.7", "tcp", 80, "203.0.113.0/24"), eIPPortNet("198.51.100.7", "udp", 80, "203.0.113.9/32")}},
			{ensure: &sHIPPN6}, {add: sHIPPN6.Name, entries: []Entry{eIPPortNet("2001:db8:2::7", "tcp", 80, "2001:db8:3::/64")}},
			{ensure: &sHN}, {add: sHN.Name, entries: []Entry{eNet("100.64.0.0/16"), eNet("100.65.0.1/32")}},
			{ensure: &sHN6}, {add: sHN6.Name, entries: []Entry{eNet("2001:db8:1::/48")}},
			{ensure: &sBP}, {add: sBP.Name, entries: []Entry{ePort(30080), ePort(0), ePort(65535)}},
			{ensure: &sBPN}, {add: sBPN.Name, entries: []Entry{ePort(30000), ePort(32767)}},
			{list: sHIPP.Name, wantList: []string{"100.100.0.10,sctp:9", "100.100.0.10,tcp:80", "100.100.0.10,udp:53", "100.100.0.12,tcp:0"}},
		},
		want: map[string][]string{
			"KPT-HIP":    {"100.100.0.10", "100.100.0.11"},
			"KPT-HIP6":   {"2001:db8:2::10"},
			"KPT-HIPP":   {"100.100.0.10,sctp:9", "100.100.0.10,tcp:80", "100.100.0.10,udp:53", "100.100.0.12,tcp:0"},
			"KPT-HIPP6":  {"2001:db8:2::10,tcp:443"},
			"KPT-HIPPI":  {"100.64.1.2,tcp:8080,100.64.1.2"},
			"KPT-HIPPN":  {"198.51.100.7,tcp:80,203.0.113.0/24", "198.51.100.7,udp:80,203.0.113.9"},
			"KPT-HIPPN6": {"2001:db8:2::7,tcp:80,2001:db8:3::/64"},
			"KPT-HN":     {"100.64.0.0/16", "100.65.0.1"},
			"KPT-HN6":    {"2001:db8:1::/48"},
			"KPT-BP":     {"0", "30080", "65535"},
			"KPT-BPN":    {"30000", "32767"},
		},
	}, {
		name: "networks are stored masked; IPv4-mapped addresses as IPv4",
		steps: []step{
			{ensure: &sHN}, {add: sHN.Name, entries: []Entry{eNet("10.1.2.3/16")}},
			{ensure: &sHIPPN}, {add: sHIPPN.Name, entries: []Entry{eIPPortNet("::ffff:198.51.100.7", "tcp", 80, "::ffff:203.0.113.77/120")}},
			{del: sHN.Name, entries: []Entry{eNet("10.1.0.0/16")}},
		},
		want: map[string][]string{"KPT-HN": {}, "KPT-HIPPN": {"198.51.100.7,tcp:80,203.0.113.0/24"}},
	}, {
		name: "ensure is idempotent and keeps entries; the comment is not compared",
		steps: []step{
			{ensure: &sHIPP}, {add: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}},
			{ensure: &sHIPP},
			{ensure: setp(Set{Name: sHIPP.Name, Type: HashIPPort, Family: FamilyIPv4, MaxElem: DefaultMaxElem, Comment: "other words"})},
			{ensure: &sBP}, {ensure: setp(Set{Name: sBP.Name, Type: BitmapPort, PortRange: DefaultPortRange})},
		},
		want: map[string][]string{"KPT-HIPP": {"100.100.0.10,tcp:80"}, "KPT-BP": {}},
	}, {
		name: "ensure over another type, family, maxelem or range is a type mismatch",
		steps: []step{
			{ensure: &sHIPP},
			{ensure: setp(Set{Name: sHIPP.Name, Type: HashIP}), wantErr: ErrTypeMismatch},
			{ensure: setp(Set{Name: sHIPP.Name, Type: HashIPPortIP}), wantErr: ErrTypeMismatch},
			{ensure: setp(Set{Name: sHIPP.Name, Type: BitmapPort}), wantErr: ErrTypeMismatch},
			{ensure: setp(Set{Name: sHIPP.Name, Type: HashIPPort, Family: FamilyIPv6}), wantErr: ErrTypeMismatch},
			{ensure: setp(Set{Name: sHIPP.Name, Type: HashIPPort, MaxElem: 1024}), wantErr: ErrTypeMismatch},
			{ensure: &sBPN},
			{ensure: setp(Set{Name: sBPN.Name, Type: BitmapPort}), wantErr: ErrTypeMismatch},
		},
		want: map[string][]string{"KPT-HIPP": {}, "KPT-BPN": {}},
	}, {
		name: "invalid sets are refused before the kernel",
		steps: []step{
			{ensure: setp(Set{Name: "KPT-A-NAME-THAT-IS-32-BYTES-LONG", Type: HashIP}), wantErr: ErrInvalidSet},
			{ensure: setp(Set{Name: "", Type: HashIP}), wantErr: ErrInvalidSet},
			{ensure: setp(Set{Name: "KPT-X", Type: "list:set"}), wantErr: ErrInvalidSet},
			{ensure: setp(Set{Name: "KPT-X", Type: BitmapPort, Family: FamilyIPv4}), wantErr: ErrInvalidSet},
			{ensure: setp(Set{Name: "KPT-X", Type: HashIP, Family: "inet7"}), wantErr: ErrInvalidSet},
			{ensure: setp(Set{Name: "KPT-X", Type: BitmapPort, PortRange: PortRange{From: 10, To: 1}}), wantErr: ErrInvalidSet},
			{ensure: setp(Set{Name: "KPT-X", Type: HashIP, PortRange: PortRange{From: 1, To: 10}}), wantErr: ErrInvalidSet},
			{ensure: setp(Set{Name: "KPT-31-BYTES-IS-THE-LONGEST-OK", Type: HashIP})},
		},
		want: map[string][]string{"KPT-31-BYTES-IS-THE-LONGEST-OK": {}},
	}, {
		name: "add of a present entry and del of an absent one are no-ops",
		steps: []step{
			{ensure: &sHIPP},
			{add: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80), eIPPort("100.100.0.10", "tcp", 80)}},
			{add: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}},
			{del: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.99", "tcp", 80)}},
			{ensure: &sBP}, {add: sBP.Name, entries: []Entry{ePort(30080), ePort(30080)}},
			{del: sBP.Name, entries: []Entry{ePort(30081)}},
			{ensure: &sHN}, {add: sHN.Name, entries: []Entry{eNet("10.0.0.0/8")}}, {del: sHN.Name, entries: []Entry{eNet("10.0.0.0/9")}},
		},
		want: map[string][]string{"KPT-HIPP": {"100.100.0.10,tcp:80"}, "KPT-BP": {"30080"}, "KPT-HN": {"10.0.0.0/8"}},
	}, {
		name: "an entry of another type's shape is invalid",
		steps: []step{
			{ensure: &sHIP}, {ensure: &sHIPP}, {ensure: &sHIPPI}, {ensure: &sHIPPN}, {ensure: &sHN}, {ensure: &sBP},
			{add: sHIP.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}, wantErr: ErrInvalidEntry},
			{add: sHIP.Name, entries: []Entry{eNet("100.100.0.0/24")}, wantErr: ErrInvalidEntry},
			{add: sHIP.Name, entries: []Entry{ePort(80)}, wantErr: ErrInvalidEntry},
			{add: sHIPP.Name, entries: []Entry{eIP("100.100.0.10")}, wantErr: ErrInvalidEntry},
			{add: sHIPP.Name, entries: []Entry{eIPPortIP("100.100.0.10", "tcp", 80, "100.64.1.2")}, wantErr: ErrInvalidEntry},
			{add: sHIPPI.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}, wantErr: ErrInvalidEntry},
			{add: sHIPPI.Name, entries: []Entry{eIPPortNet("100.100.0.10", "tcp", 80, "100.64.1.0/24")}, wantErr: ErrInvalidEntry},
			{add: sHIPPN.Name, entries: []Entry{eIPPortIP("100.100.0.10", "tcp", 80, "100.64.1.2")}, wantErr: ErrInvalidEntry},
			{add: sHIPPN.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}, wantErr: ErrInvalidEntry},
			{add: sHN.Name, entries: []Entry{eIP("100.100.0.10")}, wantErr: ErrInvalidEntry},
			{add: sHN.Name, entries: []Entry{ePort(80)}, wantErr: ErrInvalidEntry},
			{add: sBP.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}, wantErr: ErrInvalidEntry},
			{add: sBP.Name, entries: []Entry{eIP("100.100.0.10")}, wantErr: ErrInvalidEntry},
			{del: sBP.Name, entries: []Entry{eNet("100.100.0.0/24")}, wantErr: ErrInvalidEntry},
			{del: sHIP.Name, entries: []Entry{ePort(80)}, wantErr: ErrInvalidEntry},
		},
		want: map[string][]string{"KPT-HIP": {}, "KPT-HIPP": {}, "KPT-HIPPI": {}, "KPT-HIPPN": {}, "KPT-HN": {}, "KPT-BP": {}},
	}, {
		name: "entries that fit no type, unknown protocols, /0 and zones are invalid",
		steps: []step{
			{ensure: &sHIPP}, {ensure: &sHN}, {ensure: &sHIPPN},
			{add: sHIPP.Name, entries: []Entry{{IP: ip("100.100.0.10"), Port: 80}}, wantErr: ErrInvalidEntry},
			{add: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.10", "icmp", 0)}, wantErr: ErrInvalidEntry},
			{add: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.10", "TCP", 80)}, wantErr: ErrInvalidEntry},
			{add: sHIPP.Name, entries: []Entry{{IP: ip("100.100.0.10"), Protocol: "tcp", Port: 80, IP2: ip("1.1.1.1"), Net: pfx("10.0.0.0/8")}}, wantErr: ErrInvalidEntry},
			{add: sHN.Name, entries: []Entry{eNet("0.0.0.0/0")}, wantErr: ErrInvalidEntry},
			{add: sHIPPN.Name, entries: []Entry{eIPPortNet("198.51.100.7", "tcp", 80, "0.0.0.0/0")}, wantErr: ErrInvalidEntry},
			{add: sHIPP.Name, entries: []Entry{{}}, wantErr: ErrInvalidEntry}, // (the zero Entry is bitmap:port's port 0)
		},
		want: map[string][]string{"KPT-HIPP": {}, "KPT-HN": {}, "KPT-HIPPN": {}},
	}, {
		name: "addresses of the other family are invalid",
		steps: []step{
			{ensure: &sHIP}, {ensure: &sHIPP6}, {ensure: &sHN6},
			{add: sHIP.Name, entries: []Entry{eIP("2001:db8:2::10")}, wantErr: ErrInvalidEntry},
			{add: sHIPP6.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}, wantErr: ErrInvalidEntry},
			{add: sHN6.Name, entries: []Entry{eNet("100.64.0.0/16")}, wantErr: ErrInvalidEntry},
			{ensure: &sHIPPN},
			{add: sHIPPN.Name, entries: []Entry{eIPPortNet("198.51.100.7", "tcp", 80, "2001:db8::/32")}, wantErr: ErrInvalidEntry},
		},
		want: map[string][]string{"KPT-HIP": {}, "KPT-HIPP6": {}, "KPT-HN6": {}, "KPT-HIPPN": {}},
	}, {
		name: "a port outside a bitmap's range is invalid; entries before it stay",
		steps: []step{
			{ensure: &sBPN},
			{add: sBPN.Name, entries: []Entry{ePort(30001), ePort(80), ePort(30002)}, wantErr: ErrInvalidEntry},
			{del: sBPN.Name, entries: []Entry{ePort(32768)}, wantErr: ErrInvalidEntry},
		},
		want: map[string][]string{"KPT-BPN": {"30001"}},
	}, {
		name: "a full hash set refuses new entries but takes present ones",
		steps: []step{
			{ensure: setp(Set{Name: "KPT-SMALL", Type: HashIP, MaxElem: 2})},
			{add: "KPT-SMALL", entries: []Entry{eIP("100.100.0.1"), eIP("100.100.0.2"), eIP("100.100.0.3")}, wantErr: ErrSetFull},
			{add: "KPT-SMALL", entries: []Entry{eIP("100.100.0.2")}},
			{del: "KPT-SMALL", entries: []Entry{eIP("100.100.0.1")}},
			{add: "KPT-SMALL", entries: []Entry{eIP("100.100.0.3")}},
		},
		want: map[string][]string{"KPT-SMALL": {"100.100.0.2", "100.100.0.3"}},
	}, {
		name: "operations on a missing set",
		steps: []step{
			{add: "KPT-NOPE", entries: []Entry{eIP("100.100.0.1")}, wantErr: ErrNotFound},
			{add: "KPT-NOPE", entries: []Entry{ePort(80)}, wantErr: ErrNotFound},
			{del: "KPT-NOPE", entries: []Entry{eIP("100.100.0.1")}, wantErr: ErrNotFound},
			{list: "KPT-NOPE", wantErr: ErrNotFound},
			{flush: "KPT-NOPE", wantErr: ErrNotFound},
			{destroy: "KPT-NOPE"},
			{ensure: &sHIP},
			{swap: [2]string{"KPT-NOPE", sHIP.Name}, wantErr: ErrNotFound},
			{swap: [2]string{sHIP.Name, "KPT-NOPE"}, wantErr: ErrNotFound},
		},
		want: map[string][]string{"KPT-HIP": {}},
	}, {
		name: "swap exchanges contents and options, not names",
		steps: []step{
			{ensure: &sHIPP}, {add: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}},
			{ensure: setp(Set{Name: sHIPP2.Name, Type: HashIPPort, MaxElem: 1024})},
			{add: sHIPP2.Name, entries: []Entry{eIPPort("100.100.0.20", "udp", 53), eIPPort("100.100.0.21", "udp", 53)}},
			{swap: [2]string{sHIPP.Name, sHIPP2.Name}},
			// the maxelem moved with the contents
			{ensure: &sHIPP, wantErr: ErrTypeMismatch},
			{ensure: setp(Set{Name: sHIPP.Name, Type: HashIPPort, MaxElem: 1024})},
			{ensure: &sHIPP2},
			{swap: [2]string{sHIPP.Name, sHIPP.Name}},
			{ensure: &sBP}, {add: sBP.Name, entries: []Entry{ePort(1)}},
			{ensure: &sBPN}, {add: sBPN.Name, entries: []Entry{ePort(30000)}},
			{swap: [2]string{sBP.Name, sBPN.Name}},
		},
		want: map[string][]string{
			"KPT-HIPP":  {"100.100.0.20,udp:53", "100.100.0.21,udp:53"},
			"KPT-HIPP2": {"100.100.0.10,tcp:80"},
			"KPT-BP":    {"30000"},
			"KPT-BPN":   {"1"},
		},
	}, {
		name: "swap of different types or families is a type mismatch",
		steps: []step{
			{ensure: &sHIP}, {ensure: &sHIPP}, {ensure: &sHIPP6}, {ensure: &sHN}, {ensure: &sHIPPI}, {ensure: &sHIPPN}, {ensure: &sBP},
			{swap: [2]string{sHIP.Name, sHIPP.Name}, wantErr: ErrTypeMismatch},
			{swap: [2]string{sHIP.Name, sHN.Name}, wantErr: ErrTypeMismatch},
			{swap: [2]string{sHIPP.Name, sHIPP6.Name}, wantErr: ErrTypeMismatch},
			{swap: [2]string{sHIPPI.Name, sHIPPN.Name}, wantErr: ErrTypeMismatch},
			{swap: [2]string{sHIPP.Name, sBP.Name}, wantErr: ErrTypeMismatch},
		},
		want: map[string][]string{"KPT-HIP": {}, "KPT-HIPP": {}, "KPT-HIPP6": {}, "KPT-HN": {}, "KPT-HIPPI": {}, "KPT-HIPPN": {}, "KPT-BP": {}},
	}, {
		name: "flush empties; destroy removes",
		steps: []step{
			{ensure: &sHIPP}, {add: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}},
			{flush: sHIPP.Name},
			{list: sHIPP.Name, wantList: []string{}},
			{ensure: &sBP}, {add: sBP.Name, entries: []Entry{ePort(80)}}, {flush: sBP.Name},
			{ensure: &sHN}, {destroy: sHN.Name}, {destroy: sHN.Name},
		},
		want: map[string][]string{"KPT-HIPP": {}, "KPT-BP": {}},
	}, {
		name: "a set used by an iptables rule cannot be destroyed",
		steps: []step{
			{ensure: &sHIPP}, {add: sHIPP.Name, entries: []Entry{eIPPort("100.100.0.10", "tcp", 80)}},
			{ref: sHIPP.Name},
			{destroy: sHIPP.Name, wantErr: ErrInUse},
			// a referenced set can still be swapped, flushed and changed
			{ensure: setp(Set{Name: TempName(sHIPP.Name), Type: HashIPPort})},
			{swap: [2]string{sHIPP.Name, TempName(sHIPP.Name)}},
			{destroy: TempName(sHIPP.Name)},
			{unref: sHIPP.Name},
			{destroy: sHIPP.Name},
		},
		want: map[string][]string{},
	}}
}

// runContract runs every case on a fresh backend from newBackend; cleanup runs after
// each case.
func runContract(t *testing.T, newBackend func(t *testing.T) backend) {
	for _, tc := range contractCases() {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			ctx := context.Background()
			ifc := b.iface()
			for i, s := range tc.steps {
				var err error
				what := ""
				switch {
				case s.ensure != nil:
					what, err = "ensure "+s.ensure.Name, ifc.EnsureSet(ctx, *s.ensure)
				case s.destroy != "":
					what, err = "destroy "+s.destroy, ifc.DestroySet(ctx, s.destroy)
				case s.add != "":
					what, err = "add "+s.add, ifc.AddEntries(ctx, s.add, s.entries)
				case s.del != "":
					what, err = "del "+s.del, ifc.DelEntries(ctx, s.del, s.entries)
				case s.flush != "":
					what, err = "flush "+s.flush, ifc.FlushSet(ctx, s.flush)
				case s.swap[0] != "":
					what, err = "swap "+s.swap[0]+" "+s.swap[1], ifc.Swap(ctx, s.swap[0], s.swap[1])
				case s.list != "":
					what = "list " + s.list
					var got []Entry
					got, err = ifc.ListEntries(ctx, s.list)
					if err == nil && s.wantList != nil {
						if diff := cmp.Diff(s.wantList, entryStrings(got)); diff != "" {
							t.Errorf("step %d (%s): entries (-want +got):\n%s", i, what, diff)
						}
					}
				case s.ref != "":
					b.reference(t, s.ref)
					continue
				case s.unref != "":
					b.unreference(t, s.unref)
					continue
				default:
					t.Fatalf("step %d: no operation", i)
				}
				if !errors.Is(err, s.wantErr) || (s.wantErr == nil) != (err == nil) {
					t.Errorf("step %d (%s): got error %v, want %v", i, what, err, s.wantErr)
				}
			}
			got := readState(t, ifc)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("final state (-want +got):\n%s", diff)
			}
			if c, ok := b.(stateChecker); ok {
				c.checkState(t, got)
			}
		})
	}
}

// readState returns every set and its entries through the Interface.
func readState(t *testing.T, ifc Interface) map[string][]string {
	t.Helper()
	ctx := context.Background()
	names, err := ifc.ListSets(ctx)
	if err != nil {
		t.Fatalf("ListSets: %v", err)
	}
	out := map[string][]string{}
	for _, n := range names {
		es, err := ifc.ListEntries(ctx, n)
		if err != nil {
			t.Fatalf("ListEntries %s: %v", n, err)
		}
		out[n] = entryStrings(es)
	}
	return out
}

func entryStrings(es []Entry) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.String())
	}
	return out
}

func TestContractFake(t *testing.T) {
	runContract(t, func(*testing.T) backend { return fakeBackend{NewFake()} })
}
