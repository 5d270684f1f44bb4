package load

import (
	"errors"
	"sync/atomic"
	"testing"
)

func TestParallelRunsEveryIndexOnce(t *testing.T) {
	var seen [20]atomic.Int32
	if err := Parallel(5, 20, 4, func(i int) error { seen[i].Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		want := int32(0)
		if i >= 5 {
			want = 1
		}
		if got := seen[i].Load(); got != want {
			t.Errorf("index %d ran %d times, want %d", i, got, want)
		}
	}
}

func TestParallelReturnsFirstErrorAndStops(t *testing.T) {
	boom := errors.New("boom")
	var ran atomic.Int32
	err := Parallel(0, 1000, 1, func(i int) error {
		ran.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want %v", err, boom)
	}
	if n := ran.Load(); n != 4 {
		t.Errorf("one worker ran %d calls after the error at index 3, want 4", n)
	}
}

func TestEndpointAddr(t *testing.T) {
	for _, tc := range []struct {
		k    int
		want string
	}{{0, "100.64.10.0"}, {1, "100.64.10.1"}, {256, "100.64.11.0"}, {50000 - 1, "100.64.205.79"}} {
		if got := EndpointAddr(tc.k).String(); got != tc.want {
			t.Errorf("EndpointAddr(%d) = %s, want %s", tc.k, got, tc.want)
		}
	}
}
