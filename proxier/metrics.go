package proxier

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the kube-proxy metrics kproxy exports, under kube-proxy's names and labels,
// in a registry of its own (no global state). Per-family metrics are read through For.
type Metrics struct {
	Registry *prometheus.Registry

	syncDuration        *prometheus.HistogramVec
	syncFullDuration    *prometheus.HistogramVec
	syncPartialDuration *prometheus.HistogramVec
	lastSyncTimestamp   *prometheus.GaugeVec
	lastQueuedTimestamp *prometheus.GaugeVec
	networkProgramming  *prometheus.HistogramVec
	syncFailures        *prometheus.CounterVec
	conntrackDeleted    *prometheus.CounterVec

	EndpointChanges prometheus.Counter
	ServiceChanges  prometheus.Counter
	HealthzTotal    *prometheus.CounterVec // label code
	LivezTotal      *prometheus.CounterVec // label code
}

// FamilyMetrics are the metrics of the proxier of one IP family.
type FamilyMetrics struct {
	SyncDuration        prometheus.Observer
	SyncFullDuration    prometheus.Observer
	SyncPartialDuration prometheus.Observer
	LastSyncTimestamp   prometheus.Gauge
	LastQueuedTimestamp prometheus.Gauge
	NetworkProgramming  prometheus.Observer
	SyncFailures        prometheus.Counter
	ConntrackDeleted    prometheus.Counter
	EndpointChanges     prometheus.Counter
	ServiceChanges      prometheus.Counter
}

// NewMetrics registers the metrics in a new registry.
func NewMetrics() *Metrics {
	syncBuckets := prometheus.ExponentialBuckets(0.001, 2, 15)
	family := []string{"ip_family"}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kubeproxy", Name: "sync_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds", Buckets: syncBuckets,
		}, family),
		syncFullDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kubeproxy", Name: "sync_full_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds for full resyncs", Buckets: syncBuckets,
		}, family),
		syncPartialDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kubeproxy", Name: "sync_partial_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds for partial resyncs", Buckets: syncBuckets,
		}, family),
		lastSyncTimestamp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "kubeproxy", Name: "sync_proxy_rules_last_timestamp_seconds",
			Help: "The last time proxy rules were successfully synced",
		}, family),
		lastQueuedTimestamp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "kubeproxy", Name: "sync_proxy_rules_last_queued_timestamp_seconds",
			Help: "The last time a sync of proxy rules was queued",
		}, family),
		networkProgramming: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kubeproxy", Name: "network_programming_duration_seconds",
			Help: "In Cluster Network Programming Latency in seconds",
			Buckets: merge(
				prometheus.LinearBuckets(0.25, 0.25, 2), // 0.25s, 0.50s
				prometheus.LinearBuckets(1, 1, 59),      // 1s .. 59s
				prometheus.LinearBuckets(60, 5, 12),     // 60s .. 115s
				prometheus.LinearBuckets(120, 30, 7),    // 2min .. 5min
			),
		}, family),
		syncFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubeproxy", Name: "sync_proxy_rules_failures_total",
			Help: "Cumulative proxy rules sync failures (kproxy's own; kube-proxy counts restore failures per backend)",
		}, family),
		conntrackDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubeproxy", Name: "conntrack_reconciler_deleted_entries_total",
			Help: "Cumulative conntrack flows deleted by conntrack reconciler",
		}, family),
		EndpointChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kubeproxy", Name: "sync_proxy_rules_endpoint_changes_total",
			Help: "Cumulative proxy rules Endpoint changes",
		}),
		ServiceChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kubeproxy", Name: "sync_proxy_rules_service_changes_total",
			Help: "Cumulative proxy rules Service changes",
		}),
		HealthzTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubeproxy", Name: "proxy_healthz_total",
			Help: "Cumulative proxy healthz HTTP status",
		}, []string{"code"}),
		LivezTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubeproxy", Name: "proxy_livez_total",
			Help: "Cumulative proxy livez HTTP status",
		}, []string{"code"}),
	}
	m.Registry.MustRegister(m.syncDuration, m.syncFullDuration, m.syncPartialDuration,
		m.lastSyncTimestamp, m.lastQueuedTimestamp, m.networkProgramming, m.syncFailures, m.conntrackDeleted,
		m.EndpointChanges, m.ServiceChanges, m.HealthzTotal, m.LivezTotal,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// For returns the metrics of one IP family ("IPv4", "IPv6").
func (m *Metrics) For(family string) *FamilyMetrics {
	return &FamilyMetrics{
		SyncDuration:        m.syncDuration.WithLabelValues(family),
		SyncFullDuration:    m.syncFullDuration.WithLabelValues(family),
		SyncPartialDuration: m.syncPartialDuration.WithLabelValues(family),
		LastSyncTimestamp:   m.lastSyncTimestamp.WithLabelValues(family),
		LastQueuedTimestamp: m.lastQueuedTimestamp.WithLabelValues(family),
		NetworkProgramming:  m.networkProgramming.WithLabelValues(family),
		SyncFailures:        m.syncFailures.WithLabelValues(family),
		ConntrackDeleted:    m.conntrackDeleted.WithLabelValues(family),
		EndpointChanges:     m.EndpointChanges,
		ServiceChanges:      m.ServiceChanges,
	}
}

func merge(bs ...[]float64) []float64 {
	var out []float64
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// ObserveSync records one successful or failed sync.
func (m *FamilyMetrics) ObserveSync(d time.Duration, full bool, err error, now time.Time) {
	m.SyncDuration.Observe(d.Seconds())
	if full {
		m.SyncFullDuration.Observe(d.Seconds())
	} else {
		m.SyncPartialDuration.Observe(d.Seconds())
	}
	if err != nil {
		m.SyncFailures.Inc()
		return
	}
	m.LastSyncTimestamp.Set(float64(now.UnixNano()) / 1e9)
}

// Handler serves /metrics and /proxyMode (mode is the proxy mode's name).
func (m *Metrics) Handler(mode string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/proxyMode", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = fmt.Fprint(w, mode)
	})
	return mux
}
