package sandbox

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	// pid (comm with ) and spaces) state ppid ... utime=150 stime=50 cutime=300 cstime=100 ...
	stat := "42 (kube proxy) x) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 300 100 20 0 8 0 1000 0 0"
	got, err := parseStat(stat, 42)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(CPUTimes{Self: 2, Children: 4}, got); d != "" {
		t.Errorf("parseStat (-want +got):\n%s", d)
	}
	if got.Total() != 6 {
		t.Errorf("Total = %v", got.Total())
	}
	if _, err := parseStat("42 (x) S 1 2", 42); err == nil {
		t.Error("short stat accepted")
	}
}
