package ipvs

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// procSample is /proc/net/ip_vs as a 6.1 kernel writes it (spacing included) for: a TCP
// service with two real servers listed out of order, one draining; a UDP service with
// persistence and no real server; an SCTP one; an IPv6 one; a firewall-mark service and an
// AH one (not kproxy's kind: left out with their real servers).
const procSample = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  64640001:0050 rr 
  -> 64400A02:1F90      Masq    0      3          12        
  -> 64400A01:1F90      Masq    1      0          0         
UDP  6464000A:0035 rr persistent 1080000 FFFFFFFF
FWM  00000001 rr 
  -> 64400A09:0050      Masq    1      0          0         
SCTP  64640002:0BB8 sh 
  -> 64400A03:0BB8      Masq    1      0          0         
AH  64640003:0000 rr 
  -> 64400A04:0000      Masq    1      0          0         
TCP  [fd00:0100:0000:0000:0000:0000:0000:0001]:01BB rr 
  -> [fd00:0064:0000:0000:0000:0000:000a:0001]:1F90      Masq    1      1          0         
`

func TestParseIPVSTable(t *testing.T) {
	got, err := parseIPVSTable(strings.NewReader(procSample))
	if err != nil {
		t.Fatal(err)
	}
	key := func(proto v1.Protocol, s string) VSKey {
		ap := netip.MustParseAddrPort(s)
		return VSKey{IP: ap.Addr(), Port: ap.Port(), Protocol: proto}
	}
	rs := func(s string, w, active, inactive int) RealServer {
		return RealServer{Addr: netip.MustParseAddrPort(s), Weight: w, ActiveConn: active, InactiveConn: inactive}
	}
	want := map[VSKey][]RealServer{
		key(v1.ProtocolTCP, "100.100.0.1:80"):    {rs("100.64.10.1:8080", 1, 0, 0), rs("100.64.10.2:8080", 0, 3, 12)},
		key(v1.ProtocolUDP, "100.100.0.10:53"):   {},
		key(v1.ProtocolSCTP, "100.100.0.2:3000"): {rs("100.64.10.3:3000", 1, 0, 0)},
		key(v1.ProtocolTCP, "[fd00:100::1]:443"): {rs("[fd00:64::a:1]:8080", 1, 1, 0)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseIPVSTable:\n got %v\nwant %v", got, want)
	}
}

func TestParseIPVSTableEmpty(t *testing.T) {
	header := "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
	got, err := parseIPVSTable(strings.NewReader(header))
	if err != nil || len(got) != 0 {
		t.Errorf("header only: got %v, %v; want an empty table", got, err)
	}
}

func TestParseIPVSTableRejectsGarbage(t *testing.T) {
	header := "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
	for name, body := range map[string]string{
		"short address":       "TCP  646400:0050 rr\n",
		"port not hex":        "TCP  64640001:00Z0 rr\n",
		"port too long":       "TCP  64640001:00500 rr\n",
		"IPv4 in brackets":    "TCP  [100.100.0.1]:0050 rr\n",
		"real server fields":  "TCP  64640001:0050 rr\n  -> 64400A01:1F90 Masq 1 0\n",
		"weight not a number": "TCP  64640001:0050 rr\n  -> 64400A01:1F90 Masq x 0 0\n",
		"service line short":  "TCP\n",
	} {
		if got, err := parseIPVSTable(strings.NewReader(header + body)); err == nil {
			t.Errorf("%s: got %v, want an error", name, got)
		}
	}
}
