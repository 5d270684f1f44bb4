package iptables

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// masqRules are kube-proxy's masquerade chains, for the tracer cases.
const masqRules = `:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -j MASQUERADE
`

var (
	pod  = netip.MustParseAddr("100.64.1.5")
	node = netip.MustParseAddr("192.0.2.11")
	vip  = netip.MustParseAddr("100.100.0.10")
)

func tcp(src, dst netip.Addr, port int) Packet {
	return Packet{Src: src, Dst: dst, Protocol: ProtocolTCP, DstPort: port}
}

type traceCase struct {
	name    string
	rules   string // restore text
	pkt     Packet
	hook    Hook
	local   []netip.Addr
	want    []Outcome
	wantErr string
}

var traceCases = []traceCase{
	{
		name: "no rules: accepted untouched",
		pkt:  tcp(pod, vip, 80),
		hook: HookPrerouting,
		want: []Outcome{{Verdict: VerdictAccept}},
	},
	{
		name: "random statistic: every endpoint, masquerade only where marked",
		rules: "*nat\n" + masqRules + `:KUBE-SVC - [0:0]
:KUBE-SEP-1 - [0:0]
:KUBE-SEP-2 - [0:0]
-A PREROUTING -d 100.100.0.10 -p tcp --dport 80 -j KUBE-SVC
-A KUBE-SVC -m statistic --mode random --probability 0.5 -j KUBE-SEP-1
-A KUBE-SVC -j KUBE-SEP-2
-A KUBE-SEP-1 -s 100.64.1.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-1 -p tcp -j DNAT --to-destination 100.64.1.5:8080
-A KUBE-SEP-2 -p tcp -j DNAT --to-destination 100.64.2.7:8080
COMMIT
`,
		pkt:  tcp(pod, vip, 80),
		hook: HookPrerouting,
		want: []Outcome{
			{DNAT: "100.64.1.5:8080", Masquerade: true, Verdict: VerdictAccept},
			{DNAT: "100.64.2.7:8080", Verdict: VerdictAccept},
		},
	},
	{
		name: "probability 1 always matches, 0 never",
		rules: `*nat
-A OUTPUT -m statistic --mode random --probability 0 -p tcp -j DNAT --to-destination 10.0.0.1:1
-A OUTPUT -m statistic --mode random --probability 1 -p tcp -j DNAT --to-destination 10.0.0.2:2
-A OUTPUT -p tcp -j DNAT --to-destination 10.0.0.3:3
COMMIT
`,
		pkt:  tcp(node, vip, 80),
		hook: HookOutput,
		want: []Outcome{{DNAT: "10.0.0.2:2", Verdict: VerdictAccept}},
	},
	{
		name: "goto: RETURN goes back past the chain that went to it",
		rules: `*nat
:KUBE-A - [0:0]
:KUBE-B - [0:0]
-A PREROUTING -j KUBE-A
-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1:1
-A KUBE-A -g KUBE-B
-A KUBE-A -p tcp -j DNAT --to-destination 10.0.0.2:2
-A KUBE-B -j RETURN
-A KUBE-B -p tcp -j DNAT --to-destination 10.0.0.3:3
COMMIT
`,
		pkt:  tcp(pod, vip, 80),
		hook: HookPrerouting,
		want: []Outcome{{DNAT: "10.0.0.1:1", Verdict: VerdictAccept}},
	},
	{
		name: "filter REJECT after nat, on a ported match with a negation",
		rules: `*filter
:KUBE-SERVICES - [0:0]
-A FORWARD -m conntrack --ctstate NEW -j KUBE-SERVICES
-A KUBE-SERVICES -d 100.100.0.10 -p tcp -m tcp ! --dport 443 -j REJECT
COMMIT
`,
		pkt:  tcp(pod, vip, 80),
		hook: HookPrerouting,
		want: []Outcome{{Verdict: VerdictReject}},
	},
	{
		name: "DNAT to a local address goes to INPUT, not POSTROUTING",
		rules: "*nat\n" + masqRules + `-A PREROUTING -j KUBE-MARK-MASQ
-A PREROUTING -p tcp -j DNAT --to-destination 192.0.2.11:10250
COMMIT
*filter
-A FORWARD -j DROP
COMMIT
`,
		pkt:   tcp(pod, vip, 80),
		hook:  HookPrerouting,
		local: []netip.Addr{node},
		want:  []Outcome{{DNAT: "192.0.2.11:10250", Verdict: VerdictAccept}},
	},
	{
		name: "addrtype LOCAL, mark match, policy DROP",
		rules: `*nat
:KUBE-NODEPORTS - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -j MARK --set-xmark 0x10/0xff
COMMIT
*filter
:INPUT DROP [0:0]
-A INPUT -m mark --mark 0x10/0x10 -j ACCEPT
COMMIT
`,
		pkt:   tcp(pod, node, 30080),
		hook:  HookPrerouting,
		local: []netip.Addr{node},
		want:  []Outcome{{Verdict: VerdictAccept}},
	},
	{
		name:  "policy DROP applies when nothing accepts",
		rules: "*filter\n:OUTPUT DROP [0:0]\n-A OUTPUT -d 100.100.0.99 -j ACCEPT\nCOMMIT\n",
		pkt:   tcp(node, vip, 80),
		hook:  HookOutput,
		want:  []Outcome{{Verdict: VerdictDrop}},
	},
	{
		name: "recent --rcheck may match",
		rules: `*nat
-A OUTPUT -m recent --name X --rcheck --seconds 10 --reap -p tcp -j DNAT --to-destination 10.0.0.1:1
-A OUTPUT -m recent --name X --set -p tcp -j DNAT --to-destination 10.0.0.2:2
COMMIT
`,
		pkt:  tcp(node, vip, 80),
		hook: HookOutput,
		want: []Outcome{{DNAT: "10.0.0.1:1", Verdict: VerdictAccept}, {DNAT: "10.0.0.2:2", Verdict: VerdictAccept}},
	},
	{
		name:    "-o is not modelled",
		rules:   "*nat\n-A PREROUTING -d 100.100.0.99 -o eth0 -j ACCEPT\nCOMMIT\n",
		pkt:     tcp(pod, vip, 80),
		hook:    HookPrerouting,
		wantErr: "does not model -o",
	},
	{
		name:    "--sport is not modelled",
		rules:   "*nat\n-A PREROUTING -p tcp --sport 1000 -j ACCEPT\nCOMMIT\n",
		pkt:     tcp(pod, vip, 80),
		hook:    HookPrerouting,
		wantErr: "does not model --sport",
	},
	{
		name:    "addrtype other than LOCAL is not modelled",
		rules:   "*nat\n-A OUTPUT -m addrtype --dst-type UNICAST -j ACCEPT\nCOMMIT\n",
		pkt:     tcp(node, vip, 80),
		hook:    HookOutput,
		wantErr: "only models addrtype LOCAL",
	},
	{
		name:    "-i needs the packet's interface",
		rules:   "*nat\n-A PREROUTING -i eth0 -j ACCEPT\nCOMMIT\n",
		pkt:     tcp(pod, vip, 80),
		hook:    HookPrerouting,
		wantErr: "no InIface",
	},
	{
		name:    "a loop between chains",
		rules:   "*nat\n:KUBE-A - [0:0]\n-A KUBE-A -j KUBE-A\n-A OUTPUT -j KUBE-A\nCOMMIT\n",
		pkt:     tcp(node, vip, 80),
		hook:    HookOutput,
		wantErr: "loop",
	},
	{
		name:    "the mangle table is not modelled",
		rules:   "*mangle\n-A PREROUTING -j ACCEPT\nCOMMIT\n",
		pkt:     tcp(pod, vip, 80),
		hook:    HookPrerouting,
		wantErr: "mangle",
	},
	{
		name: "-i on a packet the node sends: never matches, ! -i always does",
		rules: "*nat\n" + masqRules + `-A OUTPUT -i cni0 -j KUBE-MARK-MASQ
-A OUTPUT ! -i eth0 -p tcp -j DNAT --to-destination 100.64.2.7:8080
COMMIT
`,
		pkt:  tcp(node, vip, 80),
		hook: HookOutput,
		want: []Outcome{{DNAT: "100.64.2.7:8080", Verdict: VerdictAccept}},
	},
	{
		name:  "-i on an arriving packet: matched against InIface, + is a prefix",
		rules: "*filter\n-A FORWARD -i veth+ -j DROP\nCOMMIT\n",
		pkt:   Packet{Src: pod, Dst: vip, Protocol: ProtocolTCP, DstPort: 80, InIface: "veth12"},
		hook:  HookPrerouting,
		want:  []Outcome{{Verdict: VerdictDrop}},
	},
	{
		name:  "the node's packet to its own address comes back through filter INPUT",
		rules: "*filter\n-A INPUT -p tcp --dport 30080 -j REJECT\nCOMMIT\n",
		pkt:   tcp(node, node, 30080),
		hook:  HookOutput,
		local: []netip.Addr{node},
		want:  []Outcome{{Verdict: VerdictReject}},
	},
	{
		name:  "the node's packet to another address does not",
		rules: "*filter\n-A INPUT -p tcp --dport 30080 -j REJECT\nCOMMIT\n",
		pkt:   tcp(node, vip, 30080),
		hook:  HookOutput,
		local: []netip.Addr{node},
		want:  []Outcome{{Verdict: VerdictAccept}},
	},
}

func TestTrace(t *testing.T) {
	for _, tc := range traceCases {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFake(IPv4)
			if tc.rules != "" {
				if err := f.Restore(context.Background(), []byte(tc.rules)); err != nil {
					t.Fatalf("restore: %v", err)
				}
			}
			got, err := Trace(f, tc.pkt, tc.hook, tc.local)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Trace error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Trace: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
		})
	}
}
