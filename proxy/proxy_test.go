package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

var bg = context.Background()

func TestReadThroughL1(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	c := e.client(0)
	if err := c.Set(bg, "user:1", "alice", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// The SET's own keyspace event invalidates the key again when it arrives;
	// let it, so that the fill below is not dropped by it.
	e.waitKeyspaceEvents(1)
	if v, err := c.Get(bg, "user:1").Result(); err != nil || v != "alice" {
		t.Fatalf("first GET = %q, %v", v, err)
	}
	e.cache.Wait()
	before := e.upstreamCalls()["get"]
	hits := e.counter("cacheproxy_l1_hits_total", nil)
	if v, err := c.Get(bg, "user:1").Result(); err != nil || v != "alice" {
		t.Fatalf("second GET = %q, %v", v, err)
	}
	if got := e.counter("cacheproxy_l1_hits_total", nil); got != hits+1 {
		t.Fatalf("hits %v -> %v, want +1", hits, got)
	}
	if after := e.upstreamCalls()["get"]; after != before {
		t.Fatalf("upstream ran GET %d more times for an L1 hit", after-before)
	}
}

func TestDirectWriteReachesL1(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	c := e.client(0)
	var lags []time.Duration
	for i := 0; i < 20; i++ {
		key := fmt.Sprintf("k%d", i)
		e.direct.Set(bg, key, "v1", 0)
		if v := c.Get(bg, key).Val(); v != "v1" {
			t.Fatalf("GET %s = %q", key, v)
		}
		e.cache.Wait()
		e.direct.Set(bg, key, "v2", 0)
		lags = append(lags, eventually(t, 5*time.Second, "direct SET seen through proxy", func() bool {
			return c.Get(bg, key).Val() == "v2"
		}))
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	t.Logf("direct write visible through the proxy after: median %v, max %v", lags[len(lags)/2], lags[len(lags)-1])
	if lags[len(lags)/2] > 100*time.Millisecond {
		t.Fatalf("median lag %v exceeds 100ms", lags[len(lags)/2])
	}
}

func TestWriteThroughProxyInvalidatesAtOnce(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	a, b := e.client(0), e.client(0)
	for i := 0; i < 200; i++ {
		key := fmt.Sprintf("k%d", i%7)
		val := fmt.Sprint(i)
		if err := a.Set(bg, key, val, 0).Err(); err != nil {
			t.Fatal(err)
		}
		// Both the writer and another client read the write at once.
		if got := a.Get(bg, key).Val(); got != val {
			t.Fatalf("writer read %q after writing %q", got, val)
		}
		if got := b.Get(bg, key).Val(); got != val {
			t.Fatalf("other client read %q after %q was acknowledged", got, val)
		}
		if i%3 == 0 {
			a.Del(bg, key)
			if n := b.Exists(bg, key).Val(); n != 0 {
				t.Fatalf("EXISTS after DEL through proxy = %d", n)
			}
			if err := b.Get(bg, key).Err(); err != redis.Nil {
				t.Fatalf("GET after DEL through proxy: %v", err)
			}
		}
	}
}

func TestSelectSeparatesDatabases(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	c0, c1 := e.client(0), e.client(1)
	c0.Set(bg, "k", "zero", 0)
	c1.Set(bg, "k", "one", 0)
	for i := 0; i < 3; i++ {
		if v := c0.Get(bg, "k").Val(); v != "zero" {
			t.Fatalf("db0 GET = %q", v)
		}
		if v := c1.Get(bg, "k").Val(); v != "one" {
			t.Fatalf("db1 GET = %q", v)
		}
		e.cache.Wait()
	}
	// One connection switching databases in a pipeline.
	r := dialRaw(t, e.addr)
	got := r.roundTrip(crlf("GET k\nSELECT 1\nGET k\nSELECT 0\nGET k\n"), 5)
	want := crlf("$4\nzero\n+OK\n$3\none\n+OK\n$4\nzero\n")
	if got != want {
		t.Fatalf("pipeline across SELECT = %q, want %q", got, want)
	}
}

// TestStaleFillIsDropped forces the race the fill guard exists for: a reader's
// GET has returned v1 from Redis but not yet been stored when v2 is written and
// invalidated; the reader must not store v1.
func TestStaleFillIsDropped(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"direct", "proxy"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			hold := newBatchHold()
			e := startEnv(t, envOptions{afterUpstream: hold.hook})
			e.waitSubscribed()
			reader, writer := e.client(0), e.client(0)
			e.direct.Set(bg, "race", "v1", 0)
			// Warm the reader's connection so the hook catches the GET.
			reader.Ping(bg)
			hold.Arm()
			got := make(chan string)
			go func() { got <- reader.Get(bg, "race").Val() }()
			hold.Held() // the reader holds v1 from Redis, not yet settled
			inv := e.counter("cacheproxy_invalidations_total", nil)
			if via == "direct" {
				e.direct.Set(bg, "race", "v2", 0)
				eventually(t, 5*time.Second, "keyspace invalidation", func() bool {
					return e.counter("cacheproxy_invalidations_total", nil) > inv
				})
			} else if err := writer.Set(bg, "race", "v2", 0).Err(); err != nil {
				t.Fatal(err)
			}
			hold.Release()
			if v := <-got; v != "v1" {
				t.Fatalf("reader got %q, want the v1 it read before the write", v)
			}
			e.cache.Wait()
			for i := 0; i < 3; i++ {
				if v := reader.Get(bg, "race").Val(); v != "v2" {
					t.Fatalf("after the write the proxy answers %q: the stale fill was stored", v)
				}
			}
			if e.counter("cacheproxy_l1_fills_dropped_total", map[string]string{"reason": "stale"}) < 1 {
				t.Fatal("no fill was counted as dropped")
			}
		})
	}
}

// TestCoherenceStress has readers through the proxy and writers both through
// the proxy and directly on Redis; when they stop, every key read through the
// proxy equals Redis.
func TestCoherenceStress(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	const keys, workers, ops = 20, 4, 400
	key := func(r *rand.Rand) string { return fmt.Sprintf("s%d", int(r.ExpFloat64()*3)%keys) }
	var wg sync.WaitGroup
	var version atomic.Int64
	for w := 0; w < workers; w++ {
		rd, wrProxy := e.client(0), e.client(0)
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < ops; i++ {
				k := key(r)
				switch n := r.IntN(10); {
				case n < 6:
					rd.Get(bg, k)
				case n < 7:
					rd.MGet(bg, k, key(r), key(r))
				case n < 8:
					wrProxy.Set(bg, k, version.Add(1), 0)
				case n < 9:
					e.direct.Set(bg, k, version.Add(1), 0)
				default:
					e.direct.Del(bg, k)
				}
			}
		}(uint64(w))
	}
	wg.Wait()
	c := e.client(0)
	for i := 0; i < keys; i++ {
		k := fmt.Sprintf("s%d", i)
		want, wantErr := e.direct.Get(bg, k).Result()
		eventually(t, 2*time.Second, "key "+k+" coherent", func() bool {
			got, err := c.Get(bg, k).Result()
			mgot := c.MGet(bg, k).Val()
			return got == want && (err == nil) == (wantErr == nil) && (mgot[0] == nil) == (wantErr != nil)
		})
	}
}

func TestPipelineOrder(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	c := e.client(0)
	const n = 1000
	cmds, err := c.Pipelined(bg, func(p redis.Pipeliner) error {
		for i := 0; i < n; i++ {
			k := fmt.Sprintf("p%d", (i/4)%10)
			switch i % 4 {
			case 0:
				p.Set(bg, k, i, 0)
			case 1, 2:
				p.Get(bg, k)
			default:
				p.Incr(bg, "counter")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != n {
		t.Fatalf("%d replies for %d commands", len(cmds), n)
	}
	for i, cmd := range cmds {
		switch i % 4 {
		case 1, 2:
			want := fmt.Sprint(i - i%4)
			if got := cmd.(*redis.StringCmd).Val(); got != want {
				t.Fatalf("reply %d: GET = %q, want %q (read-your-writes within a pipeline)", i, got, want)
			}
		case 3:
			if got := cmd.(*redis.IntCmd).Val(); got != int64(i/4+1) {
				t.Fatalf("reply %d: INCR = %d, want %d", i, got, i/4+1)
			}
		}
	}
}

func TestMGetMixesHitsAndMisses(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	c := e.client(0)
	e.direct.Set(bg, "a", "1", 0)
	e.direct.Set(bg, "b", "2", 0)
	e.direct.HSet(bg, "h", "f", "v")
	c.Get(bg, "a") // GET's entry must not answer MGET
	want := []any{"1", "2", nil, nil, "1"}
	for round := 0; round < 3; round++ {
		got, err := c.MGet(bg, "a", "b", "h", "missing", "a").Result()
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: MGET = %v, %v; want %v", round, got, err, want)
		}
		e.cache.Wait()
	}
	// GET of a hash is WRONGTYPE, where MGET said nil.
	if err := c.Get(bg, "h").Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGTYPE") {
		t.Fatalf("GET of a hash: %v", err)
	}
	before := e.upstreamCalls()["mget"]
	c.MGet(bg, "a", "b")
	if after := e.upstreamCalls()["mget"]; after != before {
		t.Fatal("an MGET of cached keys went upstream")
	}
}

func TestCachingRefusedWithoutNotifications(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{redis: redistestNoEvents, allowConfigSet: false})
	c := e.client(0)
	eventually(t, 10*time.Second, "caching disabled reported", func() bool {
		return e.sub.State().CachingDisabled != ""
	})
	c.Set(bg, "k", "v", 0)
	before := e.upstreamCalls()["get"]
	for i := 0; i < 3; i++ {
		if v := c.Get(bg, "k").Val(); v != "v" {
			t.Fatalf("GET = %q", v)
		}
	}
	if n := e.upstreamCalls()["get"] - before; n != 3 {
		t.Fatalf("%d of 3 GETs reached Redis; with notifications off every read must", n)
	}
	if v := e.counter("cacheproxy_caching_enabled", nil); v != 0 {
		t.Fatalf("cacheproxy_caching_enabled = %v", v)
	}
}

// TestConcurrentMissesShareOneRead holds the first reader's fill open until
// every other reader has missed on the same key: all of them must be answered
// by that one upstream GET.
func TestConcurrentMissesShareOneRead(t *testing.T) {
	t.Parallel()
	hold := newBatchHold()
	e := startEnv(t, envOptions{afterUpstream: hold.hook})
	e.waitSubscribed()
	e.direct.Set(bg, "hot", "value", 0)
	e.waitKeyspaceEvents(1)
	const readers = 100
	clients := make([]*redis.Client, readers)
	for i := range clients {
		clients[i] = redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 1, MaxRetries: -1})
		defer clients[i].Close()
		clients[i].Ping(bg)
	}
	before := e.upstreamCalls()["get"]
	hold.Arm()
	results := make(chan string, readers)
	go func() { results <- clients[0].Get(bg, "hot").Val() }()
	hold.Held()
	misses := e.counter("cacheproxy_l1_misses_total", nil)
	for _, c := range clients[1:] {
		go func(c *redis.Client) { results <- c.Get(bg, "hot").Val() }(c)
	}
	eventually(t, 10*time.Second, "every reader missed", func() bool {
		return e.counter("cacheproxy_l1_misses_total", nil) == misses+readers-1
	})
	hold.Release()
	for i := 0; i < readers; i++ {
		if v := <-results; v != "value" {
			t.Fatalf("reader got %q", v)
		}
	}
	if n := e.upstreamCalls()["get"] - before; n != 1 {
		t.Fatalf("%d readers cost Redis %d GETs, want 1", readers, n)
	}
}

// TestScriptWritesInvalidateDeclaredKeys: EVAL is flagged may_replicate, not
// write, yet its declared keys must leave the L1 before its reply.
func TestScriptWritesInvalidateDeclaredKeys(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	c := e.client(0)
	c.Set(bg, "lock", "me", 0)
	e.waitKeyspaceEvents(1)
	c.Get(bg, "lock")
	e.cache.Wait()
	release := redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
	if n, err := release.Run(bg, c, []string{"lock"}, "me").Int(); err != nil || n != 1 {
		t.Fatalf("release script = %d, %v", n, err)
	}
	if err := c.Get(bg, "lock").Err(); err != redis.Nil {
		t.Fatalf("GET after the script deleted the key: %v", err)
	}
}
