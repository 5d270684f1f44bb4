package proxier

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kproxy/kproxy/endpoints"
)

type fakeSource struct{ snaps []endpoints.Snapshot }

func (s *fakeSource) Checkout() endpoints.Snapshot {
	if len(s.snaps) == 0 {
		return endpoints.Snapshot{}
	}
	snap := s.snaps[0]
	s.snaps = s.snaps[1:]
	return snap
}

type applyCall struct {
	full    bool
	changed int
	node    endpoints.NodeInfo
}

type fakeBackend struct {
	calls []applyCall
	errs  []error
}

func (b *fakeBackend) Mode() string { return "fake" }
func (b *fakeBackend) Apply(_ context.Context, snap endpoints.Snapshot, node endpoints.NodeInfo, full bool) error {
	b.calls = append(b.calls, applyCall{full: full, changed: len(snap.Changed), node: node})
	if len(b.errs) > 0 {
		err := b.errs[0]
		b.errs = b.errs[1:]
		return err
	}
	return nil
}

func changed(names ...string) map[types.NamespacedName]struct{} {
	m := map[types.NamespacedName]struct{}{}
	for _, n := range names {
		m[types.NamespacedName{Namespace: "ns", Name: n}] = struct{}{}
	}
	return m
}

func TestReconcilerFullSyncRules(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	src := &fakeSource{snaps: []endpoints.Snapshot{
		{Changed: changed("a"), ServiceChanges: 1},
		{Changed: changed("b"), EndpointChanges: 2},
		{Changed: changed("c")}, // fails: carried into the next sync
		{Changed: changed("d")},
		{},
		{},
		{},
	}}
	be := &fakeBackend{errs: []error{nil, nil, errors.New("restore failed")}}
	all := NewMetrics()
	m := all.For("IPv4")
	h := NewHealth(time.Minute, []string{"IPv4"}, clk)
	released := 0 // ReleaseMemory runs after each successful full sync, and only then
	r := NewReconciler(src, be, m, h, ReconcilerOptions{FullSyncInterval: time.Hour, Clock: clk, ReleaseMemory: func() { released++ }})
	r.SetNode(endpoints.NodeInfo{Name: "n1"})
	ctx := context.Background()

	steps := []struct {
		advance time.Duration
		setNode *endpoints.NodeInfo
		wantErr bool
		want    applyCall
	}{
		{want: applyCall{full: true, changed: 1}},           // first sync is full
		{advance: time.Second, want: applyCall{changed: 1}}, // then partial
		{advance: time.Second, wantErr: true, want: applyCall{changed: 1}},
		{advance: time.Second, want: applyCall{full: true, changed: 2}}, // after a failure: full, with the failed changes
		{advance: time.Second, setNode: &endpoints.NodeInfo{Name: "n1", Zone: "z2"}, want: applyCall{full: true, node: endpoints.NodeInfo{Name: "n1", Zone: "z2"}}},
		{advance: 30 * time.Minute, want: applyCall{node: endpoints.NodeInfo{Name: "n1", Zone: "z2"}}},
		{advance: 31 * time.Minute, want: applyCall{full: true, node: endpoints.NodeInfo{Name: "n1", Zone: "z2"}}}, // hourly full sync
	}
	for i, st := range steps {
		clk.Step(st.advance)
		if st.setNode != nil {
			r.SetNode(*st.setNode)
		}
		before := released
		err := r.Sync(ctx)
		if (err != nil) != st.wantErr {
			t.Fatalf("step %d: err = %v, wantErr %v", i, err, st.wantErr)
		}
		if want := st.want.full && !st.wantErr; (released > before) != want {
			t.Errorf("step %d: memory released %v, want %v", i, released > before, want)
		}
		if st.want.node.Name == "" {
			st.want.node = endpoints.NodeInfo{Name: "n1"}
		}
		if got := be.calls[len(be.calls)-1]; got != st.want {
			t.Errorf("step %d: Apply(%+v), want %+v", i, got, st.want)
		}
	}
	if got := counterValue(t, m.ServiceChanges); got != 1 {
		t.Errorf("service changes = %v, want 1", got)
	}
	if got := counterValue(t, m.EndpointChanges); got != 2 {
		t.Errorf("endpoint changes = %v, want 2", got)
	}
	if got := counterValue(t, m.SyncFailures); got != 1 {
		t.Errorf("sync failures = %v, want 1", got)
	}
}

func TestReconcilerNetworkProgrammingLatency(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(10000, 0))
	svc := types.NamespacedName{Namespace: "ns", Name: "a"}
	src := &fakeSource{snaps: []endpoints.Snapshot{{
		Changed:      changed("a"),
		TriggerTimes: map[types.NamespacedName][]time.Time{svc: {clk.Now().Add(-3 * time.Second)}},
	}}}
	all := NewMetrics()
	r := NewReconciler(src, &fakeBackend{}, all.For("IPv4"), NewHealth(time.Minute, []string{"IPv4"}, clk), ReconcilerOptions{Clock: clk})
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	body := scrape(t, all)
	if !strings.Contains(body, `kubeproxy_network_programming_duration_seconds_count{ip_family="IPv4"} 1`) ||
		!strings.Contains(body, `kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="3"} 1`) ||
		!strings.Contains(body, `kubeproxy_network_programming_duration_seconds_bucket{ip_family="IPv4",le="2"} 0`) {
		t.Errorf("network programming histogram not as expected:\n%s", grep(body, "network_programming"))
	}
	if !strings.Contains(body, `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 10000`) {
		t.Errorf("last timestamp missing:\n%s", grep(body, "last_timestamp"))
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler("fake").ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
