// Package memstat measures the live heap, for the benchmarks that report what a structure
// keeps in memory (the informers' objects, the tracker, a proxier's caches).
package memstat

import "runtime"

// LiveHeap runs a collection and returns the bytes of heap objects that survived it.
func LiveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
