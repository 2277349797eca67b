package proxy

import (
	"context"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/l1"
	"github.com/cacheproxy/cacheproxy/policy"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// env is a proxy in front of its own real redis-server.
type env struct {
	t      testing.TB
	redis  *redistest.Server
	addr   string // the proxy's
	srv    *Server
	cache  *l1.Cache
	reg    *prometheus.Registry
	sub    *invalidation.Subscriber
	direct *redis.Client // straight to Redis, db 0
}

type envOptions struct {
	redis          redistest.Options
	allowConfigSet bool
	policies       []policy.Policy
	afterUpstream  func()
	maxClients     int
	// The invalidation stream's settings (zero: the package's defaults), and
	// a wrapper around the proxy's Target to watch what it is told.
	mode                                        invalidation.Mode
	canaryInterval, canaryTimeout, pollInterval time.Duration
	wrapTarget                                  func(invalidation.Target) invalidation.Target
	// options adjusts the proxy's Options (auth, limits) before New.
	options func(*Options)
	// via, when set, is the address the proxy reaches Redis at (data and
	// invalidation stream), given Redis's own: a fault bridge's.
	via func(redisAddr string) string
	// requestTimeout is the upstream pools' RequestTimeout; staleBytes, when
	// set, sizes the L1's stale_if_error store.
	requestTimeout time.Duration
	staleBytes     int64
}

// testPolicies cache everything for a minute except keys under "nocache:".
var testPolicies = []policy.Policy{
	{Prefix: "", Cache: true, TTL: time.Minute, CacheNil: true},
	{Prefix: "nocache:", Cache: false},
	{Prefix: "nonil:", Cache: true, TTL: time.Minute, CacheNil: false},
}

func startEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.policies == nil {
		o.policies = testPolicies
	}
	r := redistest.Start(t, o.redis)
	ctx, cancel := context.WithCancel(context.Background())
	table, err := commands.Load(ctx, r.Client(0))
	if err != nil {
		t.Fatal(err)
	}
	cfg := l1.Config{MaxBytes: 64 << 20}
	if o.staleBytes > 0 {
		if cfg.Last, err = l1.NewLast(o.staleBytes); err != nil {
			t.Fatal(err)
		}
	}
	cache, err := l1.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pols, err := policy.Compile(o.policies)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	upAddr := r.Addr()
	if o.via != nil {
		upAddr = o.via(upAddr)
	}
	ucfg := upstream.Config{Addr: upAddr, RequestTimeout: o.requestTimeout}
	pool, err := upstream.New(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	ucfg.Protocol = 3
	pool3, err := upstream.New(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Upstream:   pool,
		Upstream3:  pool3,
		Commands:   table,
		Cache:      cache,
		Policies:   pols,
		Metrics:    NewMetrics(reg),
		Limits:     resp.DefaultLimits(),
		Version:    redisVersion(t, r),
		MaxClients: o.maxClients,
	}
	if o.options != nil {
		o.options(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.afterUpstream = o.afterUpstream
	target := srv.KeyspaceTarget()
	if o.wrapTarget != nil {
		target = o.wrapTarget(target)
	}
	sub := invalidation.New(invalidation.Config{
		Options:        &redis.Options{Addr: upAddr},
		Mode:           o.mode,
		AllowConfigSet: o.allowConfigSet,
		Prefixes:       srv.CachedPrefixes(),
		CanaryInterval: o.canaryInterval,
		CanaryTimeout:  o.canaryTimeout,
		PollInterval:   o.pollInterval,
	}, target)
	subDone := make(chan struct{})
	go func() { defer close(subDone); _ = sub.Run(ctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan struct{})
	go func() { defer close(serveDone); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-serveDone
		cancel()
		<-subDone
		pool.Close()
		pool3.Close()
		cache.Close()
	})
	e := &env{t: t, redis: r, addr: ln.Addr().String(), srv: srv, cache: cache, reg: reg, sub: sub, direct: r.Client(0)}
	return e
}

// redisVersion is r's redis_version, which the proxy reports in HELLO, as
// cmd/cacheproxy passes it.
func redisVersion(t testing.TB, r *redistest.Server) string {
	t.Helper()
	info, err := r.Client(0).Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
			return v
		}
	}
	t.Fatalf("no redis_version in INFO server:\n%s", info)
	return ""
}

// waitSubscribed waits until the L1 may cache, i.e. the keyspace subscription
// is confirmed.
func (e *env) waitSubscribed() {
	e.t.Helper()
	select {
	case <-e.sub.Ready():
	case <-time.After(10 * time.Second):
		e.t.Fatal("invalidation subscription not confirmed within 10s")
	}
}

// client is a go-redis client of the proxy, as an application would make it
// (RESP3 first, falling back to RESP2).
func (e *env) client(db int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: e.addr, DB: db, MaxRetries: -1})
	e.t.Cleanup(func() { c.Close() })
	return c
}

// counter sums a counter family's value over label sets matching labels.
func (e *env) counter(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matchLabels(m, labels) {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func matchLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

var cmdstatRe = regexp.MustCompile(`(?m)^cmdstat_([a-z|]+):calls=(\d+)`)

// upstreamCalls is how many times Redis itself ran each command.
func (e *env) upstreamCalls() map[string]int {
	e.t.Helper()
	info, err := e.direct.Info(context.Background(), "commandstats").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	calls := map[string]int{}
	for _, m := range cmdstatRe.FindAllStringSubmatch(info, -1) {
		n, _ := strconv.Atoi(m[2])
		calls[m[1]] = n
	}
	return calls
}

// eventually polls cond every millisecond until it holds or bound passes, and
// returns how long it took. It is for waiting, not for timing claims.
func eventually(t testing.TB, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// rawConn is a plain TCP client for byte-level comparisons.
type rawConn struct {
	t testing.TB
	c net.Conn
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c}
}

// roundTrip sends req and reads until want replies have arrived (counted with
// the reply scanner) or the connection closes.
func (r *rawConn) roundTrip(req string, want int) string {
	r.t.Helper()
	if _, err := r.c.Write([]byte(req)); err != nil {
		r.t.Fatal(err)
	}
	_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf []byte
	tmp := make([]byte, 64<<10)
	for {
		n := 0
		rest := buf
		for n < want {
			l, err := resp.ReplyLen(rest)
			if err != nil || l == 0 {
				break
			}
			rest = rest[l:]
			n++
		}
		if n == want {
			return string(buf)
		}
		m, err := r.c.Read(tmp)
		buf = append(buf, tmp[:m]...)
		if err != nil {
			return string(buf)
		}
	}
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

var redistestNoEvents = redistest.Options{NotifyKeyspaceEvents: "none"}

// batchHold holds one upstream batch after its replies arrive and before they
// settle, as envOptions.afterUpstream: Arm it, wait on Held, then Release.
type batchHold struct {
	armed   atomic.Bool
	held    chan struct{}
	release chan struct{}
}

func newBatchHold() *batchHold {
	return &batchHold{held: make(chan struct{}), release: make(chan struct{})}
}

func (h *batchHold) hook() {
	if h.armed.CompareAndSwap(true, false) {
		close(h.held)
		<-h.release
	}
}

// Arm makes the next batch to come back from the upstream wait.
func (h *batchHold) Arm() { h.armed.Store(true) }

// Held returns once the armed batch is waiting.
func (h *batchHold) Held() { <-h.held }

// Release lets it go on.
func (h *batchHold) Release() { close(h.release) }

// waitKeyspaceEvents waits until n keyspace invalidations have arrived, e.g.
// the event of a SET, so that it cannot spoil a fill made after it.
func (e *env) waitKeyspaceEvents(n float64) {
	e.t.Helper()
	eventually(e.t, 5*time.Second, "keyspace events", func() bool {
		return e.counter("cacheproxy_invalidations_total", map[string]string{"source": "keyspace"}) >= n
	})
}
