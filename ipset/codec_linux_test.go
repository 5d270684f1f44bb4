package ipset

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func TestAttributeNumbers(t *testing.T) {
	// codec_linux.go names these itself; they must agree with netlink's and the kernel's.
	if nl.IPSET_ATTR_MAXELEM != attrMaxElem || nl.IPSET_ATTR_IP2 != 20 || nl.IPSET_ATTR_CIDR2 != 21 {
		t.Errorf("attribute numbers: MAXELEM %d (want %d), IP2 %d, CIDR2 %d",
			nl.IPSET_ATTR_MAXELEM, attrMaxElem, nl.IPSET_ATTR_IP2, nl.IPSET_ATTR_CIDR2)
	}
}

func TestParseSetMessage(t *testing.T) {
	be16 := func(v uint16) []byte { b := make([]byte, 2); binary.BigEndian.PutUint16(b, v); return b }
	be32 := func(v uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, v); return b }
	addr := func(typ int, a string) *nl.RtAttr {
		ip := nl.NewRtAttr(typ|unix.NLA_F_NESTED, nil)
		ip.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_IPADDR_IPV4|unix.NLA_F_NET_BYTEORDER, netip.MustParseAddr(a).AsSlice()))
		return ip
	}
	var msg []byte
	for _, a := range []nl.NetlinkRequestData{
		nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(7)),
		nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated("KPT-X")),
		nl.NewRtAttr(nl.IPSET_ATTR_TYPENAME, nl.ZeroTerminated("hash:ip,port,net")),
		nl.NewRtAttr(nl.IPSET_ATTR_FAMILY, nl.Uint8Attr(unix.AF_INET)),
		func() *nl.RtAttr {
			d := nl.NewRtAttr(nl.IPSET_ATTR_DATA|unix.NLA_F_NESTED, nil)
			d.AddChild(nl.NewRtAttr(attrMaxElem|unix.NLA_F_NET_BYTEORDER, be32(4096)))
			d.AddChild(nl.NewRtAttr(33|unix.NLA_F_NET_BYTEORDER, be32(0xdeadbeef))) // unknown: ignored
			return d
		}(),
		func() *nl.RtAttr {
			adt := nl.NewRtAttr(nl.IPSET_ATTR_ADT|unix.NLA_F_NESTED, nil)
			e := nl.NewRtAttr(nl.IPSET_ATTR_DATA|unix.NLA_F_NESTED, nil)
			e.AddChild(addr(nl.IPSET_ATTR_IP, "198.51.100.7"))
			e.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_PORT|unix.NLA_F_NET_BYTEORDER, be16(80)))
			e.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_PROTO, nl.Uint8Attr(17)))
			e.AddChild(addr(nl.IPSET_ATTR_IP2, "203.0.113.0"))
			e.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_CIDR2, nl.Uint8Attr(24)))
			adt.AddChild(e)
			return adt
		}(),
	} {
		msg = append(msg, a.Serialize()...)
	}
	d, err := parseSetMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.toSet()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Set{Name: "KPT-X", Type: HashIPPortNet, Family: FamilyIPv4, MaxElem: 4096}); s != want {
		t.Errorf("set = %+v, want %+v", s, want)
	}
	var got []string
	for _, r := range d.entries {
		e, err := r.toEntry(HashIPPortNet)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.String())
	}
	if diff := cmp.Diff([]string{"198.51.100.7,udp:80,203.0.113.0/24"}, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}

	if _, err := parseSetMessage(msg[:len(msg)-3]); err == nil {
		t.Error("a truncated message parsed without error")
	}
	if _, err := parseSetMessage(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(7)).Serialize()); err == nil {
		t.Error("a message without a set name parsed without error")
	}
}
