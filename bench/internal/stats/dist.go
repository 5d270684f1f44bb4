package stats

import "slices"

// Dist summarises samples (in the results files: µs).
type Dist struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Summarize returns the distribution of xs, rounded to one decimal; the zero Dist for none.
func Summarize(xs []float64) Dist {
	if len(xs) == 0 {
		return Dist{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	return Dist{N: len(s), Min: Round(s[0], 1), P50: Round(PercentileSorted(s, 50), 1), P90: Round(PercentileSorted(s, 90), 1),
		P99: Round(PercentileSorted(s, 99), 1), Max: Round(s[len(s)-1], 1), Mean: Round(sum/float64(len(s)), 1)}
}
