// Package stats is the benchmarks' arithmetic over samples: nearest-rank percentiles,
// medians over rounds, a distribution summary, rounding for the results files. Pure: values
// in, values out; no function sorts or keeps its input. It imports nothing of the project.
package stats
