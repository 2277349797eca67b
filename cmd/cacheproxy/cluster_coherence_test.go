package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/upstream/cluster"
)

// cacheAll caches every key for a minute: only the invalidation streams can
// keep such a proxy coherent.
const cacheAll = "policies:\n  - {prefix: \"\", ttl: 1m}\nshutdown_grace: 0s\n"

// TestClusterCoherence runs the coherence tests against one Redis Cluster,
// since starting one costs seconds: first those that leave its topology
// alone, side by side, each with keys of its own; then, one at a time, the
// failover and the reshard under load.
func TestClusterCoherence(t *testing.T) {
	t.Parallel()
	rc := redistest.StartCluster(t, redistest.ClusterOptions{})
	url := "redis-cluster://" + strings.Join(rc.Seeds()[:2], ",")
	t.Run("steady", func(t *testing.T) {
		t.Run("ManyProxies", func(t *testing.T) {
			t.Parallel()
			manyProxies(t, url, "cmp:", rc.Client())
		})
		t.Run("DirectWritesReachL1", func(t *testing.T) {
			t.Parallel()
			testDirectWritesReachL1(t, rc, url, cacheAll)
		})
		t.Run("DirectWritesReachL1Tracking", func(t *testing.T) {
			t.Parallel()
			testDirectWritesReachL1(t, rc, url, cacheAll+"invalidation: {mode: tracking}\n")
		})
		t.Run("Stress", func(t *testing.T) {
			t.Parallel()
			testClusterStress(t, rc, url)
		})
	})
	t.Run("FailoverUnderLoad", func(t *testing.T) { testFailoverUnderLoad(t, rc, url) })
	t.Run("ReshardUnderLoad", func(t *testing.T) { testReshardUnderLoad(t, rc, url) })
}

func proxyClient(t *testing.T, p *proc) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: p.listen, MaxRetries: -1, PoolSize: 16})
	t.Cleanup(func() { c.Close() })
	return c
}

// keyOn returns a key starting with prefix whose slot the master at addr
// serves.
func keyOn(t *testing.T, rc *redistest.Cluster, prefix, addr string) string {
	t.Helper()
	for i := 0; i < 100000; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if rc.Owner(cluster.Slot([]byte(k))) == addr {
			return k
		}
	}
	t.Fatalf("no key under %q on %s", prefix, addr)
	return ""
}

// hits is how many reads the proxy has answered from its L1.
func hits(t *testing.T, p *proc) float64 {
	return metricSum(scrape(t, p.metrics), "cacheproxy_l1_hits_total")
}

// waitCached reads key through c until the proxy answers it from its L1.
func waitCached(t *testing.T, p *proc, c *redis.Client, key string) {
	t.Helper()
	waitFor(t, coherenceWait, "GET "+key+" answered from the L1", p.logs, func() bool {
		before := hits(t, p)
		if err := c.Get(bg, key).Err(); err != nil && err != redis.Nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		return hits(t, p) > before
	})
}

// testDirectWritesReachL1: a key of each master, cached by the proxy, then
// written on that master directly, is read anew through the proxy (config
// chooses the invalidation mode).
func testDirectWritesReachL1(t *testing.T, rc *redistest.Cluster, url, config string) {
	p := startProcOn(t, url, config)
	c := proxyClient(t, p)
	for _, s := range rc.Shards() {
		key := keyOn(t, rc, "direct:", s.Master)
		if err := c.Set(bg, key, "v1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		waitCached(t, p, c, key)
		if err := rc.NodeClient(s.Master).Set(bg, key, "v2", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := waitValue(c, key, "v2"); err != nil {
			t.Errorf("a write on %s: %v", s.Master, err)
		}
	}
	code, body := readyz(p.metrics)
	if code != http.StatusOK {
		t.Errorf("/readyz = %d %s", code, body)
	}
	s := scrape(t, p.metrics)
	for _, sh := range rc.Shards() {
		if line := fmt.Sprintf("cacheproxy_cluster_stream_subscribed{node=%q} 1", sh.Master); !containsLine(s, line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	if !containsLine(s, "cacheproxy_cluster_masters 3") {
		t.Errorf("/metrics lacks cacheproxy_cluster_masters 3")
	}
	checkClusterMetricsExported(t, s)
	problems, err := promlint.New(strings.NewReader(s)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "cacheproxy_cluster_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

// testClusterStress mixes writes through the proxy and straight to the
// cluster, reads and cross-slot MGETs through the proxy, on keys of every
// master; in the end every key reads through the proxy as the cluster has it.
func testClusterStress(t *testing.T, rc *redistest.Cluster, url string) {
	const (
		keys    = 100
		workers = 6
		ops     = 400
	)
	p := startProcOn(t, url, cacheAll)
	c := proxyClient(t, p)
	direct := rc.Client()
	key := func(i int) string { return fmt.Sprintf("stress:%d", i) }
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for n := range ops {
				k := key(rand.IntN(keys))
				v := fmt.Sprintf("w%d-%d", w, n)
				var err error
				switch rand.IntN(8) {
				case 0:
					err = c.Set(bg, k, v, 0).Err()
				case 1:
					err = direct.Set(bg, k, v, 0).Err()
				case 2:
					err = c.Del(bg, k).Err()
				case 3:
					err = direct.Append(bg, k, "+").Err()
				case 4:
					ks := []string{k, key(rand.IntN(keys)), key(rand.IntN(keys)), key(rand.IntN(keys))}
					err = c.MGet(bg, ks...).Err()
				default:
					if err = c.Get(bg, k).Err(); err == redis.Nil {
						err = nil
					}
				}
				if err != nil {
					t.Errorf("worker %d op %d on %s: %v", w, n, k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range keys {
		k := key(i)
		var want, got string
		var wantErr, gotErr error
		err := pollUntil(coherenceWait, func() bool {
			want, wantErr = direct.Get(bg, k).Result()
			got, gotErr = c.Get(bg, k).Result()
			return want == got && (wantErr == nil) == (gotErr == nil)
		})
		if err != nil {
			t.Errorf("%s through the proxy = %q (%v); the cluster has %q (%v)", k, got, gotErr, want, wantErr)
		}
	}
	if hits(t, p) == 0 {
		t.Error("no L1 hit: the test proved nothing")
	}
}

// pollUntil calls cond until it holds or limit passes.
func pollUntil(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("not within " + limit.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// clusterLoad is writers INCRementing counters and readers GETting fixed
// keys and the counters through one proxy, until stop.
type clusterLoad struct {
	t        *testing.T
	c        *redis.Client
	counters []string
	fixed    []string
	lastAck  []atomic.Int64

	failed    atomic.Int64 // requests that failed (tolerated, counted)
	redirects atomic.Int64 // MOVED or ASK replies: never allowed
	wrong     atomic.Int64 // replies that are not their command's

	stop chan struct{}
	wg   sync.WaitGroup
}

// startLoad sets the fixed keys and starts the load.
func startLoad(t *testing.T, c *redis.Client, counters, fixed []string) *clusterLoad {
	l := &clusterLoad{t: t, c: c, counters: counters, fixed: fixed,
		lastAck: make([]atomic.Int64, len(counters)), stop: make(chan struct{})}
	for _, k := range fixed {
		if err := c.Set(bg, k, "value-"+k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i, key := range counters {
		l.wg.Go(func() {
			for l.running() {
				n, err := c.Incr(bg, key).Result()
				if l.failure(err) {
					continue
				}
				if prev := l.lastAck[i].Load(); n <= prev {
					l.wrong.Add(1)
					t.Errorf("INCR %s = %d after %d was acknowledged", key, n, prev)
				}
				l.lastAck[i].Store(n)
			}
		})
	}
	for r := range 3 {
		l.wg.Go(func() {
			for i := r; l.running(); i++ {
				k := fixed[i%len(fixed)]
				got, err := c.Get(bg, k).Result()
				if !l.failure(err) && got != "value-"+k {
					l.wrong.Add(1)
					t.Errorf("GET %s = %q", k, got)
				}
				v, err := c.Get(bg, counters[i%len(counters)]).Result()
				if err == redis.Nil {
					continue
				}
				if !l.failure(err) {
					if _, perr := strconv.Atoi(v); perr != nil {
						l.wrong.Add(1)
						t.Errorf("GET %s = %q, not a number", counters[i%len(counters)], v)
					}
				}
			}
		})
	}
	return l
}

func (l *clusterLoad) running() bool {
	select {
	case <-l.stop:
		return false
	default:
		return true
	}
}

// failure counts err, reporting whether there was one.
func (l *clusterLoad) failure(err error) bool {
	if err == nil {
		return false
	}
	if msg := err.Error(); strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ") {
		l.redirects.Add(1)
		l.t.Errorf("a client got %q", msg)
	}
	l.failed.Add(1)
	time.Sleep(time.Millisecond)
	return true
}

// finish stops the load and checks what it left: no acknowledged increment
// lost, and every key read through the proxy as the cluster has it.
func (l *clusterLoad) finish(rc *redistest.Cluster) {
	t := l.t
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	direct := rc.Client()
	for i, key := range l.counters {
		got, err := direct.Get(bg, key).Int64()
		if err != nil {
			t.Fatalf("GET %s on the cluster: %v", key, err)
		}
		if acked := l.lastAck[i].Load(); got < acked {
			t.Errorf("%s is %d on the cluster; %d was acknowledged", key, got, acked)
		}
		if err := waitValue(l.c, key, strconv.FormatInt(got, 10)); err != nil {
			t.Errorf("stale after the change: %v", err)
		}
	}
	if l.redirects.Load() > 0 || l.wrong.Load() > 0 {
		t.Errorf("%d MOVED/ASK replies reached clients, %d replies were not their command's", l.redirects.Load(), l.wrong.Load())
	}
	t.Logf("requests failed during the change (retried by the test): %d", l.failed.Load())
}

// testFailoverUnderLoad: CLUSTER FAILOVER of the first master's replica
// while the load runs.
func testFailoverUnderLoad(t *testing.T, rc *redistest.Cluster, url string) {
	p := startProcOn(t, url, cacheAll)
	c := proxyClient(t, p)
	var counters, fixed []string
	for _, s := range rc.Shards() {
		for i := range 2 {
			counters = append(counters, keyOn(t, rc, fmt.Sprintf("fo:ctr:%d:", i), s.Master))
			fixed = append(fixed, keyOn(t, rc, fmt.Sprintf("fo:fixed:%d:", i), s.Master))
		}
	}
	l := startLoad(t, c, counters, fixed)
	time.Sleep(300 * time.Millisecond)
	old := rc.Shards()[0]
	before := scrape(t, p.metrics)
	rc.Failover(old.Replicas[0])
	waitFor(t, coherenceWait, "the proxy counts the failover", p.logs, func() bool {
		return metricSum(scrape(t, p.metrics), "cacheproxy_cluster_failovers_total") >= 1
	})
	waitReady(t, p.metrics, p.logs)
	t.Logf("the L1 was suspended for %v around the failover", suspendedSince(t, p, before))
	time.Sleep(500 * time.Millisecond) // load continues on the new master
	l.finish(rc)

	waitReady(t, p.metrics, p.logs)
	s := scrape(t, p.metrics)
	if !containsLine(s, fmt.Sprintf("cacheproxy_cluster_stream_subscribed{node=%q} 1", old.Replicas[0])) {
		t.Errorf("no trusted stream on the new master %s:\n%s", old.Replicas[0], s)
	}
	if strings.Contains(s, fmt.Sprintf("node=%q", old.Master)) {
		t.Errorf("the demoted master %s still has a stream", old.Master)
	}
	t.Logf("failover: topology changes %v, L1 flushes for them %v",
		metricSum(s, "cacheproxy_cluster_topology_changes_total"), metricSum(s, "cacheproxy_cluster_l1_flushes_total"))
	// Caching works on the new master, and its writes reach the L1.
	key := keyOn(t, rc, "fo:after:", old.Replicas[0])
	if err := c.Set(bg, key, "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitCached(t, p, c, key)
	if err := rc.NodeClient(old.Replicas[0]).Set(bg, key, "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := waitValue(c, key, "v2"); err != nil {
		t.Error(err)
	}
}

// suspendedSince returns how many seconds the proxy's L1 has been suspended
// since before was scraped (cacheproxy_cluster_l1_suspended_seconds_total).
func suspendedSince(t *testing.T, p *proc, before string) time.Duration {
	const name = "cacheproxy_cluster_l1_suspended_seconds_total"
	s := metricSum(scrape(t, p.metrics), name) - metricSum(before, name)
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

// testReshardUnderLoad: redis-cli --cluster reshard moves slots, keys of the
// load among them, while the load runs. It logs how often the L1 was flushed.
func testReshardUnderLoad(t *testing.T, rc *redistest.Cluster, url string) {
	const slots = 40
	p := startProcOn(t, url, cacheAll)
	c := proxyClient(t, p)
	shards := rc.Shards()
	from, to := shards[1], shards[2]
	// redis-cli moves the source's lowest slots first: half the keys in
	// them, hash-tagged there, half elsewhere.
	lo := from.Slots[0][0]
	var counters, fixed []string
	for i := 0; len(counters) < 6; i++ {
		tag := strconv.Itoa(i)
		if s := cluster.Slot([]byte(tag)); s >= lo && s < lo+slots && s <= from.Slots[0][1] {
			counters = append(counters, fmt.Sprintf("rs:ctr:{%s}", tag))
			fixed = append(fixed, fmt.Sprintf("rs:fixed:{%s}", tag))
		}
	}
	for _, s := range shards {
		counters = append(counters, keyOn(t, rc, "rs:ctr:", s.Master))
		fixed = append(fixed, keyOn(t, rc, "rs:fixed:", s.Master))
	}
	before := scrape(t, p.metrics)
	l := startLoad(t, c, counters, fixed)
	time.Sleep(300 * time.Millisecond)
	rc.Reshard(from.Master, to.Master, slots)
	waitFor(t, coherenceWait, "the proxy sees the new slot map", p.logs, func() bool {
		return metricSum(scrape(t, p.metrics), "cacheproxy_cluster_topology_changes_total") >
			metricSum(before, "cacheproxy_cluster_topology_changes_total")
	})
	time.Sleep(500 * time.Millisecond)
	l.finish(rc)
	waitReady(t, p.metrics, p.logs)
	after := scrape(t, p.metrics)
	flushes := metricSum(after, "cacheproxy_cluster_l1_flushes_total") - metricSum(before, "cacheproxy_cluster_l1_flushes_total")
	changes := metricSum(after, "cacheproxy_cluster_topology_changes_total") - metricSum(before, "cacheproxy_cluster_topology_changes_total")
	t.Logf("reshard of %d slots: %v topology changes seen, %v L1 flushes, the L1 suspended for %v",
		slots, changes, flushes, suspendedSince(t, p, before))
	if flushes < 1 {
		t.Errorf("the reshard flushed the L1 %v times; want at least once", flushes)
	}
	if rc.Owner(cluster.Slot([]byte(counters[0]))) != to.Master {
		t.Errorf("%s did not move to %s", counters[0], to.Master)
	}
}

// TestReadyzPerMaster: with a cluster's streams, /readyz names the masters
// whose streams hold the L1 suspended, and only those.
func TestReadyzPerMaster(t *testing.T) {
	t.Parallel()
	h := &health{ping: func(context.Context) error { return nil }}
	subscribed := false
	h.setSubscriber(func() invalidation.State { return invalidation.State{Subscribed: subscribed} })
	nodes := []invalidation.NodeState{
		{Addr: "10.0.0.1:6379", State: invalidation.State{Subscribed: true}},
		{Addr: "10.0.0.2:6379"},
		{Addr: "10.0.0.3:6379", State: invalidation.State{CachingDisabled: "notifications off"}},
	}
	h.setNodes(func() []invalidation.NodeState { return nodes })
	got := strings.Join(h.problems(bg), "\n")
	want := "invalidation: master 10.0.0.2:6379: stream not trusted yet; the L1 is suspended\n" +
		"invalidation: master 10.0.0.3:6379: caching disabled: notifications off"
	if got != want {
		t.Errorf("problems:\n%s\nwant:\n%s", got, want)
	}
	// Every master trusted, the Group not resumed yet: a change under way.
	nodes = nodes[:1]
	if got := h.problems(bg); len(got) != 1 || !strings.Contains(got[0], "slot map") {
		t.Errorf("problems while following a change: %q", got)
	}
	subscribed = true
	if got := h.problems(bg); len(got) != 0 {
		t.Errorf("problems when every stream is trusted: %q", got)
	}
}
