package proxier

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// APIContact reports the apiserver lost once its last answer is older than MaxAge, counting
// from the start before the first answer, and clears as soon as a probe succeeds again.
func TestAPIContactCheck(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	a := NewAPIContact(APIContactOptions{Interval: 10 * time.Second, MaxAge: 20 * time.Second, Clock: clk})
	refused := errors.New("connection refused")
	steps := []struct {
		name    string
		step    time.Duration
		probe   error // recorded after the step; nil records an answer
		skip    bool  // no probe in this step
		wantErr string
	}{
		{name: "at start, no probe yet", skip: true},
		{name: "no answer since start, within MaxAge", step: 20 * time.Second, probe: refused},
		{name: "no answer since start, past MaxAge", step: time.Second, skip: true, wantErr: "no contact with the apiserver for 21s (no answer since start; more than 20s): connection refused"},
		{name: "answered", step: time.Second, probe: nil},
		{name: "refused, within MaxAge", step: 10 * time.Second, probe: refused},
		{name: "refused, at MaxAge", step: 10 * time.Second, probe: refused},
		{name: "refused, past MaxAge", step: 10 * time.Second, probe: refused, wantErr: "no contact with the apiserver for 30s (last answer at 2026-01-02T03:04:27Z; more than 20s): connection refused"},
		{name: "answers again", step: 10 * time.Second, probe: nil},
	}
	for _, st := range steps {
		clk.Step(st.step)
		if !st.skip {
			_ = a.record(st.probe)
		}
		err := a.Check()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != st.wantErr {
			t.Errorf("%s: Check() = %q, want %q", st.name, got, st.wantErr)
		}
		if err != nil && !errors.Is(err, refused) {
			t.Errorf("%s: Check() does not wrap the probe's error", st.name)
		}
	}
}

// Run probes at once, then every Interval, each probe with Interval as its timeout, and stops
// with its context.
func TestAPIContactRun(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	var mu sync.Mutex
	var deadlines []time.Duration
	probed := make(chan struct{}, 10)
	a := NewAPIContact(APIContactOptions{Interval: 5 * time.Second, MaxAge: 10 * time.Second, Clock: clk,
		Probe: func(ctx context.Context) error {
			d, _ := ctx.Deadline()
			mu.Lock()
			deadlines = append(deadlines, time.Until(d).Round(time.Second))
			mu.Unlock()
			probed <- struct{}{}
			return errors.New("refused")
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	<-probed
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	clk.Step(5 * time.Second)
	<-probed
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(deadlines) != 2 || deadlines[0] != 5*time.Second {
		t.Errorf("probes with timeouts %v, want 2 probes of 5s", deadlines)
	}
	clk.Step(6 * time.Second)
	if err := a.Check(); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Check() after 11 s of refusals = %v, want the refusal", err)
	}
}
