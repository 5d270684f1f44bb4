package proxier

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the kube-proxy metrics kproxy exports, under kube-proxy's names, in a
// registry of its own (no global state).
type Metrics struct {
	Registry *prometheus.Registry

	SyncDuration        prometheus.Histogram
	SyncFullDuration    prometheus.Histogram
	SyncPartialDuration prometheus.Histogram
	LastSyncTimestamp   prometheus.Gauge
	NetworkProgramming  prometheus.Histogram
	EndpointChanges     prometheus.Counter
	ServiceChanges      prometheus.Counter
	SyncFailures        prometheus.Counter
}

// NewMetrics registers the metrics in a new registry.
func NewMetrics() *Metrics {
	syncBuckets := prometheus.ExponentialBuckets(0.001, 2, 15)
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "kubeproxy", Subsystem: "sync_proxy_rules", Name: "duration_seconds",
			Help: "SyncProxyRules latency in seconds", Buckets: syncBuckets,
		}),
		SyncFullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "kubeproxy", Subsystem: "sync_full_proxy_rules", Name: "duration_seconds",
			Help: "SyncProxyRules latency in seconds for full resyncs", Buckets: syncBuckets,
		}),
		SyncPartialDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "kubeproxy", Subsystem: "sync_partial_proxy_rules", Name: "duration_seconds",
			Help: "SyncProxyRules latency in seconds for partial resyncs", Buckets: syncBuckets,
		}),
		LastSyncTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "kubeproxy", Subsystem: "sync_proxy_rules", Name: "last_timestamp_seconds",
			Help: "The last time proxy rules were successfully synced",
		}),
		NetworkProgramming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "kubeproxy", Name: "network_programming_duration_seconds",
			Help: "In Cluster Network Programming Latency in seconds",
			Buckets: merge(
				prometheus.LinearBuckets(0.25, 0.25, 2), // 0.25s, 0.50s
				prometheus.LinearBuckets(1, 1, 59),      // 1s .. 59s
				prometheus.LinearBuckets(60, 5, 12),     // 60s .. 115s
				prometheus.LinearBuckets(120, 30, 7),    // 2min .. 5min
			),
		}),
		EndpointChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kubeproxy", Subsystem: "sync_proxy_rules", Name: "endpoint_changes_total",
			Help: "Cumulative proxy rules Endpoint changes",
		}),
		ServiceChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kubeproxy", Subsystem: "sync_proxy_rules", Name: "service_changes_total",
			Help: "Cumulative proxy rules Service changes",
		}),
		SyncFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kubeproxy", Subsystem: "sync_proxy_rules", Name: "failures_total",
			Help: "Cumulative proxy rules sync failures (kproxy; kube-proxy counts restore failures per backend)",
		}),
	}
	m.Registry.MustRegister(m.SyncDuration, m.SyncFullDuration, m.SyncPartialDuration,
		m.LastSyncTimestamp, m.NetworkProgramming, m.EndpointChanges, m.ServiceChanges,
		m.SyncFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func merge(bs ...[]float64) []float64 {
	var out []float64
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// ObserveSync records one successful or failed sync.
func (m *Metrics) ObserveSync(d time.Duration, full bool, err error, now time.Time) {
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
