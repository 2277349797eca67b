package proxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheproxy/cacheproxy/l1"
)

// counter is what the hot path needs of a Prometheus counter.
type counter interface{ Inc() }

// Metrics are the proxy's Prometheus collectors. Label values are policy
// prefixes and fixed words, never keys.
type Metrics struct {
	hits, misses  *prometheus.CounterVec
	invalidations *prometheus.CounterVec
	inv           struct{ write, keyspace, flush prometheus.Counter }
	upstream      prometheus.Histogram
	upstreamErrs  prometheus.Counter
	clients       prometheus.Gauge
	caching       prometheus.Gauge
}

// NewMetrics registers the proxy's collectors, and gauges read from cache, on reg.
func NewMetrics(reg prometheus.Registerer, cache *l1.Cache) *Metrics {
	m := &Metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cacheproxy_l1_hits_total",
			Help: "Cacheable reads answered from the L1, by policy prefix.",
		}, []string{"policy"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cacheproxy_l1_misses_total",
			Help: "Cacheable reads the L1 could not answer, by policy prefix.",
		}, []string{"policy"}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cacheproxy_invalidations_total",
			Help: "L1 invalidations by source: write (through the proxy), keyspace (notification), flush (whole databases).",
		}, []string{"source"}),
		upstream: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cacheproxy_upstream_request_duration_seconds",
			Help:    "Time from sending a batch of commands upstream to its last reply.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
		}),
		upstreamErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cacheproxy_upstream_errors_total",
			Help: "Batches that failed because the upstream connection broke or could not be made.",
		}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cacheproxy_connected_clients",
			Help: "Client connections currently open.",
		}),
		caching: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cacheproxy_caching_enabled",
			Help: "1 while the L1 may serve and store replies; 0 while the invalidation stream cannot be trusted.",
		}),
	}
	m.inv.write = m.invalidations.WithLabelValues("write")
	m.inv.keyspace = m.invalidations.WithLabelValues("keyspace")
	m.inv.flush = m.invalidations.WithLabelValues("flush")
	reg.MustRegister(m.hits, m.misses, m.invalidations, m.upstream, m.upstreamErrs, m.clients, m.caching)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cacheproxy_l1_bytes",
			Help: "Bytes the L1 holds, as counted against l1.max_memory.",
		}, func() float64 { return float64(cache.Stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cacheproxy_l1_entries",
			Help: "Keys the L1 holds.",
		}, func() float64 { return float64(cache.Stats().Entries) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "cacheproxy_l1_fills_stored_total",
			Help: "Upstream replies handed to the L1.",
		}, func() float64 { return float64(cache.Stats().Stored) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "cacheproxy_l1_fills_dropped_stale_total",
			Help: "Upstream replies not kept because their key was invalidated while they were read.",
		}, func() float64 { return float64(cache.Stats().DroppedStale) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "cacheproxy_l1_evictions_total",
			Help: "Entries evicted to stay within l1.max_memory.",
		}, func() float64 { return float64(cache.Stats().Evictions) }),
	)
	return m
}
