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

// Health answers kube-proxy's /healthz and /livez: healthy when, for every IP family kproxy
// programs, the last successful sync is no older than the timeout (2 × the sync period).
// /healthz is also unhealthy while the node is being deleted (nodeEligible false); /livez
// ignores that, as upstream.
type Health struct {
	clock    clock.PassiveClock
	timeout  time.Duration
	families []string

	mu           sync.Mutex
	lastUpdated  map[string]time.Time
	nodeEligible bool
	checks       []namedCheck

	healthzTotal, livezTotal *prometheus.CounterVec
}

// NewHealth builds a Health for the given families ("IPv4", "IPv6"), unhealthy until each
// has synced once.
func NewHealth(timeout time.Duration, families []string, c clock.PassiveClock) *Health {
	if c == nil {
		c = clock.RealClock{}
	}
	return &Health{clock: c, timeout: timeout, families: families,
		lastUpdated: map[string]time.Time{}, nodeEligible: true}
}

// Without stops waiting for family (a family whose proxier could not start). It is meant
// for start-up, before the health is served.
func (h *Health) Without(family string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var keep []string
	for _, f := range h.families {
		if f != family {
			keep = append(keep, f)
		}
	}
	h.families = keep
}

type namedCheck struct {
	name  string
	check func() error
	// readinessOnly checks make /healthz unhealthy but not Healthy, the verdict the
	// health-check node ports serve.
	readinessOnly bool
}

// AddCheck makes /healthz unhealthy while check returns an error (the datapath without a
// pod CIDR); the error is served under "checks". /livez ignores it. For start-up, before the
// health is served.
func (h *Health) AddCheck(name string, check func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name: name, check: check})
}

// AddReadinessCheck is AddCheck for a condition that must not reach the health-check node
// ports (Healthy ignores it): an apiserver outage seen by every node at once would otherwise
// make the load balancers drain every node, while the rules in place still work.
func (h *Health) AddReadinessCheck(name string, check func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name: name, check: check, readinessOnly: true})
}

// CountRequests makes the handlers count their answers by HTTP code
// (kubeproxy_proxy_healthz_total, kubeproxy_proxy_livez_total).
func (h *Health) CountRequests(healthz, livez *prometheus.CounterVec) {
	h.healthzTotal, h.livezTotal = healthz, livez
}

// Resumed is for a family whose kernel already holds the rules of a proxy that ran before
// (a restart): they keep working while the first sync runs, so /healthz answers 200 from now
// until the timeout, as if a sync had just succeeded; a load balancer that checks /healthz
// then does not drain the node for a restart. Without it a family is unhealthy until its
// first sync. (kube-proxy answers 200 while it starts whatever the kernel holds.)
func (h *Health) Resumed(family string) { h.Updated(family) }

// Updated records a successful sync of one family.
func (h *Health) Updated(family string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastUpdated[family] = h.clock.Now()
}

// SetNodeEligible is false while the node kproxy runs on is being deleted.
func (h *Health) SetNodeEligible(eligible bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodeEligible = eligible
}

// Healthy is /healthz's verdict (every family synced recently and the node eligible)
// without the readiness-only checks: what the health-check node ports serve.
func (h *Health) Healthy() bool {
	ok, _ := h.status(scopeServiceHealth)
	return ok
}

// scope is which checks a verdict includes.
type scope int

const (
	scopeLivez         scope = iota // sync staleness only
	scopeServiceHealth              // and node eligibility and the checks that are not readiness-only
	scopeHealthz                    // and every check
)

// healthStatus is the JSON body of /healthz and /livez, kube-proxy's fields.
type healthStatus struct {
	LastUpdated  string                  `json:"lastUpdated"`
	CurrentTime  string                  `json:"currentTime"`
	NodeEligible *bool                   `json:"nodeEligible,omitempty"`
	Healthy      bool                    `json:"healthy"`
	Status       map[string]familyStatus `json:"status,omitempty"`
	Checks       map[string]string       `json:"checks,omitempty"`
}

// familyStatus is the health of the proxier of one IP family.
type familyStatus struct {
	LastUpdated string `json:"lastUpdated"`
	Healthy     bool   `json:"healthy"`
}

// status reports whether the proxy is healthy, with the JSON body to serve. lastUpdated is
// the most recent sync of any family, as upstream.
func (h *Health) status(sc scope) (bool, healthStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.clock.Now()
	st := healthStatus{CurrentTime: now.UTC().Format(time.RFC3339Nano), Healthy: true}
	var newest time.Time
	for _, fam := range h.families {
		last, ok := h.lastUpdated[fam]
		synced := ok && now.Sub(last) <= h.timeout
		st.Healthy = st.Healthy && synced
		if !ok {
			continue
		}
		if st.Status == nil {
			st.Status = map[string]familyStatus{}
		}
		st.Status[fam] = familyStatus{LastUpdated: last.UTC().Format(time.RFC3339Nano), Healthy: synced}
		if last.After(newest) {
			newest = last
		}
	}
	if !newest.IsZero() {
		st.LastUpdated = newest.UTC().Format(time.RFC3339Nano)
	}
	if sc != scopeLivez {
		eligible := h.nodeEligible
		st.NodeEligible = &eligible
		checked := true
		for _, c := range h.checks {
			if c.readinessOnly && sc != scopeHealthz {
				continue
			}
			if err := c.check(); err != nil {
				if st.Checks == nil {
					st.Checks = map[string]string{}
				}
				st.Checks[c.name] = err.Error()
				checked = false
			}
		}
		return st.Healthy && eligible && checked, st
	}
	return st.Healthy, st
}

// Handler serves /healthz and /livez.
func (h *Health) Handler() http.Handler {
	mux := http.NewServeMux()
	serve := func(sc scope, counter *prometheus.CounterVec) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			ok, st := h.status(sc)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			code := http.StatusOK
			if !ok {
				code = http.StatusServiceUnavailable
			} else {
				// As kube-proxy: a healthy answer reports the current time as lastUpdated;
				// status.<family>.lastUpdated keeps the time of the last sync.
				st.LastUpdated = st.CurrentTime
			}
			if counter != nil {
				counter.WithLabelValues(strconv.Itoa(code)).Inc()
			}
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(st)
		}
	}
	mux.HandleFunc("/healthz", serve(scopeHealthz, h.healthzTotal))
	mux.HandleFunc("/livez", serve(scopeLivez, h.livezTotal))
	return mux
}
