package ipset

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEntryStringAndParse(t *testing.T) {
	tests := []struct {
		typ   SetType
		entry Entry
		want  string
	}{
		{HashIP, eIP("100.100.0.10"), "100.100.0.10"},
		{HashIP, eIP("2001:db8:2::10"), "2001:db8:2::10"},
		{HashIPPort, eIPPort("100.100.0.10", "tcp", 80), "100.100.0.10,tcp:80"},
		{HashIPPort, eIPPort("2001:db8:2::10", "sctp", 9), "2001:db8:2::10,sctp:9"},
		{HashIPPortIP, eIPPortIP("100.64.1.2", "udp", 53, "100.64.1.2"), "100.64.1.2,udp:53,100.64.1.2"},
		{HashIPPortNet, eIPPortNet("198.51.100.7", "tcp", 80, "203.0.113.0/24"), "198.51.100.7,tcp:80,203.0.113.0/24"},
		{HashIPPortNet, eIPPortNet("198.51.100.7", "tcp", 80, "203.0.113.9/32"), "198.51.100.7,tcp:80,203.0.113.9"},
		{HashNet, eNet("100.64.0.0/16"), "100.64.0.0/16"},
		{HashNet, eNet("2001:db8:1::1/128"), "2001:db8:1::1"},
		{BitmapPort, ePort(30080), "30080"},
		{BitmapPort, ePort(0), "0"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.entry.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			shape, err := tc.entry.validate()
			if err != nil || shape != tc.typ {
				t.Errorf("validate() = %s, %v; want %s", shape, err, tc.typ)
			}
			back, err := ParseEntry(tc.typ, tc.want)
			if err != nil {
				t.Fatalf("ParseEntry: %v", err)
			}
			if diff := cmp.Diff(tc.entry, back, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("ParseEntry(String()) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseEntryRejects(t *testing.T) {
	for _, tc := range []struct {
		typ SetType
		in  string
	}{
		{HashIP, "100.100.0.10,tcp:80"},
		{HashIP, "nope"},
		{HashIPPort, "100.100.0.10"},
		{HashIPPort, "100.100.0.10,tcp80"},
		{HashIPPort, "100.100.0.10,tcp:65536"},
		{HashIPPort, "100.100.0.10,icmp:8"},
		{HashIPPortIP, "100.100.0.10,tcp:80"},
		{HashIPPortNet, "100.100.0.10,tcp:80,0.0.0.0/0"},
		{HashNet, "0.0.0.0/0"},
		{BitmapPort, "-1"},
		{BitmapPort, "tcp:80"},
		{"list:set", "x"},
	} {
		if e, err := ParseEntry(tc.typ, tc.in); !errors.Is(err, ErrInvalidEntry) {
			t.Errorf("ParseEntry(%s, %q) = %v, %v; want ErrInvalidEntry", tc.typ, tc.in, e, err)
		}
	}
}

func TestEntryCanonical(t *testing.T) {
	for _, tc := range []struct {
		in   Entry
		want string
	}{
		{eNet("10.1.2.3/16"), "10.1.0.0/16"},
		{eIP("::ffff:100.100.0.10"), "100.100.0.10"},
		{eNet("::ffff:10.1.2.3/112"), "10.1.0.0/16"},
		{eIPPortIP("::ffff:100.64.1.2", "tcp", 80, "::ffff:100.64.1.3"), "100.64.1.2,tcp:80,100.64.1.3"},
		{eNet("2001:db8:1::5/48"), "2001:db8:1::/48"},
	} {
		if got := tc.in.canonical().String(); got != tc.want {
			t.Errorf("%s canonical = %q, want %q", tc.in.debugString(), got, tc.want)
		}
	}
}

func TestEntryValidateFor(t *testing.T) {
	bp := Set{Name: "P", Type: BitmapPort, PortRange: PortRange{From: 30000, To: 32767}}.withDefaults()
	h6 := Set{Name: "H", Type: HashIPPortNet, Family: FamilyIPv6}.withDefaults()
	for _, tc := range []struct {
		set     Set
		e       Entry
		wantErr string // substring; "" = valid
	}{
		{bp, ePort(30000), ""},
		{bp, ePort(32767), ""},
		{bp, ePort(29999), "outside range"},
		{bp, ePort(32768), "outside range"},
		{bp, eIP("100.100.0.1"), "shape of hash:ip"},
		{h6, eIPPortNet("2001:db8::1", "tcp", 80, "2001:db8:3::/64"), ""},
		{h6, eIPPortNet("2001:db8::1", "tcp", 80, "203.0.113.0/24"), "not of family inet6"},
		{h6, Entry{IP: netip.MustParseAddr("fe80::1%eth0"), Protocol: "tcp", Port: 1, Net: pfx("2001:db8:3::/64")}, "zone"},
		{h6, Entry{IP: ip("2001:db8::1"), Port: 80, Net: pfx("2001:db8:3::/64")}, "fits no set type"},
	} {
		err := tc.e.canonical().validateFor(tc.set)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s in %s: unexpected %v", tc.e.debugString(), tc.set.Name, err)
		case tc.wantErr != "" && (!errors.Is(err, ErrInvalidEntry) || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s in %s: got %v, want ErrInvalidEntry with %q", tc.e.debugString(), tc.set.Name, err, tc.wantErr)
		}
	}
}
