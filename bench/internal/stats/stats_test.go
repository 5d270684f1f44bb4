package stats

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPercentileNearestRank(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6} // unsorted on purpose
	for _, tc := range []struct{ p, want float64 }{
		{0, 1}, {10, 1}, {11, 2}, {50, 5}, {51, 6}, {90, 9}, {99, 10}, {100, 10},
	} {
		t.Run(fmt.Sprintf("p%v", tc.p), func(t *testing.T) {
			if got := Percentile(xs, tc.p); got != tc.want {
				t.Errorf("Percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
	if xs[0] != 5 {
		t.Errorf("Percentile sorted its input: %v", xs)
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("no samples: %v", got)
	}
	if got := Percentile([]float64{7}, 99); got != 7 {
		t.Errorf("one sample: %v", got)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		xs   []float64
		want float64
	}{
		{"odd", []float64{3, 1, 2}, 2},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"none", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Median(tc.xs); got != tc.want {
				t.Errorf("Median(%v) = %v, want %v", tc.xs, got, tc.want)
			}
		})
	}
}

func TestMeanRoundMicros(t *testing.T) {
	if got := Mean([]float64{1, 2, 6}); got != 3 {
		t.Errorf("Mean = %v", got)
	}
	if got := Mean(nil); got != 0 {
		t.Errorf("Mean(nil) = %v", got)
	}
	for _, tc := range []struct {
		v      float64
		digits int
		want   float64
	}{{1.25, 1, 1.3}, {-1.25, 1, -1.3}, {2.449, 2, 2.45}, {1234.5, 0, 1235}} {
		if got := Round(tc.v, tc.digits); got != tc.want {
			t.Errorf("Round(%v, %d) = %v, want %v", tc.v, tc.digits, got, tc.want)
		}
	}
	if got := Micros([]time.Duration{1500 * time.Nanosecond}); got[0] != 1.5 {
		t.Errorf("Micros = %v", got)
	}
}

func TestSummarize(t *testing.T) {
	var xs []float64
	for i := 200; i >= 1; i-- { // unsorted on purpose
		xs = append(xs, float64(i))
	}
	want := Dist{N: 200, Min: 1, P50: 100, P90: 180, P99: 198, Max: 200, Mean: 100.5}
	if d := cmp.Diff(want, Summarize(xs)); d != "" {
		t.Errorf("Summarize (-want +got):\n%s", d)
	}
	if xs[0] != 200 {
		t.Error("Summarize sorted its input")
	}
	if d := cmp.Diff(Dist{}, Summarize(nil)); d != "" {
		t.Errorf("no samples (-want +got):\n%s", d)
	}
}
