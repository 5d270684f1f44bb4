//go:build race

package proxy

// raceEnabled: the race detector makes the long randomised tests several times slower, so
// they run fewer sequences.
const raceEnabled = true
