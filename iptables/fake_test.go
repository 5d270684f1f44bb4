package iptables

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// applyCase restores tc.setup then tc.input into ipt and checks the answer and the state
// against the kernel's (restoreCases).
func applyCase(ctx context.Context, t *testing.T, ipt Interface, tc restoreCase) {
	t.Helper()
	if tc.setup != "" {
		if err := ipt.Restore(ctx, []byte(tc.setup)); err != nil {
			t.Fatalf("setup: %v", err)
		}
	}
	err := ipt.Restore(ctx, []byte(tc.input))
	gotLine := 0
	if err != nil {
		var re *RestoreError
		if !errors.As(err, &re) {
			t.Fatalf("restore: %v is not a *RestoreError", err)
		}
		gotLine = re.Line
		if gotLine == 0 {
			t.Errorf("restore error %v has no line", err)
		}
	}
	if gotLine != tc.wantLine {
		t.Errorf("restore rejected at line %d (err %v), want line %d", gotLine, err, tc.wantLine)
	}
	if diff := cmp.Diff(tc.want, kubeState(ctx, t, ipt)); diff != "" {
		t.Errorf("KUBE- chains after restore (-want +got):\n%s", diff)
	}
}

func TestFakeRestore(t *testing.T) {
	for _, tc := range restoreCases {
		t.Run(tc.name, func(t *testing.T) {
			applyCase(context.Background(), t, NewFake(IPv4), tc)
		})
	}
}

func TestFakeEnsure(t *testing.T) {
	ctx := context.Background()
	f := NewFake(IPv4)
	runEnsureSteps(ctx, t, f)
	if diff := cmp.Diff(ensureState, kubeState(ctx, t, f)); diff != "" {
		t.Errorf("state after ensure steps (-want +got):\n%s", diff)
	}
}

func TestFakeEnsureErrors(t *testing.T) {
	ctx := context.Background()
	f := NewFake(IPv4)
	if _, err := f.EnsureRule(ctx, Append, TableNAT, "KUBE-NOPE", "-j", "RETURN"); !errors.Is(err, ErrNotFound) {
		t.Errorf("EnsureRule in a missing chain: err = %v, want ErrNotFound", err)
	}
	if _, err := f.EnsureRule(ctx, Append, TableNAT, ChainPrerouting, "-j", "KUBE-NOPE"); !errors.Is(err, ErrNotFound) {
		t.Errorf("EnsureRule jumping to a missing chain: err = %v, want ErrNotFound", err)
	}
	if _, err := f.EnsureRule(ctx, Append, TableNAT, ChainPrerouting, "-j", "DROP"); err == nil {
		t.Error("EnsureRule with DROP in nat: no error")
	}
	if _, err := f.EnsureChain(ctx, TableNAT, "KUBE-SVC-THIS-NAME-IS-MUCH-TOO-LONG"); err == nil {
		t.Error("EnsureChain with a 35-character name: no error")
	}
	if got := f.Dump(); got != "" {
		t.Errorf("failed calls changed the fake:\n%s", got)
	}
}

func TestFakeSaveAndDump(t *testing.T) {
	ctx := context.Background()
	f := NewFake(IPv4)
	if got := f.Dump(); got != "" {
		t.Errorf("Dump of a fresh fake = %q, want empty", got)
	}
	input := "*nat\n:POSTROUTING DROP [0:0]\n:KUBE-B - [0:0]\n:KUBE-A - [0:0]\n-A KUBE-B -j RETURN\n" +
		"-A PREROUTING -j KUBE-A\n-A KUBE-A -d 100.100.0.1 -j KUBE-B\nCOMMIT\n"
	if err := f.Restore(ctx, []byte(input)); err != nil {
		t.Fatal(err)
	}
	want := `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING DROP [0:0]
:KUBE-A - [0:0]
:KUBE-B - [0:0]
-A PREROUTING -j KUBE-A
-A KUBE-A -d 100.100.0.1/32 -j KUBE-B
-A KUBE-B -j RETURN
COMMIT
`
	got, err := f.Save(ctx, TableNAT)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("Save (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, f.Dump()); diff != "" {
		t.Errorf("Dump (-want +got):\n%s", diff)
	}
	if f.RestoreCount() != 1 || string(f.LastRestore()) != input {
		t.Errorf("RestoreCount = %d, LastRestore = %q", f.RestoreCount(), f.LastRestore())
	}
	// Save output is valid restore input and gives the same tables.
	f2 := NewFake(IPv4)
	if err := f2.Restore(ctx, got); err != nil {
		t.Fatalf("restore of save output: %v", err)
	}
	if diff := cmp.Diff(want, f2.Dump()); diff != "" {
		t.Errorf("Dump after restoring the save output (-want +got):\n%s", diff)
	}
}

func TestFakeIPv6(t *testing.T) {
	ctx := context.Background()
	f := NewFake(IPv6)
	input := "*nat\n:KUBE-A - [0:0]\n-A KUBE-A -d 2001:db8:2::10 -p tcp -j DNAT --to-destination [2001:db8:1::5]:80\nCOMMIT\n"
	if err := f.Restore(ctx, []byte(input)); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Dump(), "-A KUBE-A -d 2001:db8:2::10/128 -p tcp -j DNAT --to-destination [2001:db8:1::5]:80\n"; !strings.Contains(got, want) {
		t.Errorf("Dump = %s, want it to contain %q", got, want)
	}
	err := f.Restore(ctx, []byte("*nat\n:KUBE-A - [0:0]\n-A KUBE-A -d 100.100.0.1 -j RETURN\nCOMMIT\n"))
	var re *RestoreError
	if !errors.As(err, &re) || re.Line != 3 {
		t.Errorf("IPv4 address in an IPv6 table: err = %v, want a RestoreError at line 3", err)
	}
}
