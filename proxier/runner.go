package proxier

import (
	"context"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// RunnerOptions bounds how often a Runner calls its function.
type RunnerOptions struct {
	// MinInterval is the shortest time between two runs: requests closer than this are
	// coalesced into one run at the end of the interval (--iptables-min-sync-period).
	MinInterval time.Duration
	// MaxInterval is the longest time without a run: the function runs at least this often
	// even without requests (--iptables-sync-period).
	MaxInterval time.Duration
	// RetryMin is the first retry delay after a failed run; it doubles on every failure
	// in a row, capped at MaxInterval. Zero means MinInterval (or 1s if that is zero too).
	RetryMin time.Duration
	// Clock is injected for tests; nil means the real clock.
	Clock clock.WithTicker
}

// Runner is a bounded-frequency runner: it calls fn when asked to, but no more often than
// MinInterval, at least every MaxInterval, and again after a backoff when fn fails. Request
// never blocks and never runs fn itself; only Run's goroutine calls fn, so fn needs no lock
// against itself.
type Runner struct {
	name string
	fn   func(context.Context) error
	opts RunnerOptions
	req  chan struct{}
}

// NewRunner builds a runner; nothing starts until Run.
func NewRunner(name string, fn func(context.Context) error, opts RunnerOptions) *Runner {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = opts.MinInterval
		if opts.RetryMin <= 0 {
			opts.RetryMin = time.Second
		}
	}
	if opts.MaxInterval < opts.MinInterval {
		opts.MaxInterval = opts.MinInterval
	}
	return &Runner{name: name, fn: fn, opts: opts, req: make(chan struct{}, 1)}
}

// Request asks for a run as soon as MinInterval allows. Requests made while one is pending
// are coalesced.
func (r *Runner) Request() {
	select {
	case r.req <- struct{}{}:
	default:
	}
}

// Run calls fn once right away, then as requested and bounded, until ctx is cancelled.
func (r *Runner) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("runner", r.name)
	c := r.opts.Clock
	var (
		lastRun  time.Time
		failures int
	)
	// next is when the next run is due without any request: MaxInterval after a success,
	// the backoff after a failure. pending is set by a request and honoured after MinInterval.
	next := c.Now()
	pending := false
	for {
		now := c.Now()
		due := next
		if pending {
			if earliest := lastRun.Add(r.opts.MinInterval); earliest.Before(due) {
				due = earliest
			}
		}
		if !due.After(now) {
			pending = false
			lastRun = now
			// Drain a request that arrived before this run: the run covers it.
			select {
			case <-r.req:
			default:
			}
			if err := r.fn(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				failures++
				delay := r.backoff(failures)
				logger.Error(err, "Sync failed, will retry", "failures", failures, "retryIn", delay)
				next = now.Add(delay)
			} else {
				failures = 0
				next = now.Add(r.opts.MaxInterval)
			}
			continue
		}
		t := c.NewTimer(due.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.req:
			pending = true
		case <-t.C():
		}
		t.Stop()
	}
}

func (r *Runner) backoff(failures int) time.Duration {
	d := r.opts.RetryMin
	for i := 1; i < failures && d < r.opts.MaxInterval; i++ {
		d *= 2
	}
	if d > r.opts.MaxInterval && r.opts.MaxInterval > 0 {
		d = r.opts.MaxInterval
	}
	return d
}
