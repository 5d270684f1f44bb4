package proxier

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Health answers kube-proxy's /healthz and /livez: healthy when the last successful sync is
// no older than Timeout (2 × the sync period). /healthz is also unhealthy while the node is
// being deleted (nodeEligible false), /livez ignores that, as upstream.
type Health struct {
	clock   clock.PassiveClock
	timeout time.Duration
	family  string

	mu           sync.Mutex
	lastUpdated  time.Time
	nodeEligible bool
}

// NewHealth builds a Health that is unhealthy until the first successful sync. family
// ("IPv4" or "IPv6") keys the per-family status in the JSON body, as kube-proxy's.
func NewHealth(timeout time.Duration, family string, c clock.PassiveClock) *Health {
	if c == nil {
		c = clock.RealClock{}
	}
	return &Health{clock: c, timeout: timeout, family: family, nodeEligible: true}
}

// Updated records a successful sync.
func (h *Health) Updated() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastUpdated = h.clock.Now()
}

// SetNodeEligible is false while the node kproxy runs on is being deleted.
func (h *Health) SetNodeEligible(eligible bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodeEligible = eligible
}

// healthStatus is the JSON body of /healthz and /livez, kube-proxy's fields.
type healthStatus struct {
	LastUpdated  string                  `json:"lastUpdated"`
	CurrentTime  string                  `json:"currentTime"`
	NodeEligible *bool                   `json:"nodeEligible,omitempty"`
	Healthy      bool                    `json:"healthy"`
	Status       map[string]familyStatus `json:"status,omitempty"`
}

// familyStatus is the health of the proxier of one IP family.
type familyStatus struct {
	LastUpdated string `json:"lastUpdated"`
	Healthy     bool   `json:"healthy"`
}

// status reports whether the proxy is healthy, with the JSON body to serve.
func (h *Health) status(checkNode bool) (bool, healthStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clock.Now()
	synced := !h.lastUpdated.IsZero() && now.Sub(h.lastUpdated) <= h.timeout
	st := healthStatus{CurrentTime: now.UTC().Format(time.RFC3339Nano), Healthy: synced}
	if !h.lastUpdated.IsZero() {
		st.LastUpdated = h.lastUpdated.UTC().Format(time.RFC3339Nano)
		st.Status = map[string]familyStatus{h.family: {LastUpdated: st.LastUpdated, Healthy: synced}}
	}
	if checkNode {
		eligible := h.nodeEligible
		st.NodeEligible = &eligible
		return synced && eligible, st
	}
	return synced, st
}

// Handler serves /healthz and /livez.
func (h *Health) Handler() http.Handler {
	mux := http.NewServeMux()
	serve := func(checkNode bool) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			ok, st := h.status(checkNode)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			if ok {
				w.WriteHeader(http.StatusOK)
			} else {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			_ = json.NewEncoder(w).Encode(st)
		}
	}
	mux.HandleFunc("/healthz", serve(true))
	mux.HandleFunc("/livez", serve(false))
	return mux
}
