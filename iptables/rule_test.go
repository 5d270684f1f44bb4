package iptables

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The kernel's canonical forms are checked against iptables-save by the contract tests
// (restoreCases); these cover what the contract table does not: IPv6, and rejections.
func TestCanonicalRule(t *testing.T) {
	cases := []struct {
		name  string
		fam   Family
		table Table
		args  string
		want  string
	}{
		{
			name: "kube-proxy service jump in upstream argument order",
			args: `-m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O`,
			want: `-d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O`,
		},
		{
			name: "interfaces between addresses and protocol",
			args: `-p tcp -o eth0 -i lo ! -d 10.0.0.0/8 -s 1.2.3.4/24 -j ACCEPT`,
			want: `-s 1.2.3.0/24 ! -d 10.0.0.0/8 -i lo -o eth0 -p tcp -j ACCEPT`,
		},
		{
			name:  "IPv6 addresses, DNAT and REJECT default",
			fam:   IPv6,
			table: TableNAT,
			args:  `-d 2001:db8:2::10 -p tcp -j DNAT --to-destination [2001:db8:1::5]:8080`,
			want:  `-d 2001:db8:2::10/128 -p tcp -j DNAT --to-destination [2001:db8:1::5]:8080`,
		},
		{
			name:  "IPv6 REJECT default",
			fam:   IPv6,
			table: TableFilter,
			args:  `-p udp --dport 53 -j REJECT`,
			want:  `-p udp -m udp --dport 53 -j REJECT --reject-with icmp6-port-unreachable`,
		},
		{
			name:  "IPv6 recent mask",
			fam:   IPv6,
			table: TableNAT,
			args:  `-m recent --name X --set`,
			want:  `-m recent --set --name X --mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff --rsource`,
		},
		{
			name: "statistic nth and a sport range",
			args: `-p tcp --sport 1000: -m statistic --mode nth --every 3 -j RETURN`,
			want: `-p tcp -m tcp --sport 1000:65535 -m statistic --mode nth --every 3 --packet 0 -j RETURN`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			table := tc.table
			if table == "" {
				table = TableNAT
			}
			args, err := splitArgs(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			got, err := CanonicalRule(tc.fam, table, args...)
			if err != nil {
				t.Fatalf("CanonicalRule: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// Canonical text is a fixed point.
			args2, _ := splitArgs(got)
			if again, err := CanonicalRule(tc.fam, table, args2...); err != nil || again != got {
				t.Errorf("canonical form is not stable: %q, %v", again, err)
			}
		})
	}
}

func TestCanonicalRuleErrors(t *testing.T) {
	cases := []struct {
		name    string
		table   Table
		args    string
		wantErr string
	}{
		{"stray argument", TableNAT, `-j RETURN foo`, "bad argument"},
		{"double negation", TableNAT, `! ! -s 1.2.3.4 -j RETURN`, "multiple consecutive !"},
		{"trailing negation", TableNAT, `-j RETURN !`, "! at the end"},
		{"two targets", TableNAT, `-j RETURN -j ACCEPT`, "multiple -j"},
		{"missing value", TableNAT, `-s`, "requires an argument"},
		{"unknown protocol", TableNAT, `-p foo -j RETURN`, "unknown protocol"},
		{"udp match with -p tcp", TableNAT, `-p tcp -m udp --dport 53 -j RETURN`, "UDP match requires"},
		{"port range backwards", TableNAT, `-p tcp --dport 90:80 -j RETURN`, "min > max"},
		{"comment too long", TableNAT, `-m comment --comment ` + strings.Repeat("x", 256) + ` -j RETURN`, "255"},
		{"comment twice", TableNAT, `-m comment --comment a --comment b -j RETURN`, "only be used once"},
		{"comment inverted", TableNAT, `-m comment ! --comment a -j RETURN`, "cannot be inverted"},
		{"mark without --mark", TableNAT, `-m mark -j RETURN`, "--mark"},
		{"bad mark", TableNAT, `-m mark --mark 0xfffffffff -j RETURN`, "bad value"},
		{"probability above 1", TableNAT, `-m statistic --mode random --probability 1.5 -j RETURN`, "probability"},
		{"statistic without mode", TableNAT, `-m statistic --probability 0.5 -j RETURN`, "no --mode"},
		{"addrtype without type", TableNAT, `-m addrtype -j RETURN`, "--src-type or --dst-type"},
		{"bad addrtype", TableNAT, `-m addrtype --dst-type NOPE -j RETURN`, "bad value"},
		{"conntrack without state", TableFilter, `-m conntrack -j RETURN`, "--ctstate"},
		{"recent without command", TableNAT, `-m recent --name X -j RETURN`, "one of --set"},
		{"recent reap without seconds", TableNAT, `-m recent --rcheck --reap -j RETURN`, "--reap needs --seconds"},
		{"DNAT outside nat", TableFilter, `-p tcp -j DNAT --to-destination 1.2.3.4:80`, "only valid in the nat table"},
		{"DNAT port without protocol", TableNAT, `-j DNAT --to-destination 1.2.3.4:80`, "need TCP, UDP"},
		{"DNAT to IPv6 in IPv4", TableNAT, `-p tcp -j DNAT --to-destination [2001:db8::1]:80`, "bad IP address"},
		{"MASQUERADE outside nat", TableFilter, `-j MASQUERADE`, "only valid in the nat table"},
		{"MARK twice", TableNAT, `-j MARK --or-mark 1 --xor-mark 2`, "only one of"},
		{"MARK or-mark with mask", TableNAT, `-j MARK --or-mark 1/1`, "takes no mask"},
		{"MARK without option", TableNAT, `-j MARK`, "is required"},
		{"unknown reject type", TableFilter, `-j REJECT --reject-with nope`, "unknown reject type"},
		{"jump to an invalid chain name", TableNAT, `-j KUBE-THIS-CHAIN-NAME-IS-TOO-LONG`, "too long"},
		{"interface name too long", TableNAT, `-i abcdefghijklmnop -j RETURN`, "shorter than 16"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args, err := splitArgs(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			got, err := CanonicalRule(IPv4, tc.table, args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("CanonicalRule(%s) = %q, %v; want an error containing %q", tc.args, got, err, tc.wantErr)
			}
		})
	}
}

func TestSplitArgs(t *testing.T) {
	cases := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: `-A  KUBE-X	-j RETURN`, want: []string{"-A", "KUBE-X", "-j", "RETURN"}},
		{in: `--comment "a b" x`, want: []string{"--comment", "a b", "x"}},
		{in: `--comment "a \"q\" \\ b"`, want: []string{"--comment", `a "q" \ b`}},
		{in: `--comment ""`, want: []string{"--comment", ""}},
		{in: `--comment "open`, wantErr: true},
	}
	for _, tc := range cases {
		got, err := splitArgs(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("splitArgs(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("splitArgs(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

// Rule.String quotes what iptables-restore needs quoted, and splitArgs reads it back.
func TestRuleStringRoundTrip(t *testing.T) {
	r := Rule{"-m", "comment", "--comment", `ns/svc:p "x" \ y`, "-j", "RETURN", ""}
	want := `-m comment --comment "ns/svc:p \"x\" \\ y" -j RETURN ""`
	if got := r.String(); got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	back, err := splitArgs(r.String())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string(r), back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestSaveQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain_-X9":    "plain_-X9",
		"ns/svc:p80":   `"ns/svc:p80"`,
		"":             `""`,
		`a "b" 'c' \d`: `"a \"b\" \'c\' \\d"`,
	} {
		if got := saveQuote(in); got != want {
			t.Errorf("saveQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
