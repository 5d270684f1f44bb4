package load

import (
	"sync"
	"sync/atomic"
)

// Parallel runs fn(i) for i in [from, to) on workers goroutines and returns the first error;
// after an error the workers take no new i.
func Parallel(from, to, workers int, fn func(i int) error) error {
	var next atomic.Int64
	next.Store(int64(from))
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					next.Store(int64(to)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
