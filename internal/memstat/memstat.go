// Package memstat measures the heap, for the benchmarks that report what a structure keeps
// in memory (the informers' objects, the tracker, a proxier's caches) or what an operation
// needs at its peak (a full sync).
package memstat

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// LiveHeap runs a collection and returns the bytes of heap objects that survived it.
func LiveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// heapLive is the runtime metric of the heap the last collection found live.
const heapLive = "/gc/heap/live:bytes"

// PeakLive runs f with the collector's target at gcPercent and returns the largest live heap
// a collection found while it ran, less the live heap before it: the most f holds at once.
// With a low gcPercent (10) the collector runs every few MB of allocation, so few peaks fall
// between two collections; and unlike the heap's size, which also holds garbage not yet
// collected, the figure does not depend on how fast the collector keeps up. A process's peak
// RSS is about this peak, plus what was live before, times 1 + GOGC/100.
func PeakLive(gcPercent int, f func()) uint64 {
	before := LiveHeap()
	old := debug.SetGCPercent(gcPercent)
	defer debug.SetGCPercent(old)
	sample := []metrics.Sample{{Name: heapLive}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	done := make(chan uint64)
	stop := make(chan struct{})
	go func() {
		peak := read()
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- max(peak, read())
				return
			case <-tick.C:
				peak = max(peak, read())
			}
		}
	}()
	f()
	close(stop)
	peak := <-done
	if peak < before {
		return 0
	}
	return peak - before
}
