package ipvs

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"

	v1 "k8s.io/api/core/v1"
)

// parseIPVSTable reads the text of /proc/net/ip_vs (what `ipvsadm -Ln` prints, in hex): the
// real servers of every virtual server, keyed like ListRealServers and sorted the same way.
// A virtual server with no real servers has an empty, non-nil list. Firewall-mark services
// and protocols other than TCP, UDP and SCTP are left out with their real servers, as
// ListVirtualServers leaves them out. The kernel writes (ip_vs_ctl.c, ip_vs_info_seq_show):
//
//	IP Virtual Server version 1.2.1 (size=4096)
//	Prot LocalAddress:Port Scheduler Flags
//	  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
//	TCP  0A600001:01BB rr
//	  -> 0AF40001:1F90      Masq    1      0          0
//	UDP  [2001:0db8:0000:0000:0000:0000:0000:000a]:0035 rr persistent 10800 FFFFFFFF
//	FWM  00000001 rr
func parseIPVSTable(r io.Reader) (map[VSKey][]RealServer, error) {
	out := map[VSKey][]RealServer{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var cur VSKey
	inService := false // the last service line was one of ours: its real servers follow
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if n <= 3 { // the three header lines
			continue
		}
		f := bytes.Fields(line)
		if len(f) == 0 {
			continue
		}
		if string(f[0]) != "->" {
			if inService {
				sortRealServers(out[cur])
			}
			key, ok, err := parseProcService(f)
			if err != nil {
				return nil, fmt.Errorf("line %d %q: %w", n, line, err)
			}
			cur, inService = key, ok
			if ok {
				out[key] = []RealServer{}
			}
			continue
		}
		if !inService {
			continue
		}
		rs, err := parseProcRealServer(f)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n, line, err)
		}
		out[cur] = append(out[cur], rs)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if inService {
		sortRealServers(out[cur])
	}
	return out, nil
}

func sortRealServers(rss []RealServer) {
	slices.SortFunc(rss, func(a, b RealServer) int { return a.Addr.Compare(b.Addr) })
}

// parseProcService parses "TCP  0A600001:01BB rr ..." (ok false for "FWM ..." and for other
// protocols).
func parseProcService(f [][]byte) (VSKey, bool, error) {
	if len(f) < 2 {
		return VSKey{}, false, fmt.Errorf("want a protocol and an address")
	}
	var proto v1.Protocol
	switch string(f[0]) {
	case "TCP":
		proto = v1.ProtocolTCP
	case "UDP":
		proto = v1.ProtocolUDP
	case "SCTP":
		proto = v1.ProtocolSCTP
	default:
		return VSKey{}, false, nil
	}
	ap, err := parseProcAddrPort(f[1])
	if err != nil {
		return VSKey{}, false, err
	}
	return VSKey{IP: ap.Addr(), Port: ap.Port(), Protocol: proto}, true, nil
}

// parseProcRealServer parses "-> 0AF40001:1F90 Masq 1 0 0".
func parseProcRealServer(f [][]byte) (RealServer, error) {
	if len(f) != 6 {
		return RealServer{}, fmt.Errorf("want 6 fields, have %d", len(f))
	}
	ap, err := parseProcAddrPort(f[1])
	if err != nil {
		return RealServer{}, err
	}
	var nums [3]int
	for i, s := range f[3:] {
		if nums[i], err = strconv.Atoi(string(s)); err != nil {
			return RealServer{}, err
		}
	}
	return RealServer{Addr: ap, Weight: nums[0], ActiveConn: nums[1], InactiveConn: nums[2]}, nil
}

// parseProcAddrPort parses "0A600001:01BB" (IPv4 and port in hex) and
// "[2001:0db8:...:000a]:0035" (IPv6 written out, port in hex).
func parseProcAddrPort(b []byte) (netip.AddrPort, error) {
	i := bytes.LastIndexByte(b, ':')
	if i < 0 || len(b)-i-1 != 4 {
		return netip.AddrPort{}, fmt.Errorf("address %q: want ADDR:PORT, the port in 4 hex digits", b)
	}
	port, err := strconv.ParseUint(string(b[i+1:]), 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", b, err)
	}
	host := b[:i]
	var ip netip.Addr
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		if ip, err = netip.ParseAddr(string(host[1 : len(host)-1])); err != nil || !ip.Is6() {
			return netip.AddrPort{}, fmt.Errorf("address %q: not an IPv6 address", b)
		}
	} else {
		var a [4]byte
		if len(host) != 8 {
			return netip.AddrPort{}, fmt.Errorf("address %q: want 8 hex digits", b)
		}
		if _, err := hex.Decode(a[:], host); err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w", b, err)
		}
		ip = netip.AddrFrom4(a)
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}
