package proxier

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// APIContactOptions configures an APIContact.
type APIContactOptions struct {
	// Probe asks the apiserver whether it serves (GET /readyz); nil error means it answered.
	Probe func(context.Context) error
	// Interval is the time between two probes; each probe gets Interval as its timeout.
	Interval time.Duration
	// MaxAge is how old the last answer may be before Check reports the apiserver lost
	// (2 × the sync period, as the sync staleness /healthz already reports).
	MaxAge time.Duration
	// Clock is injected for tests; nil means the real clock.
	Clock clock.WithTicker
}

// APIContact tracks when kproxy last heard from the apiserver. The informers cannot tell: a
// watch that cannot reconnect backs off silently (client-go logs it at -v=4 and calls no
// handler), and the rules in place keep being verified every sync period, so the sync
// staleness check stays green through an apiserver outage while the view of the cluster
// grows old. APIContact probes the apiserver every Interval and, through Check, makes
// /healthz report how long it has been unreachable once that passes MaxAge. The rules are
// not touched: traffic keeps flowing on what was programmed last.
type APIContact struct {
	opts APIContactOptions

	mu      sync.Mutex
	start   time.Time // before the first answer, staleness counts from here
	last    time.Time // last answer; zero before the first
	lastErr error     // the last probe's error, nil after an answer
	// failedAt is when the current run of failed probes began.
	failedAt time.Time
}

// NewAPIContact builds a tracker; nothing is probed until Run.
func NewAPIContact(opts APIContactOptions) *APIContact {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	return &APIContact{opts: opts, start: opts.Clock.Now()}
}

// Run probes the apiserver every Interval until ctx ends, logging once when it becomes
// unreachable and once when it answers again.
func (a *APIContact) Run(ctx context.Context) {
	logger := klog.FromContext(ctx)
	t := a.opts.Clock.NewTicker(a.opts.Interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, a.opts.Interval)
		err := a.opts.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch was := a.record(err); {
		case err != nil && was == nil:
			logger.Error(err, "The apiserver does not answer; keeping the rules in place")
		case err == nil && was != nil:
			logger.Info("The apiserver answers again", "unreachableFor", a.opts.Clock.Since(a.firstFailure()).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// record notes one probe's outcome and returns the previous probe's error.
func (a *APIContact) record(err error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	was := a.lastErr
	if err == nil {
		a.last = a.opts.Clock.Now()
	} else if was == nil {
		a.failedAt = a.opts.Clock.Now()
	}
	a.lastErr = err
	return was
}

// firstFailure is when the current run of failed probes began.
func (a *APIContact) firstFailure() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failedAt
}

// Check returns nil while the apiserver answered within MaxAge, else an error saying for how
// long it has not (for /healthz's "checks").
func (a *APIContact) Check() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Clock.Now()
	since := a.last
	if since.IsZero() {
		since = a.start
	}
	age := now.Sub(since)
	if age <= a.opts.MaxAge {
		return nil
	}
	what := "last answer at " + since.UTC().Format(time.RFC3339)
	if a.last.IsZero() {
		what = "no answer since start"
	}
	if a.lastErr != nil {
		return fmt.Errorf("no contact with the apiserver for %v (%s; more than %v): %w",
			age.Round(100*time.Millisecond), what, a.opts.MaxAge, a.lastErr)
	}
	return fmt.Errorf("no contact with the apiserver for %v (%s; more than %v)", age.Round(100*time.Millisecond), what, a.opts.MaxAge)
}
