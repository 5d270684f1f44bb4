package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/kproxy/kproxy/bench/internal/kstate"
	"github.com/kproxy/kproxy/bench/internal/stats"
)

// Churn: -churn-rate single-endpoint changes per second for -churn-duration, round-robin over
// the load's services (each change replaces the service's first endpoint by a new address,
// one EndpointSlice update). Writes are paced by a ticker and done by 8 workers, so a slow
// API write does not hold the next ones back; how late the writes started against the
// schedule is recorded (churn.write_lag_p99_ms) so that a loader that could not keep up is
// not mistaken for a slow proxy.
//
// Latency: every -churn-sample-th change is tracked; a poller probes the kernel for the
// tracked changes still pending, oldest first (endpointProbe: that service's chains only),
// and a change's latency is from just before its write to the midpoint of the probe that
// saw it. A tracked change whose service changed again before it was seen is "superseded"
// and not counted. After the last write: drain = time until the whole state is in the
// kernel (every service's endpoints as last written, full reads).
//
// Kept up: the proxy kept up when every tracked change was seen and the p99 of the tracked
// latencies in the last third of the phase is at most twice the p99 of the first third plus
// 100 ms: the latency did not grow with time. The drain is a figure of its own: it is read
// with whole-table reads, which take seconds at 10,000 services, so it cannot be finer than
// one of them.

// churnAddr is the k-th churn address: 100.64.206.0 and up (the load ends below, the
// one-change phase's 100.64.240.0/24 above), 8,704 of them.
func churnAddr(k int) netip.Addr {
	v := uint32(100)<<24 | uint32(64)<<16 | uint32(206)<<8 + uint32(k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

const maxChurnChanges = 34 * 256

// pacedWrites runs write(k) for k in 0..total-1 from 8 workers, the k-th handed out at
// start + k × interval (a ticker), so a slow API write does not hold the next ones back;
// writes to one service never overlap (write runs holding that service's lock). scheduled(k,
// due) runs on the pacing goroutine just before the k-th is handed out. It returns once every
// write is done.
func pacedWrites(total int, interval time.Duration, svc func(k int) *benchService,
	scheduled func(k int, due time.Time), write func(k int)) {
	locks := map[*benchService]*sync.Mutex{}
	for k := range total {
		if locks[svc(k)] == nil {
			locks[svc(k)] = &sync.Mutex{}
		}
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				l := locks[svc(k)]
				l.Lock()
				write(k)
				l.Unlock()
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(interval)
	for k := range total {
		scheduled(k, start.Add(time.Duration(k)*interval))
		jobs <- k
		if k < total-1 {
			<-tick.C
		}
	}
	tick.Stop()
	close(jobs)
	wg.Wait()
}

type churnChange struct {
	svc         *benchService
	addr        string
	scheduled   time.Time
	wrote, seen time.Time
	superseded  bool
}

func runChurn(ctx context.Context, cfg config, cs kubernetes.Interface, node string, kind kstate.Kind, probe *endpointProbe,
	svcs []*benchService, ps *probeStats, rr *runResult) error {
	total := int(cfg.ChurnRate * cfg.ChurnDuration.Seconds())
	if total <= 0 {
		return nil
	}
	interval := time.Duration(float64(time.Second) / cfg.ChurnRate)
	changes := make([]*churnChange, total)
	var mu sync.Mutex // guards changes[*].wrote/superseded, svc slices, last, writeErr
	last := map[*benchService]*churnChange{}
	var writeErr error
	stride := 1
	if len(svcs) > 7 {
		stride = 7 // neighbours in name order are not changed back to back
	}
	for k := range total {
		s := svcs[(k*stride)%len(svcs)]
		changes[k] = &churnChange{svc: s, addr: netip.AddrPortFrom(churnAddr(k), targetPort).String()}
	}

	// The poller: tracked changes that are written and not yet seen.
	stopPoll := make(chan struct{})
	pollDone := make(chan error, 1)
	go func() {
		pollDone <- func() error {
			next := 0 // first tracked change not yet seen or superseded
			for {
				select {
				case <-stopPoll:
					return nil
				default:
				}
				mu.Lock()
				var pending []*churnChange
				for k := next; k < total; k += cfg.ChurnSample {
					c := changes[k]
					if c.wrote.IsZero() {
						break
					}
					if c.seen.IsZero() && !c.superseded {
						pending = append(pending, c)
					}
				}
				mu.Unlock()
				for _, c := range pending {
					t0 := time.Now()
					at, ok, err := probe.seen(ctx, c.svc, c.addr)
					if probe.monitor == nil {
						ps.endpoint.add(time.Since(t0))
					}
					if err != nil {
						return err
					}
					if ok {
						mu.Lock()
						c.seen = at
						mu.Unlock()
					}
				}
				mu.Lock()
				for next < total && (!changes[next].seen.IsZero() || changes[next].superseded) {
					next += cfg.ChurnSample
				}
				mu.Unlock()
				if err := sleepCtx(ctx, cfg.Gap); err != nil {
					return err
				}
			}
		}()
	}()

	pacedWrites(total, interval, func(k int) *benchService { return changes[k].svc },
		func(k int, due time.Time) {
			mu.Lock()
			changes[k].scheduled = due
			mu.Unlock()
		},
		func(k int) {
			c := changes[k]
			tw := time.Now()
			err := changeEndpoint(ctx, cs, c.svc, c.addr)
			mu.Lock()
			c.wrote = tw
			if prev := last[c.svc]; prev != nil && prev.seen.IsZero() {
				prev.superseded = true
			}
			last[c.svc] = c
			if err != nil && writeErr == nil {
				writeErr = err
			}
			mu.Unlock()
		})
	lastWrite := time.Now()
	if writeErr != nil {
		close(stopPoll)
		if perr := <-pollDone; perr != nil {
			logf("  churn poller: %v", perr)
		}
		return fmt.Errorf("churn: %w", writeErr)
	}

	// Drain: the whole final state in the kernel.
	res, err := pollUntil(ctx, node, kind, cfg.Gap, cfg.Cap, &ps.full, func(st kstate.State) bool { return programmed(st, svcs) == len(svcs) })
	// Let the poller see the last tracked changes (they are in the kernel now) before stopping it.
	for i := 0; i < 200 && err == nil && !res.Capped && trackedPending(&mu, changes, cfg.ChurnSample) > 0; i++ {
		time.Sleep(25 * time.Millisecond)
	}
	close(stopPoll)
	if perr := <-pollDone; perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return fmt.Errorf("churn poll: %w", err)
	}
	if res.Capped {
		rr.Capped = append(rr.Capped, "churn.drain_s")
		return fmt.Errorf("churn: final state not in the kernel within %v of the last write", cfg.Cap)
	}
	summariseChurn(cfg, changes, changes[0].scheduled, lastWrite, res, rr)
	return nil
}

func trackedPending(mu *sync.Mutex, changes []*churnChange, sample int) int {
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for k := 0; k < len(changes); k += sample {
		if c := changes[k]; c.seen.IsZero() && !c.superseded {
			n++
		}
	}
	return n
}

func summariseChurn(cfg config, changes []*churnChange, start, lastWrite time.Time, drain pollResult, rr *runResult) {
	var lat, lags []float64
	var first, lastThird []float64
	superseded, unseen := 0, 0
	phase := lastWrite.Sub(start)
	for k, c := range changes {
		lags = append(lags, float64(c.wrote.Sub(c.scheduled).Microseconds())/1000)
		if k%cfg.ChurnSample != 0 {
			continue
		}
		if c.superseded {
			superseded++
			continue
		}
		if c.seen.IsZero() {
			unseen++
			continue
		}
		ms := float64(c.seen.Sub(c.wrote).Microseconds()) / 1000
		lat = append(lat, ms)
		switch at := c.wrote.Sub(start); {
		case at < phase/3:
			first = append(first, ms)
		case at >= 2*phase/3:
			lastThird = append(lastThird, ms)
		}
	}
	rr.ChurnLatenciesMs = lat
	rr.Figures["churn.writes"] = float64(len(changes))
	rr.Figures["churn.rate_per_s"] = stats.Round(float64(len(changes))/phase.Seconds(), 1)
	rr.Figures["churn.write_lag_p99_ms"] = stats.Round(stats.Percentile(lags, 99), 1)
	rr.Figures["churn.tracked"] = float64(len(lat))
	rr.Figures["churn.superseded"] = float64(superseded)
	rr.Figures["churn.p50_ms"] = stats.Round(stats.Percentile(lat, 50), 1)
	rr.Figures["churn.p99_ms"] = stats.Round(stats.Percentile(lat, 99), 1)
	rr.Figures["churn.max_ms"] = stats.Round(stats.Percentile(lat, 100), 1)
	rr.Figures["churn.drain_s"] = stats.Round(drain.At.Sub(lastWrite).Seconds(), 2)
	grew := stats.Percentile(lastThird, 99) > 2*stats.Percentile(first, 99)+100
	kept := !grew && unseen == 0
	rr.Figures["churn.kept_up"] = map[bool]float64{true: 1, false: 0}[kept]
	rr.Figures["churn.p99_first_third_ms"] = stats.Round(stats.Percentile(first, 99), 1)
	rr.Figures["churn.p99_last_third_ms"] = stats.Round(stats.Percentile(lastThird, 99), 1)
	rr.Figures["churn.drain_read_ms"] = stats.Round(float64(drain.End.Sub(drain.Start).Microseconds())/1000, 1)
}
