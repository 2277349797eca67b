package proxy

import (
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/invalidation"
)

// Metrics are the proxy's Prometheus collectors. Label values are policy
// prefixes, pool names, command names the upstream knows, and fixed words;
// never keys.
//
// What every command touches (hits, misses, commands by name) is counted on
// sharded counters: each client adds to the shard of its id, on a cache line
// of that shard's own, and a scrape sums the shards. A shared counter would
// make every core's hit bounce one cache line; see BenchmarkHitPath.
type Metrics struct {
	reg prometheus.Registerer

	hits, misses *shardedVec // by policy prefix; they outlive reloads
	commands     *commandCounters
	staleServed  *prometheus.CounterVec // by policy prefix; rare, so not sharded

	invalidations *prometheus.CounterVec
	inv           struct{ write, keyspace, flush, admin, reload prometheus.Counter }

	upstream     *prometheus.HistogramVec
	upstreamErrs *prometheus.CounterVec
	upClass      [numBatchClasses]struct {
		latency prometheus.Observer
		errs    prometheus.Counter
	}

	clients  prometheus.Gauge
	accepted prometheus.Counter
	refused  *prometheus.CounterVec
	dropped  *prometheus.CounterVec // by limit (limits.go)
	caching  prometheus.Gauge

	reloads      *prometheus.CounterVec
	reloadOK     prometheus.Gauge
	reloadResult struct{ ok, failed prometheus.Counter }

	// pools is set by New: the L1 pools the per-pool gauges read.
	pools atomic.Pointer[pools]
	start time.Time
}

// NewMetrics registers the proxy's collectors on reg. A Metrics serves one
// Server.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg:      reg,
		hits:     newShardedVec("cacheproxy_l1_hits_total", "Cacheable reads answered from the L1, by policy prefix.", "policy"),
		misses:   newShardedVec("cacheproxy_l1_misses_total", "Cacheable reads the L1 could not answer, by policy prefix.", "policy"),
		commands: newCommandCounters(),
		staleServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cacheproxy_l1_stale_served_total",
			Help: "Cacheable reads answered with a stale reply because the upstream could not be reached (stale_if_error), by policy prefix.",
		}, []string{"policy"}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cacheproxy_invalidations_total",
			Help: "L1 invalidations by source: write (a key written through the proxy), keyspace (a key notified by the upstream), " +
				"flush (whole databases: FLUSHDB, FLUSHALL, SWAPDB, a lost subscription), admin (CACHEPROXY FLUSH, per policy or pool), " +
				"reload (a policy changed or removed by a reload).",
		}, []string{"source"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cacheproxy_upstream_request_duration_seconds",
			Help: "Time from sending a client's pipelined commands upstream to their last reply, by class: read (cache misses only), " +
				"write (at least one write), dedicated (transactions and blocking commands, on a connection of their own), other.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
		}, []string{"class"}),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cacheproxy_upstream_errors_total",
			Help: "Upstream round trips that failed because the connection broke or could not be made, by class.",
		}, []string{"class"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cacheproxy_connected_clients",
			Help: "Client connections currently open.",
		}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cacheproxy_client_connections_accepted_total",
			Help: "Client connections accepted.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cacheproxy_client_connections_refused_total",
			Help: "Client connections closed on arrival, by reason: max_clients (limits.max_clients reached), shutdown.",
		}, []string{"reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cacheproxy_client_disconnects_total",
			Help: "Client connections closed by the proxy over a limit, by reason: output_buffer (client_output_buffer_limit), " +
				"query_buffer (client_query_buffer_limit), clients_memory (clients_max_memory), timeout (idle longer than limits.timeout).",
		}, []string{"reason"}),
		caching: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cacheproxy_caching_enabled",
			Help: "1 while the L1 may serve and store replies; 0 while the invalidation stream cannot be trusted.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cacheproxy_config_reloads_total",
			Help: "Configuration reloads, by result: success, failure (the file was rejected and the running policies kept).",
		}, []string{"result"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cacheproxy_config_last_reload_successful",
			Help: "1 if the last reload was applied (or none was tried), 0 if it was rejected.",
		}),
		start: time.Now(),
	}
	m.inv.write = m.invalidations.WithLabelValues("write")
	m.inv.keyspace = m.invalidations.WithLabelValues("keyspace")
	m.inv.flush = m.invalidations.WithLabelValues("flush")
	m.inv.admin = m.invalidations.WithLabelValues("admin")
	m.inv.reload = m.invalidations.WithLabelValues("reload")
	for c := range batchClass(numBatchClasses) {
		m.upClass[c].latency = m.upstream.WithLabelValues(c.String())
		m.upClass[c].errs = m.upstreamErrs.WithLabelValues(c.String())
	}
	m.refused.WithLabelValues("max_clients")
	m.refused.WithLabelValues("shutdown")
	m.refused.WithLabelValues("protected_mode")
	m.reloadResult.ok = m.reloads.WithLabelValues("success")
	m.reloadResult.failed = m.reloads.WithLabelValues("failure")
	m.reloadOK.Set(1)
	reg.MustRegister(m.hits, m.misses, m.commands, m.staleServed, m.invalidations, m.upstream, m.upstreamErrs,
		m.clients, m.accepted, m.refused, m.dropped, m.caching, m.reloads, m.reloadOK, poolCollector{m})
	return m
}

// Reloaded records the outcome of a configuration reload.
func (m *Metrics) Reloaded(ok bool) {
	if ok {
		m.reloadResult.ok.Inc()
		m.reloadOK.Set(1)
	} else {
		m.reloadResult.failed.Inc()
		m.reloadOK.Set(0)
	}
}

// ObserveSubscriber exports the invalidation subscriber's health, read from
// state at each scrape.
func (m *Metrics) ObserveSubscriber(state func() invalidation.State) {
	m.reg.MustRegister(subscriberCollector{state: state, start: m.start})
}

// batchClass is what kind of commands one upstream round trip carried.
type batchClass uint8

const (
	classRead      batchClass = iota // only cache misses (fills, MGET of misses)
	classWrite                       // at least one write
	classDedicated                   // a transaction or blocking command on a dedicated connection
	classOther                       // anything else forwarded
	numBatchClasses
)

func (b batchClass) String() string {
	return [...]string{"read", "write", "dedicated", "other"}[b]
}

// observeUpstream records the round trip of c's batch, sent at start.
func (c *client) observeUpstream(start time.Time) {
	m := &c.s.metrics.upClass[c.batchClass()]
	m.latency.Observe(time.Since(start).Seconds())
	if c.batch.Err() != nil {
		m.errs.Inc()
	}
}

// batchClass classifies c's batch by its most telling command.
func (c *client) batchClass() batchClass {
	if c.tx != nil {
		return classDedicated
	}
	class := classRead
	for i := range c.slots {
		switch c.slots[i].kind {
		case slotWrite:
			return classWrite
		case slotUp, slotTx:
			class = classOther
		}
	}
	return class
}

// countCommand counts one command by name. A routed command (every command
// of the hit path) is counted on the connection, without an atomic, and
// published when its batch ends (publishCounts); the rest are counted by the
// upstream's command table at once, so the label set is bounded by what the
// upstream knows (info, nil when unknown), and "other" takes the rest.
func (c *client) countCommand(rt *routeInfo, info *commands.Info) {
	if rt.kind == routeOther {
		c.s.metrics.commands.byInfo(info).add(c.id)
		return
	}
	cc := &c.counts
	if cc.n == nil {
		cc.n = make([]uint32, len(routes))
	}
	if cc.n[rt.id] == 0 {
		cc.touched = append(cc.touched, uint16(rt.id))
	}
	cc.n[rt.id]++
}

// commandCounts are a connection's routed commands not yet published.
type commandCounts struct {
	n       []uint32 // by routeInfo.id
	touched []uint16 // ids whose n is not 0
}

// publishCounts adds the connection's pending command counts to the shared
// counters: once per batch and name, rather than once per command.
func (c *client) publishCounts() {
	cc := &c.counts
	m := c.s.metrics.commands
	for _, id := range cc.touched {
		m.routed[id].addN(c.id, uint64(cc.n[id]))
		cc.n[id] = 0
	}
	cc.touched = cc.touched[:0]
}

// shardedCounter is a counter that many goroutines add to without sharing a
// cache line, as long as their ids differ modulo the number of shards.
type shardedCounter struct {
	shards []paddedUint64
	mask   uint64
}

type paddedUint64 struct {
	n atomic.Uint64
	_ [56]byte
}

// counterShards is a power of two at least GOMAXPROCS, so that clients on
// different cores rarely share a shard.
var counterShards = func() int {
	n := 1
	for n < runtime.GOMAXPROCS(0) && n < 64 {
		n <<= 1
	}
	return max(n, 4)
}()

func newShardedCounter() *shardedCounter {
	return &shardedCounter{shards: make([]paddedUint64, counterShards), mask: uint64(counterShards - 1)}
}

func (s *shardedCounter) add(id int64) { s.shards[uint64(id)&s.mask].n.Add(1) }

func (s *shardedCounter) addN(id int64, n uint64) { s.shards[uint64(id)&s.mask].n.Add(n) }

func (s *shardedCounter) value() uint64 {
	var n uint64
	for i := range s.shards {
		n += s.shards[i].n.Load()
	}
	return n
}

// shardedVec is a counter family of one label whose children live as long as
// the Metrics: a policy that a reload removes and a later one restores goes on
// counting where it was.
type shardedVec struct {
	desc *prometheus.Desc
	mu   sync.Mutex // guards kids
	kids map[string]*shardedCounter
}

func newShardedVec(name, help, label string) *shardedVec {
	return &shardedVec{
		desc: prometheus.NewDesc(name, help, []string{label}, nil),
		kids: map[string]*shardedCounter{},
	}
}

// child returns the counter for value, creating it.
func (v *shardedVec) child(value string) *shardedCounter {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.kids[value]
	if !ok {
		c = newShardedCounter()
		v.kids[value] = c
	}
	return c
}

func (v *shardedVec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

func (v *shardedVec) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for value, c := range v.kids {
		ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, float64(c.value()), value)
	}
}

// total is the sum over every label value.
func (v *shardedVec) total() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	var n uint64
	for _, c := range v.kids {
		n += c.value()
	}
	return n
}

// commandCounters count commands by name: routed ones in a slice indexed by
// routeInfo.id, the others by their command-table entry, in a map that is
// copied on the rare first sight of a command.
type commandCounters struct {
	desc   *prometheus.Desc
	routed []*shardedCounter // by routeInfo.id
	other  *shardedCounter   // commands the upstream does not know

	mu    sync.Mutex // serialises writers of infos
	infos atomic.Pointer[map[*commands.Info]*shardedCounter]
}

func newCommandCounters() *commandCounters {
	c := &commandCounters{
		desc: prometheus.NewDesc("cacheproxy_commands_total",
			"Commands received from clients, by command name (lower case; containers such as CONFIG by their own name; "+
				`"other" for names the upstream does not know).`, []string{"command"}, nil),
		routed: make([]*shardedCounter, len(routes)),
		other:  newShardedCounter(),
	}
	for i := range c.routed {
		c.routed[i] = newShardedCounter()
	}
	c.infos.Store(&map[*commands.Info]*shardedCounter{})
	return c
}

func (c *commandCounters) byInfo(info *commands.Info) *shardedCounter {
	if info == nil {
		return c.other
	}
	if n, ok := (*c.infos.Load())[info]; ok {
		return n
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.infos.Load()
	if n, ok := old[info]; ok {
		return n
	}
	next := make(map[*commands.Info]*shardedCounter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	n := newShardedCounter()
	next[info] = n
	c.infos.Store(&next)
	return n
}

func (c *commandCounters) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *commandCounters) Collect(ch chan<- prometheus.Metric) {
	byName := map[string]uint64{"other": c.other.value()}
	for _, r := range routes {
		byName[r.name] += c.routed[r.id].value()
	}
	for info, n := range *c.infos.Load() {
		// Subcommands count under their command: the label is CONFIG, not
		// CONFIG|GET.
		name, _, _ := strings.Cut(info.Name, "|")
		byName[name] += n.value()
	}
	for name, n := range byName {
		if n > 0 || name == "other" {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), name)
		}
	}
}

// poolCollector exports each L1 pool's figures, read at scrape time.
type poolCollector struct{ m *Metrics }

var (
	poolBytesDesc = prometheus.NewDesc("cacheproxy_l1_bytes",
		"Bytes the L1 pool holds, as counted against its budget.", []string{"pool"}, nil)
	poolMaxDesc = prometheus.NewDesc("cacheproxy_l1_max_bytes",
		"The L1 pool's memory budget.", []string{"pool"}, nil)
	poolEntriesDesc = prometheus.NewDesc("cacheproxy_l1_entries",
		"Keys the L1 pool holds, including entries hidden by a flush or a reload until they are evicted or replaced.", []string{"pool"}, nil)
	poolEvictionsDesc = prometheus.NewDesc("cacheproxy_l1_evictions_total",
		"Entries evicted to keep the L1 pool within its budget.", []string{"pool"}, nil)
	poolStoredDesc = prometheus.NewDesc("cacheproxy_l1_fills_stored_total",
		"Upstream replies stored in the L1 pool.", []string{"pool"}, nil)
	poolDroppedDesc = prometheus.NewDesc("cacheproxy_l1_fills_dropped_total",
		"Upstream replies not stored, by reason: stale (the key changed while it was read), rejected (no room, or refused by admission), "+
			"too_large (over the policy's max_value_bytes), uncacheable (an error, a nil the policy does not cache, a key about to expire).",
		[]string{"pool", "reason"}, nil)
)

func (p poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolBytesDesc, poolMaxDesc, poolEntriesDesc, poolEvictionsDesc, poolStoredDesc, poolDroppedDesc} {
		ch <- d
	}
}

func (p poolCollector) Collect(ch chan<- prometheus.Metric) {
	ps := p.m.pools.Load()
	if ps == nil {
		return
	}
	for i, name := range ps.names {
		c := ps.caches[i]
		st := c.Stats()
		gauge := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), name)
		}
		counter := func(d *prometheus.Desc, v int64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{name}, labels...)...)
		}
		gauge(poolBytesDesc, st.Bytes)
		gauge(poolMaxDesc, c.MaxBytes())
		gauge(poolEntriesDesc, st.Entries)
		counter(poolEvictionsDesc, st.Evictions)
		counter(poolStoredDesc, st.Stored)
		counter(poolDroppedDesc, st.DroppedStale, "stale")
		counter(poolDroppedDesc, st.DroppedReject, "rejected")
		counter(poolDroppedDesc, st.DroppedTooLarge, "too_large")
		counter(poolDroppedDesc, st.Declined, "uncacheable")
	}
}

// subscriberCollector exports the invalidation subscriber's state.
type subscriberCollector struct {
	state func() invalidation.State
	start time.Time
}

var (
	subSubscribedDesc = prometheus.NewDesc("cacheproxy_invalidation_subscribed",
		"1 while the invalidation stream is confirmed and the L1 may cache.", nil, nil)
	subReconnectsDesc = prometheus.NewDesc("cacheproxy_invalidation_reconnects_total",
		"Confirmed invalidation subscriptions that were lost (each one flushed the L1).", nil, nil)
	subMessagesDesc = prometheus.NewDesc("cacheproxy_invalidation_messages_total",
		"Invalidation messages received from the upstream.", nil, nil)
	subAgeDesc = prometheus.NewDesc("cacheproxy_invalidation_last_message_age_seconds",
		"Seconds since the last invalidation message, or since the proxy started when none has arrived.", nil, nil)
	subLagDesc = prometheus.NewDesc("cacheproxy_invalidation_lag_seconds",
		"How long the last canary write took to come back as an invalidation (or has been waiting, if longer): the notification lag.", nil, nil)
)

func (s subscriberCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{subSubscribedDesc, subReconnectsDesc, subMessagesDesc, subAgeDesc, subLagDesc} {
		ch <- d
	}
}

func (s subscriberCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.state()
	subscribed := 0.0
	if st.Subscribed {
		subscribed = 1
	}
	last := st.LastMessage
	if last.IsZero() {
		last = s.start
	}
	ch <- prometheus.MustNewConstMetric(subSubscribedDesc, prometheus.GaugeValue, subscribed)
	ch <- prometheus.MustNewConstMetric(subReconnectsDesc, prometheus.CounterValue, float64(st.Reconnects))
	ch <- prometheus.MustNewConstMetric(subMessagesDesc, prometheus.CounterValue, float64(st.Messages))
	ch <- prometheus.MustNewConstMetric(subAgeDesc, prometheus.GaugeValue, time.Since(last).Seconds())
	ch <- prometheus.MustNewConstMetric(subLagDesc, prometheus.GaugeValue, st.Lag.Seconds())
}
