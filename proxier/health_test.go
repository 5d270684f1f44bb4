package proxier

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

func TestHealth(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := NewHealth(60*time.Second, []string{"IPv4"}, clk)
	get := func(path string) (int, map[string]any) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: body %q: %v", path, rec.Body.String(), err)
		}
		return rec.Code, body
	}
	steps := []struct {
		name        string
		do          func()
		wantHealthz int
		wantLivez   int
		wantUpdated string
	}{
		{"before the first sync", func() {}, 503, 503, ""},
		{"just synced", func() { h.Updated("IPv4") }, 200, 200, "2026-01-02T03:04:05Z"},
		{"at the timeout", func() { clk.Step(60 * time.Second) }, 200, 200, "2026-01-02T03:04:05Z"},
		{"past the timeout", func() { clk.Step(time.Second) }, 503, 503, "2026-01-02T03:04:05Z"},
		{"synced again", func() { h.Updated("IPv4") }, 200, 200, "2026-01-02T03:05:06Z"},
		{"node being deleted", func() { h.SetNodeEligible(false) }, 503, 200, "2026-01-02T03:05:06Z"},
	}
	for _, st := range steps {
		st.do()
		code, body := get("/healthz")
		if code != st.wantHealthz {
			t.Errorf("%s: /healthz = %d, want %d", st.name, code, st.wantHealthz)
		}
		if body["currentTime"] != clk.Now().UTC().Format(time.RFC3339Nano) {
			t.Errorf("%s: currentTime = %v", st.name, body["currentTime"])
		}
		// A 200 reports the current time as lastUpdated (kube-proxy's rule); a 503 the
		// last sync.
		wantTop := st.wantUpdated
		if code == 200 {
			wantTop = clk.Now().UTC().Format(time.RFC3339Nano)
		}
		if got, _ := body["lastUpdated"].(string); got != wantTop {
			t.Errorf("%s: lastUpdated = %q, want %q", st.name, got, wantTop)
		}
		if got, want := body["healthy"], st.wantLivez == 200; got != want {
			t.Errorf("%s: healthy = %v, want %v", st.name, got, want)
		}
		if st.wantUpdated != "" {
			fam, _ := body["status"].(map[string]any)["IPv4"].(map[string]any)
			if fam["lastUpdated"] != st.wantUpdated || fam["healthy"] != (st.wantLivez == 200) {
				t.Errorf("%s: status.IPv4 = %v", st.name, fam)
			}
		}
		if code, _ := get("/livez"); code != st.wantLivez {
			t.Errorf("%s: /livez = %d, want %d", st.name, code, st.wantLivez)
		}
	}
}

// With two families, /healthz is healthy only when both have synced recently.
// A restart that finds its rules in the kernel is healthy from the start, until the timeout
// if no sync succeeds; a family that did not resume is not.
func TestHealthResumed(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := NewHealth(60*time.Second, []string{"IPv4", "IPv6"}, clk)
	h.Resumed("IPv4")
	if h.Healthy() {
		t.Error("healthy with IPv6 neither resumed nor synced")
	}
	h.Resumed("IPv6")
	if !h.Healthy() {
		t.Error("not healthy right after resuming both families")
	}
	clk.Step(61 * time.Second)
	if h.Healthy() {
		t.Error("healthy past the timeout without a sync")
	}
}

func TestHealthDualStack(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := NewHealth(time.Minute, []string{"IPv4", "IPv6"}, clk)
	h.Updated("IPv4")
	if ok, st := h.status(scopeHealthz); ok || st.Healthy || len(st.Status) != 1 {
		t.Errorf("only IPv4 synced: healthy %v, status %+v; want unhealthy with one family", ok, st)
	}
	clk.Step(time.Second)
	h.Updated("IPv6")
	ok, st := h.status(scopeHealthz)
	if !ok || !st.Status["IPv4"].Healthy || !st.Status["IPv6"].Healthy || st.LastUpdated != "2026-01-02T03:04:06Z" {
		t.Errorf("both synced: healthy %v, status %+v", ok, st)
	}
	clk.Step(time.Minute)
	if ok, st := h.status(scopeHealthz); ok || st.Status["IPv4"].Healthy || !st.Status["IPv6"].Healthy {
		t.Errorf("IPv4 stale: healthy %v, status %+v; want IPv4 unhealthy", ok, st)
	}
}

// A failing check (the datapath without a pod CIDR) makes /healthz unhealthy and says why;
// /livez ignores it.
func TestHealthCheck(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := NewHealth(time.Minute, []string{"IPv4"}, clk)
	checkErr := errors.New("node has no podCIDR")
	h.AddCheck("datapath", func() error { return checkErr })
	h.Updated("IPv4")
	if ok, st := h.status(scopeHealthz); ok || st.Checks["datapath"] != "node has no podCIDR" {
		t.Errorf("failing check: healthy %v, status %+v; want unhealthy with the check's error", ok, st)
	}
	if ok, _ := h.status(scopeLivez); !ok {
		t.Error("failing check: /livez unhealthy, want healthy")
	}
	checkErr = nil
	if ok, st := h.status(scopeHealthz); !ok || st.Checks != nil {
		t.Errorf("passing check: healthy %v, status %+v", ok, st)
	}
}

// A failing readiness-only check (the apiserver unreachable) makes /healthz unhealthy but not
// Healthy, the verdict the health-check node ports serve, and not /livez.
func TestHealthReadinessCheck(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	h := NewHealth(time.Minute, []string{"IPv4"}, clk)
	checkErr := errors.New("no contact with the apiserver for 2m0s")
	h.AddReadinessCheck("apiserver", func() error { return checkErr })
	h.Updated("IPv4")
	if ok, st := h.status(scopeHealthz); ok || st.Checks["apiserver"] != checkErr.Error() {
		t.Errorf("/healthz: healthy %v, status %+v; want unhealthy with the check's error", ok, st)
	}
	if !h.Healthy() {
		t.Error("Healthy (health-check node ports) = false, want true: a readiness-only check must not drain load balancers")
	}
	if ok, _ := h.status(scopeLivez); !ok {
		t.Error("/livez unhealthy, want healthy")
	}
	h.SetNodeEligible(false)
	if h.Healthy() {
		t.Error("node being deleted: Healthy = true, want false")
	}
}
