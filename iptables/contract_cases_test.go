package iptables

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// restoreCase is one restore input with the kernel's answer: the line it rejects it at (0 when
// it accepts it) and the KUBE- chains of the nat and filter tables afterwards (kubeState
// form). The same table runs against the Fake (fake_test.go) and against the kernel in a fresh
// network namespace (contract_netns_test.go, build tag netns): the expectations were taken
// from iptables 1.8.9 with the nf_tables backend.
type restoreCase struct {
	name     string
	setup    string // restored first, must be accepted
	input    string
	wantLine int
	want     string
}

const contractSetup = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-A - [0:0]
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A
-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 100.64.1.10:8080
COMMIT
`

// setupChains is what contractSetup leaves, in kubeState form.
const setupChains = `:KUBE-SEP-A
-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 100.64.1.10:8080
:KUBE-SERVICES
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
:KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A
`

const contractSetupState = "*nat\n" + setupChains + "*filter\n"

var restoreCases = []restoreCase{
	{
		name: "service chains as kube-proxy writes them",
		input: `*filter
:KUBE-SERVICES - [0:0]
-A KUBE-SERVICES -m comment --comment "ns1/svc2:p53 has no endpoints" -m udp -p udp -d 100.100.0.11 --dport 53 -j REJECT
-A KUBE-SERVICES -m conntrack --ctstate ESTABLISHED,NEW -m comment --comment "kubernetes service portals" -j RETURN
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-SVC-AAAA - [0:0]
:KUBE-SEP-BBBB - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 100.100.0.10 --dport 80 -j KUBE-SVC-AAAA
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-AAAA -m comment --comment "ns1/svc1:p80 cluster IP" ! -s 100.64.0.0/16 -d 100.100.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-AAAA -m comment --comment "ns1/svc1:p80 -> 100.64.1.10:8080" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-BBBB
-A KUBE-SVC-AAAA -m comment --comment ns1/svc1:p80 -j KUBE-SEP-BBBB
-A KUBE-SEP-BBBB -m comment --comment ns1/svc1:p80 -s 100.64.1.10/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-BBBB -m comment --comment ns1/svc1:p80 -p tcp -m tcp -j DNAT --to-destination 100.64.1.10:8080
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
COMMIT
`,
		want: `*nat
:KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
:KUBE-NODEPORTS
:KUBE-POSTROUTING
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
:KUBE-SEP-BBBB
-A KUBE-SEP-BBBB -s 100.64.1.10/32 -m comment --comment "ns1/svc1:p80" -j KUBE-MARK-MASQ
-A KUBE-SEP-BBBB -p tcp -m comment --comment "ns1/svc1:p80" -m tcp -j DNAT --to-destination 100.64.1.10:8080
:KUBE-SERVICES
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAAA
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
:KUBE-SVC-AAAA
-A KUBE-SVC-AAAA ! -s 100.64.0.0/16 -d 100.100.0.10/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-AAAA -m comment --comment "ns1/svc1:p80 -> 100.64.1.10:8080" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-BBBB
-A KUBE-SVC-AAAA -m comment --comment "ns1/svc1:p80" -j KUBE-SEP-BBBB
*filter
:KUBE-SERVICES
-A KUBE-SERVICES -d 100.100.0.11/32 -p udp -m comment --comment "ns1/svc2:p53 has no endpoints" -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable
-A KUBE-SERVICES -m conntrack --ctstate NEW,ESTABLISHED -m comment --comment "kubernetes service portals" -j RETURN
`,
	},
	{
		name:  "canonical forms of marks, protocols, ports, addresses and probabilities",
		setup: contractSetup,
		input: `*nat
:KUBE-X - [0:0]
-A KUBE-X -j MARK --set-mark 0x4000
-A KUBE-X -j MARK --and-mark 0x4000
-A KUBE-X -j MARK --set-xmark 0x1/0x3
-A KUBE-X -m mark --mark 7 -j RETURN
-A KUBE-X -p UDP --dport 53 -j RETURN
-A KUBE-X -p 6 -m tcp --dport 80:90 -j RETURN
-A KUBE-X -p sctp -m sctp ! --dport 99 -j RETURN
-A KUBE-X -p all -s 0.0.0.0/0 -d 10.1.2.3/16 -j RETURN
-A KUBE-X -m statistic --mode random --probability 0.5000000000 -j RETURN
-A KUBE-X -m statistic --mode random --probability 0.2000000000 -j RETURN
-A KUBE-X -m statistic --mode random --probability 0.1428571429 -j RETURN
-A KUBE-X -m comment --comment "a \"q\" b" -m comment --comment plain_-x -j RETURN
-A KUBE-X -m addrtype ! --dst-type LOCAL --src-type LOCAL -j RETURN
-A KUBE-X -m recent --name KUBE-SEP-A --rcheck --seconds 10800 --reap -j RETURN
-A KUBE-X -m recent --set --name KUBE-SEP-A -j RETURN
-A KUBE-X -p tcp -j DNAT --to-destination 100.64.1.10:80
-A KUBE-X -j DNAT --to-destination 100.64.1.10
-A KUBE-X -p tcp -j MASQUERADE --random-fully --to-ports 1000-2000
-A KUBE-X -g KUBE-SVC-A
-A KUBE-X
COMMIT
`,
		want: "*nat\n" + setupChains + `:KUBE-X
-A KUBE-X -j MARK --set-xmark 0x4000/0xffffffff
-A KUBE-X -j MARK --set-xmark 0x0/0xffffbfff
-A KUBE-X -j MARK --set-xmark 0x1/0x3
-A KUBE-X -m mark --mark 0x7 -j RETURN
-A KUBE-X -p udp -m udp --dport 53 -j RETURN
-A KUBE-X -p tcp -m tcp --dport 80:90 -j RETURN
-A KUBE-X -p sctp -m sctp ! --dport 99 -j RETURN
-A KUBE-X -d 10.1.0.0/16 -j RETURN
-A KUBE-X -m statistic --mode random --probability 0.50000000000 -j RETURN
-A KUBE-X -m statistic --mode random --probability 0.20000000019 -j RETURN
-A KUBE-X -m statistic --mode random --probability 0.14285714272 -j RETURN
-A KUBE-X -m comment --comment "a \"q\" b" -m comment --comment plain_-x -j RETURN
-A KUBE-X -m addrtype --src-type LOCAL ! --dst-type LOCAL -j RETURN
-A KUBE-X -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j RETURN
-A KUBE-X -m recent --set --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j RETURN
-A KUBE-X -p tcp -j DNAT --to-destination 100.64.1.10:80
-A KUBE-X -j DNAT --to-destination 100.64.1.10
-A KUBE-X -p tcp -j MASQUERADE --to-ports 1000-2000 --random-fully
-A KUBE-X -g KUBE-SVC-A
-A KUBE-X
*filter
`,
	},
	{
		name:     "jump to a missing chain is rejected at COMMIT",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-X - [0:0]\n-A KUBE-X -j KUBE-MISSING\nCOMMIT\n",
		wantLine: 4,
		want:     contractSetupState,
	},
	{
		name:     "jump to a chain declared after the rule",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-X - [0:0]\n-A KUBE-X -j KUBE-Y\n:KUBE-Y - [0:0]\nCOMMIT\n",
		wantLine: 5,
		want:     contractSetupState,
	},
	{
		name:     "delete a chain that is still referenced",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n-X KUBE-SVC-A\nCOMMIT\n",
		wantLine: 3,
		want:     contractSetupState,
	},
	{
		name:     "delete a chain that still has rules",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-Z - [0:0]\n-A KUBE-Z -j RETURN\n-X KUBE-Z\nCOMMIT\n",
		wantLine: 4,
		want:     contractSetupState,
	},
	{
		name:     "delete a chain before flushing the chain that jumps to it",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-A - [0:0]\n-X KUBE-SVC-A\n:KUBE-SERVICES - [0:0]\n-X KUBE-SEP-A\nCOMMIT\n",
		wantLine: 4,
		want:     contractSetupState,
	},
	{
		name:     "delete a chain that does not exist",
		setup:    contractSetup,
		input:    "*nat\n-X KUBE-NOTHERE\nCOMMIT\n",
		wantLine: 2,
		want:     contractSetupState,
	},
	{
		name:     "delete a built-in chain",
		input:    "*nat\n-X PREROUTING\nCOMMIT\n",
		wantLine: 2,
		want:     "*nat\n*filter\n",
	},
	{
		name:  "flush the referrers, then delete",
		setup: contractSetup,
		input: "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SEP-A - [0:0]\n" +
			"-A KUBE-SERVICES -m comment --comment \"nothing left\" -j RETURN\n-X KUBE-SVC-A\n-X KUBE-SEP-A\nCOMMIT\n",
		want: "*nat\n:KUBE-SERVICES\n-A KUBE-SERVICES -m comment --comment \"nothing left\" -j RETURN\n*filter\n",
	},
	{
		name:  "flush and rewrite a chain, leave the others",
		setup: contractSetup,
		input: "*nat\n:KUBE-SEP-A - [0:0]\n-A KUBE-SEP-A -p tcp -j DNAT --to-destination 100.64.1.11:8080\nCOMMIT\n",
		want: strings.Replace(contractSetupState, "-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 100.64.1.10:8080",
			"-A KUBE-SEP-A -p tcp -j DNAT --to-destination 100.64.1.11:8080", 1),
	},
	{
		name:  "insert, delete, flush and new chain commands",
		setup: contractSetup,
		input: "*nat\n-N KUBE-Y\n-I KUBE-Y -j ACCEPT\n-I KUBE-Y 2 -j MARK --or-mark 1\n-A KUBE-Y -j RETURN\n" +
			"-D KUBE-Y -j MARK --or-mark 1\n-F KUBE-SEP-A\n-A KUBE-SEP-A -j KUBE-Y\nCOMMIT\n",
		want: `*nat
:KUBE-SEP-A
-A KUBE-SEP-A -j KUBE-Y
:KUBE-SERVICES
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
:KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A
:KUBE-Y
-A KUBE-Y -j ACCEPT
-A KUBE-Y -j RETURN
*filter
`,
	},
	{
		name:  "insert at the head of a chain the restore does not declare",
		setup: contractSetup,
		input: "*nat\n-I KUBE-SERVICES 1 -j KUBE-SVC-A\n-I KUBE-SERVICES 1 -j KUBE-SEP-A\nCOMMIT\n",
		want: `*nat
:KUBE-SEP-A
-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 100.64.1.10:8080
:KUBE-SERVICES
-A KUBE-SERVICES -j KUBE-SEP-A
-A KUBE-SERVICES -j KUBE-SVC-A
-A KUBE-SERVICES -d 100.100.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
:KUBE-SVC-A
-A KUBE-SVC-A -j KUBE-SEP-A
*filter
`,
	},
	{
		name:     "new chain that exists",
		setup:    contractSetup,
		input:    "*nat\n-N KUBE-SVC-A\nCOMMIT\n",
		wantLine: 2,
		want:     contractSetupState,
	},
	{
		name:     "append to an undeclared chain",
		setup:    contractSetup,
		input:    "*nat\n-A KUBE-NOPE -j RETURN\nCOMMIT\n",
		wantLine: 2,
		want:     contractSetupState,
	},
	{
		name:     "garbage line",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-X - [0:0]\nfoo bar\nCOMMIT\n",
		wantLine: 3,
		want:     contractSetupState,
	},
	{
		name:     "unknown option",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -j RETURN --bogus\nCOMMIT\n",
		wantLine: 3,
		want:     contractSetupState,
	},
	{
		name:     "unknown match",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -m nosuchmatch -j RETURN\nCOMMIT\n",
		wantLine: 3,
		want:     contractSetupState,
	},
	{
		name:     "tcp match without -p tcp",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -m tcp --dport 80 -j RETURN\nCOMMIT\n",
		wantLine: 3,
		want:     contractSetupState,
	},
	{
		name:     "port out of range",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -p tcp -m tcp --dport 99999 -j RETURN\nCOMMIT\n",
		wantLine: 3,
		want:     contractSetupState,
	},
	{
		name:     "IPv6 address in an IPv4 table",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -d 2001:db8:2::10 -j RETURN\nCOMMIT\n",
		wantLine: 3,
		want:     contractSetupState,
	},
	{
		name:     "DROP in the nat table",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -j DROP\nCOMMIT\n",
		wantLine: 3,
		want:     contractSetupState,
	},
	{
		name:     "DNAT without a destination",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -j DNAT\nCOMMIT\n",
		wantLine: 3,
		want:     contractSetupState,
	},
	{
		name:     "chain name too long",
		input:    "*nat\n:KUBE-SVC-ABCDEFGHIJKLMNOPQRST - [0:0]\nCOMMIT\n",
		wantLine: 2,
		want:     "*nat\n*filter\n",
	},
	{
		name:     "unknown table",
		input:    "*bogus\nCOMMIT\n",
		wantLine: 1,
		want:     "*nat\n*filter\n",
	},
	{
		name:     "missing COMMIT",
		setup:    contractSetup,
		input:    "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -j RETURN\n",
		wantLine: 4,
		want:     contractSetupState,
	},
	{
		name:     "each table section commits on its own",
		input:    "*filter\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n*nat\n:KUBE-X - [0:0]\n-A KUBE-X -j KUBE-MISSING\nCOMMIT\n",
		wantLine: 8,
		want:     "*nat\n*filter\n:KUBE-SERVICES\n-A KUBE-SERVICES -j RETURN\n",
	},
	{
		name:     "a table section without COMMIT before the next",
		input:    "*nat\n:KUBE-X - [0:0]\n*filter\nCOMMIT\n",
		wantLine: 3,
		want:     "*nat\n*filter\n",
	},
	{
		name:     "a rule before any table",
		input:    ":KUBE-X - [0:0]\n*nat\nCOMMIT\n",
		wantLine: 1,
		want:     "*nat\n*filter\n",
	},
}

// kubeState returns the KUBE- chains of the nat and filter tables as "*table", ":CHAIN" and
// "-A CHAIN rule" lines, chains sorted: what the contract compares.
func kubeState(ctx context.Context, t *testing.T, ipt Interface) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []Table{TableNAT, TableFilter} {
		data, err := ipt.Save(ctx, table)
		if err != nil {
			t.Fatalf("save %s: %v", table, err)
		}
		chains, err := ParseSave(data, table)
		if err != nil {
			t.Fatalf("parse save %s: %v", table, err)
		}
		b.WriteString("*" + string(table) + "\n")
		var names []Chain
		for c := range chains {
			if strings.HasPrefix(string(c), "KUBE-") {
				names = append(names, c)
			}
		}
		slices.Sort(names)
		for _, c := range names {
			b.WriteString(":" + string(c) + "\n")
			for _, r := range chains[c] {
				b.WriteString(strings.TrimSpace("-A "+string(c)+" "+r) + "\n")
			}
		}
	}
	return b.String()
}

// ensureStep is one EnsureChain (when args is nil) or EnsureRule call with its expected answer.
type ensureStep struct {
	pos         RulePosition
	table       Table
	chain       Chain
	args        []string
	wantExisted bool
}

// ensureSteps exercise EnsureChain and EnsureRule; ensureState is the KUBE- state they leave.
var ensureSteps = []ensureStep{
	{table: TableNAT, chain: ChainKubeServices},
	{table: TableNAT, chain: ChainKubeServices, wantExisted: true},
	{table: TableNAT, chain: ChainKubePostrouting},
	{table: TableFilter, chain: ChainKubeServices},
	{pos: Prepend, table: TableNAT, chain: ChainKubePostrouting, args: []string{"-j", "RETURN"}},
	{pos: Prepend, table: TableNAT, chain: ChainKubePostrouting, args: []string{"-m", "comment", "--comment", "first", "-j", "RETURN"}},
	{pos: Append, table: TableNAT, chain: ChainKubePostrouting, args: []string{"-j", "RETURN"}, wantExisted: true},
	{pos: Append, table: TableNAT, chain: ChainKubeServices, args: []string{"-p", "tcp", "--dport", "80", "-j", "KUBE-POSTROUTING"}},
	{pos: Append, table: TableNAT, chain: ChainKubeServices, args: []string{"-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "KUBE-POSTROUTING"}, wantExisted: true},
	{pos: Prepend, table: TableFilter, chain: ChainKubeServices, args: []string{"-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "kubernetes service portals", "-j", "ACCEPT"}},
}

const ensureState = `*nat
:KUBE-POSTROUTING
-A KUBE-POSTROUTING -m comment --comment first -j RETURN
-A KUBE-POSTROUTING -j RETURN
:KUBE-SERVICES
-A KUBE-SERVICES -p tcp -m tcp --dport 80 -j KUBE-POSTROUTING
*filter
:KUBE-SERVICES
-A KUBE-SERVICES -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j ACCEPT
`

// runEnsureSteps runs ensureSteps against ipt and checks each answer.
func runEnsureSteps(ctx context.Context, t *testing.T, ipt Interface) {
	t.Helper()
	for i, s := range ensureSteps {
		var existed bool
		var err error
		if s.args == nil {
			existed, err = ipt.EnsureChain(ctx, s.table, s.chain)
		} else {
			existed, err = ipt.EnsureRule(ctx, s.pos, s.table, s.chain, s.args...)
		}
		if err != nil {
			t.Fatalf("step %d (%s %s %v): %v", i, s.table, s.chain, s.args, err)
		}
		if existed != s.wantExisted {
			t.Errorf("step %d (%s %s %v): existed = %v, want %v", i, s.table, s.chain, s.args, existed, s.wantExisted)
		}
	}
}
