package iptables

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The stderr texts are iptables-restore 1.8.9's (nf_tables backend).
func TestParseRestoreError(t *testing.T) {
	cases := []struct {
		stderr string
		want   RestoreError
	}{
		{
			stderr: "iptables-restore v1.8.9 (nf_tables): Chain 'KUBE-MISSING' does not exist\nError occurred at line: 4\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n",
			want:   RestoreError{Line: 4, Msg: "Chain 'KUBE-MISSING' does not exist"},
		},
		{
			stderr: "iptables-restore: line 2 failed: No chain/target/match by that name.\n",
			want:   RestoreError{Line: 2, Msg: "No chain/target/match by that name."},
		},
		{
			stderr: "iptables-restore v1.8.9 (nf_tables): \nline 2: CHAIN_DEL failed (Device or resource busy): chain KUBE-SVC-A\n",
			want:   RestoreError{Line: 2, Msg: "CHAIN_DEL failed (Device or resource busy): chain KUBE-SVC-A"},
		},
		{
			stderr: "iptables-restore: COMMIT expected at line 4\n",
			want:   RestoreError{Line: 4, Msg: "COMMIT expected"},
		},
		{
			stderr: "iptables-restore v1.8.9 (nf_tables): \nThe \"nat\" table is not intended for filtering, the use of DROP is therefore inhibited.\n\n\nError occurred at line: 4\n",
			want:   RestoreError{Line: 4, Msg: `The "nat" table is not intended for filtering, the use of DROP is therefore inhibited.`},
		},
		{
			stderr: "Bad argument `foo'\nError occurred at line: 3\n",
			want:   RestoreError{Line: 3, Msg: "Bad argument `foo'"},
		},
		{
			stderr: "iptables-restore: line 1 failed\n",
			want:   RestoreError{Line: 1},
		},
		{
			stderr: "something else entirely\n",
			want:   RestoreError{Msg: "something else entirely"},
		},
	}
	for _, tc := range cases {
		if diff := cmp.Diff(tc.want, *parseRestoreError(tc.stderr)); diff != "" {
			t.Errorf("parseRestoreError(%q) (-want +got):\n%s", tc.stderr, diff)
		}
	}
}

func TestRunnerCommand(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		opts Options
		tool string
		want []string
	}{
		{Options{}, "tables-restore", []string{"iptables-restore", "--noflush", "-w"}},
		{Options{IPv6: true}, "tables-restore", []string{"ip6tables-restore", "--noflush", "-w"}},
		{Options{NetNSPath: "/run/netns/node-1"}, "tables-restore",
			[]string{"nsenter", "--net=/run/netns/node-1", "--", "iptables-restore", "--noflush", "-w"}},
	}
	for _, tc := range cases {
		r := New(tc.opts)
		got := r.command(ctx, r.tool(tc.tool), "--noflush", "-w").Args
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%+v: args (-want +got):\n%s", tc.opts, diff)
		}
	}
	if New(Options{IPv6: true}).Family() != IPv6 || New(Options{}).Family() != IPv4 {
		t.Error("Family does not follow Options.IPv6")
	}
}
