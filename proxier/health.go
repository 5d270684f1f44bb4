package proxier

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

	healthzTotal, livezTotal *prometheus.CounterVec
}

// CountRequests makes the handlers count their answers by HTTP code
// (kubeproxy_proxy_healthz_total, kubeproxy_proxy_livez_total).
func (h *Health) CountRequests(healthz, livez *prometheus.CounterVec) {
	h.healthzTotal, h.livezTotal = healthz, livez
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

// Healthy is /healthz's verdict (synced recently and the node eligible).
func (h *Health) Healthy() bool {
	ok, _ := h.status(true)
	return ok
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
	serve := func(checkNode bool, counter *prometheus.CounterVec) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			ok, st := h.status(checkNode)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			code := http.StatusOK
			if !ok {
				code = http.StatusServiceUnavailable
			}
			if counter != nil {
				counter.WithLabelValues(strconv.Itoa(code)).Inc()
			}
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(st)
		}
	}
	mux.HandleFunc("/healthz", serve(true, h.healthzTotal))
	mux.HandleFunc("/livez", serve(false, h.livezTotal))
	return mux
}
