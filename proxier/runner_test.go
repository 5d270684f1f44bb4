package proxier

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// runnerHarness runs a Runner over a fake clock and records when fn ran.
type runnerHarness struct {
	t     *testing.T
	clock *clocktesting.FakeClock
	r     *Runner
	mu    sync.Mutex
	runs  []time.Duration // offsets from start
	fail  int             // how many of the next runs fail
	start time.Time
	ran   chan struct{}
}

func newRunnerHarness(t *testing.T, opts RunnerOptions) *runnerHarness {
	t.Helper()
	h := &runnerHarness{t: t, start: time.Unix(1000, 0), ran: make(chan struct{}, 100)}
	h.clock = clocktesting.NewFakeClock(h.start)
	opts.Clock = h.clock
	h.r = NewRunner("test", func(context.Context) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.runs = append(h.runs, h.clock.Now().Sub(h.start))
		h.ran <- struct{}{}
		if h.fail > 0 {
			h.fail--
			return errors.New("boom")
		}
		return nil
	}, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	h.waitRun() // the initial run
	return h
}

func (h *runnerHarness) waitRun() {
	h.t.Helper()
	select {
	case <-h.ran:
	case <-time.After(5 * time.Second):
		h.t.Fatalf("runner did not run; runs so far %v", h.got())
	}
}

// idle waits until the runner is blocked on its timer, so stepping the clock is meaningful.
func (h *runnerHarness) idle() {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !h.clock.HasWaiters() {
		if time.Now().After(deadline) {
			h.t.Fatal("runner never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *runnerHarness) step(d time.Duration) {
	h.t.Helper()
	h.idle()
	h.clock.Step(d)
}

func (h *runnerHarness) noRun() {
	h.t.Helper()
	select {
	case <-h.ran:
		h.t.Fatalf("unexpected run; runs %v", h.got())
	case <-time.After(50 * time.Millisecond):
	}
}

func (h *runnerHarness) got() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Duration(nil), h.runs...)
}

func TestRunnerRunsAtStartAndEveryMaxInterval(t *testing.T) {
	h := newRunnerHarness(t, RunnerOptions{MinInterval: time.Second, MaxInterval: 30 * time.Second})
	h.step(29 * time.Second)
	h.noRun()
	h.step(time.Second)
	h.waitRun()
	h.step(30 * time.Second)
	h.waitRun()
	want := []time.Duration{0, 30 * time.Second, 60 * time.Second}
	if got := h.got(); !equalDurations(got, want) {
		t.Errorf("runs = %v, want %v", got, want)
	}
}

func TestRunnerCoalescesRequestsWithinMinInterval(t *testing.T) {
	h := newRunnerHarness(t, RunnerOptions{MinInterval: time.Second, MaxInterval: 30 * time.Second})
	h.idle()
	// Three requests right after a run: one run, one MinInterval after the first run.
	h.r.Request()
	h.r.Request()
	h.r.Request()
	h.step(500 * time.Millisecond)
	h.noRun()
	h.step(500 * time.Millisecond)
	h.waitRun()
	h.noRun()
	// A request long after the last run runs at once.
	h.step(10 * time.Second)
	h.idle()
	h.r.Request()
	h.waitRun()
	want := []time.Duration{0, time.Second, 11 * time.Second}
	if got := h.got(); !equalDurations(got, want) {
		t.Errorf("runs = %v, want %v", got, want)
	}
}

func TestRunnerBacksOffOnErrors(t *testing.T) {
	h := newRunnerHarness(t, RunnerOptions{MinInterval: time.Second, MaxInterval: 10 * time.Second})
	h.mu.Lock()
	h.fail = 5
	h.mu.Unlock()
	// The first run (at 0) succeeded; force a failing run with a request.
	h.step(time.Second)
	h.r.Request()
	h.waitRun() // 1s: fails, retry in 1s
	h.step(time.Second)
	h.waitRun() // 2s: fails, retry in 2s
	h.step(2 * time.Second)
	h.waitRun() // 4s: fails, retry in 4s
	h.step(4 * time.Second)
	h.waitRun() // 8s: fails, retry in 8s
	h.step(8 * time.Second)
	h.waitRun() // 16s: fails, retry capped at 10s
	h.step(9 * time.Second)
	h.noRun()
	h.step(time.Second)
	h.waitRun() // 26s: succeeds, next in MaxInterval
	want := []time.Duration{0, 1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 26 * time.Second}
	if got := h.got(); !equalDurations(got, want) {
		t.Errorf("runs = %v, want %v", got, want)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
