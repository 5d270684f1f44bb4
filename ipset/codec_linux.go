package ipset

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// This file holds the two ipset messages netlink v1.3.1 cannot send or read well,
// built from its nl primitives and sent on our own socket in the same namespace:
//
//   - ADD/DEL of a bitmap:port entry: netlink.IpsetAdd always sends IPSET_ATTR_PROTO
//     with a port (defaulting to tcp), and the kernel's bitmap:port policy rejects that
//     attribute (IPSET_ERR_PROTOCOL), so no bitmap:port entry can be added through it.
//   - LIST: netlink.IpsetList has no header-only or names-only mode (so listing set
//     names dumps every entry of every set), and it logs "unknown ipset data attribute"
//     through the standard logger for every set of revision >= 6 (bucketsize, initval:
//     every set the ipset 7.x CLI creates, e.g. kube-proxy's), on every call.

// Kernel attribute numbers not in (or not obvious from) package nl. From
// include/uapi/linux/netfilter/ipset/ip_set.h.
const (
	attrMaxElem = 19 // IPSET_ATTR_MAXELEM (create/header data)
	attrFlags   = 6  // IPSET_ATTR_FLAGS (command level)

	flagListHeader = 1 << 2 // IPSET_FLAG_LIST_HEADER: dump set headers without members

	// Type-specific error codes (IPSET_ERR_TYPE_SPECIFIC + n), which mean different
	// things for bitmap and hash types.
	errTypeSpecific = 4352 // bitmap: IPSET_ERR_BITMAP_RANGE; hash: IPSET_ERR_HASH_FULL
	errHashElemLast = 4357 // hash: ..._HASH_ELEM, _INVALID_PROTO, _MISSING_PROTO, _RANGE*

	errBusy = 4100 // IPSET_ERR_BUSY
)

// newRequest starts an ipset netlink request, as the library does.
func newRequest(cmd, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(cmd|(unix.NFNL_SUBSYS_IPSET<<8), flags)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: uint8(unix.AF_NETLINK), Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)))
	return req
}

// execute sends the request on the handle's raw socket and returns the replies.
func (h *Handle) execute(req *nl.NetlinkRequest) ([][]byte, error) {
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: h.raw}
	return req.Execute(unix.NETLINK_NETFILTER, 0)
}

// addDelPort adds or deletes a bitmap:port entry, with IPSET_FLAG_EXIST semantics
// (no NLM_F_EXCL): adding a present port or deleting an absent one is not an error.
func (h *Handle) addDelPort(cmd int, set string, port uint16) error {
	req := newRequest(cmd, unix.NLM_F_ACK)
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(set)))
	data := nl.NewRtAttr(nl.IPSET_ATTR_DATA|unix.NLA_F_NESTED, nil)
	p := make([]byte, 2)
	binary.BigEndian.PutUint16(p, port)
	data.AddChild(nl.NewRtAttr(nl.IPSET_ATTR_PORT|unix.NLA_F_NET_BYTEORDER, p))
	req.AddData(data)
	_, err := h.execute(req)
	return err
}

// setDump is one set as LIST returns it.
type setDump struct {
	name, typeName string
	family         uint8
	portFrom       uint16
	portTo         uint16
	maxElem        uint32
	entries        []rawEntry
}

// rawEntry is one member as the kernel sends it.
type rawEntry struct {
	ip, ip2     netip.Addr
	cidr, cidr2 uint8
	port        uint16
	hasPort     bool
	proto       uint8
}

// list dumps one set (name != "") or all, with members unless headerOnly. Sets come
// back in the kernel's order; a large set spans several messages, merged here.
func (h *Handle) list(name string, headerOnly bool) ([]*setDump, error) {
	req := newRequest(nl.IPSET_CMD_LIST, unix.NLM_F_ACK|unix.NLM_F_DUMP)
	if name != "" {
		req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(name)))
	}
	if headerOnly {
		req.AddData(&nl.Uint32Attribute{Type: attrFlags | unix.NLA_F_NET_BYTEORDER, Value: flagListHeader})
	}
	msgs, err := h.execute(req)
	if err != nil {
		return nil, err
	}
	var out []*setDump
	byName := map[string]*setDump{}
	for _, m := range msgs {
		if len(m) < nl.SizeofNfgenmsg {
			continue
		}
		d, err := parseSetMessage(m[nl.SizeofNfgenmsg:])
		if err != nil {
			return nil, err
		}
		if prev := byName[d.name]; prev != nil {
			// A continuation of a large set: only its first message carries the header.
			prev.entries = append(prev.entries, d.entries...)
			continue
		}
		byName[d.name] = d
		out = append(out, d)
	}
	return out, nil
}

func parseSetMessage(b []byte) (*setDump, error) {
	d := &setDump{}
	err := walkAttrs(b, func(typ uint16, v []byte) error {
		switch typ {
		case nl.IPSET_ATTR_SETNAME:
			d.name = cString(v)
		case nl.IPSET_ATTR_TYPENAME:
			d.typeName = cString(v)
		case nl.IPSET_ATTR_FAMILY:
			if len(v) > 0 {
				d.family = v[0]
			}
		case nl.IPSET_ATTR_DATA:
			return walkAttrs(v, func(typ uint16, v []byte) error {
				switch {
				case typ == nl.IPSET_ATTR_PORT_FROM && len(v) >= 2:
					d.portFrom = binary.BigEndian.Uint16(v)
				case typ == nl.IPSET_ATTR_PORT_TO && len(v) >= 2:
					d.portTo = binary.BigEndian.Uint16(v)
				case typ == attrMaxElem && len(v) >= 4:
					d.maxElem = binary.BigEndian.Uint32(v)
				}
				return nil
			})
		case nl.IPSET_ATTR_ADT:
			return walkAttrs(v, func(typ uint16, v []byte) error {
				if typ != nl.IPSET_ATTR_DATA {
					return nil
				}
				e, err := parseEntry(v)
				if err != nil {
					return err
				}
				d.entries = append(d.entries, e)
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parse ipset list message: %w", err)
	}
	if d.name == "" {
		return nil, errors.New("parse ipset list message: no set name")
	}
	return d, nil
}

func parseEntry(b []byte) (rawEntry, error) {
	var e rawEntry
	err := walkAttrs(b, func(typ uint16, v []byte) error {
		var err error
		switch typ {
		case nl.IPSET_ATTR_IP:
			e.ip, err = parseAddrAttr(v)
		case nl.IPSET_ATTR_IP2:
			e.ip2, err = parseAddrAttr(v)
		case nl.IPSET_ATTR_CIDR:
			if len(v) > 0 {
				e.cidr = v[0]
			}
		case nl.IPSET_ATTR_CIDR2:
			if len(v) > 0 {
				e.cidr2 = v[0]
			}
		case nl.IPSET_ATTR_PORT:
			if len(v) >= 2 {
				e.port, e.hasPort = binary.BigEndian.Uint16(v), true
			}
		case nl.IPSET_ATTR_PROTO:
			if len(v) > 0 {
				e.proto = v[0]
			}
		}
		return err
	})
	return e, err
}

// parseAddrAttr reads a nested IPSET_ATTR_IPADDR_IPV4/IPV6.
func parseAddrAttr(b []byte) (netip.Addr, error) {
	var a netip.Addr
	err := walkAttrs(b, func(typ uint16, v []byte) error {
		switch {
		case typ == nl.IPSET_ATTR_IPADDR_IPV4 && len(v) == 4:
			a = netip.AddrFrom4([4]byte(v))
		case typ == nl.IPSET_ATTR_IPADDR_IPV6 && len(v) == 16:
			a = netip.AddrFrom16([16]byte(v))
		default:
			return fmt.Errorf("bad address attribute type %d length %d", typ, len(v))
		}
		return nil
	})
	return a, err
}

// walkAttrs calls fn for each netlink attribute in b, with the type's
// NLA_F_NESTED and NLA_F_NET_BYTEORDER flags cleared.
func walkAttrs(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) >= unix.SizeofRtAttr {
		l := int(nl.NativeEndian().Uint16(b[0:2]))
		typ := nl.NativeEndian().Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofRtAttr || l > len(b) {
			return fmt.Errorf("bad attribute length %d (have %d bytes)", l, len(b))
		}
		if err := fn(typ, b[unix.SizeofRtAttr:l]); err != nil {
			return err
		}
		l = (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if l >= len(b) {
			return nil
		}
		b = b[l:]
	}
	return nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// toEntry converts a kernel member of a set of type t to an Entry.
func (r rawEntry) toEntry(t SetType) (Entry, error) {
	var e Entry
	switch t {
	case HashIP:
		e.IP = r.ip
	case HashIPPort, HashIPPortIP, HashIPPortNet:
		e.IP, e.Port, e.Protocol = r.ip, r.port, protocolName(r.proto)
		switch t {
		case HashIPPortIP:
			e.IP2 = r.ip2
		case HashIPPortNet:
			if !r.ip2.IsValid() {
				return Entry{}, errors.New("hash:ip,port,net member without a network")
			}
			e.Net = netip.PrefixFrom(r.ip2, int(r.cidr2))
		}
	case HashNet:
		if !r.ip.IsValid() {
			return Entry{}, errors.New("hash:net member without a network")
		}
		e.Net = netip.PrefixFrom(r.ip, int(r.cidr))
	case BitmapPort:
		e.Port = r.port
	default:
		return Entry{}, fmt.Errorf("unsupported set type %q", t)
	}
	return e.canonical(), nil
}

// errno returns the errno carried by a netlink error, or 0.
func errno(err error) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	var ie nl.IPSetError
	if errors.As(err, &ie) {
		return syscall.Errno(ie)
	}
	return 0
}
