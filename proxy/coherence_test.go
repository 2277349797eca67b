package proxy

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/invalidation"
)

// The coherence suite: each scenario changes Redis behind the proxy's back in
// one of the ways that publish no usable per-key event, or cuts the stream
// that carries them, and checks that reads through the proxy then match
// Redis, logging how long that took. Every scenario runs under each
// invalidation mode.

var coherenceModes = []invalidation.Mode{invalidation.Keyspace, invalidation.Tracking}

type scenario struct {
	name  string
	redis redistest.Options
	env   func(*envOptions) // adjusts the environment before it starts
	run   func(t *testing.T, c *coherent)
}

// agreeBound is how long reads through the proxy may take to match Redis
// after a change behind its back: far above the expected milliseconds, to
// stay clear of a busy machine.
const agreeBound = 5 * time.Second

func TestCoherence(t *testing.T) {
	t.Parallel()
	for _, mode := range coherenceModes {
		for _, sc := range coherenceScenarios {
			t.Run(string(mode)+"/"+sc.name, func(t *testing.T) {
				t.Parallel()
				sc.run(t, startCoherent(t, mode, sc))
			})
		}
	}
}

var coherenceScenarios = []scenario{
	{name: "subscriber killed", run: func(t *testing.T, c *coherent) {
		c.set(0, "k", "v1")
		c.warm(0, "k")
		// The write is published while nobody listens: its event is lost
		// for good.
		c.cutStream("k", "v2")
		before := c.upstreamCalls()["get"]
		for range 3 {
			if v := c.proxy.Get(bg, "k").Val(); v != "v2" {
				t.Fatalf("GET = %q while the stream is down", v)
			}
		}
		if n := c.upstreamCalls()["get"] - before; n != 3 {
			t.Errorf("%d of 3 GETs reached Redis while the stream was down", n)
		}
		c.restoreStream()
		c.agree("write lost with the subscription", 0, "k")
		c.warm(0, "k")
	}},
	{name: "fill in flight at loss", run: func(t *testing.T, c *coherent) {
		c.set(0, "k", "v1")
		reader := c.client(0)
		reader.Ping(bg) // warm the connection, so the hold catches the GET
		got := make(chan string)
		c.hold.Arm()
		go func() { got <- reader.Get(bg, "k").Val() }()
		c.hold.Held() // the reader holds v1 from Redis, not yet stored
		c.cutStream("k", "v2")
		c.hold.Release()
		if v := <-got; v != "v1" {
			t.Fatalf("reader got %q, want the v1 it read before the loss", v)
		}
		c.env.cache.Wait()
		if v := c.proxy.Get(bg, "k").Val(); v != "v2" {
			t.Fatalf("GET = %q: a fill in flight when the stream was lost was stored", v)
		}
		c.restoreStream()
		if v := c.proxy.Get(bg, "k").Val(); v != "v2" {
			t.Fatalf("GET = %q once the stream is back", v)
		}
	}},
	{name: "upstream restart", run: func(t *testing.T, c *coherent) {
		c.set(0, "k", "v1")
		c.warm(0, "k")
		reconnects := c.sub.State().Reconnects
		c.redis.Restart() // empty, on the same port
		start := time.Now()
		eventually(t, agreeBound, "a read after the restart", func() bool {
			v, err := c.proxy.Get(bg, "k").Result()
			if err == nil {
				t.Fatalf("GET k = %q after the upstream restarted empty", v)
			}
			return err == redis.Nil
		})
		t.Logf("first read after the restart answered nil after %v", time.Since(start))
		// Caching resumes once every connection is back.
		eventually(t, agreeBound, "stream trusted again", func() bool {
			st := c.sub.State()
			return st.Reconnects > reconnects && st.Subscribed
		})
		c.set(0, "k", "v2")
		eventually(t, agreeBound, "caching resumes", func() bool {
			if c.proxy.Get(bg, "k").Err() != nil {
				return false
			}
			c.env.cache.Wait()
			hits := c.counter("cacheproxy_l1_hits_total", nil)
			return c.proxy.Get(bg, "k").Val() == "v2" && c.counter("cacheproxy_l1_hits_total", nil) > hits
		})
	}},
	{name: "failover to a server with other data", run: func(t *testing.T, c *coherent) {
		other := redistest.Start(t, redistest.Options{Args: []string{"--repl-diskless-sync-delay", "0"}})
		if err := other.Client(0).Set(bg, "k", "v2", 0).Err(); err != nil {
			t.Fatal(err)
		}
		c.set(0, "k", "v1")
		c.warm(0, "k")
		// The upstream turns into a replica of the other server and loads its
		// dataset: no key event anywhere, only the new role and replication ID.
		host, port, _ := strings.Cut(other.Addr(), ":")
		if err := c.direct.SlaveOf(bg, host, port).Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		eventually(t, agreeBound, "the upstream synced", func() bool { return c.direct.Get(bg, "k").Val() == "v2" })
		t.Logf("the upstream loaded the other dataset after %v", time.Since(start))
		c.agree("the upstream became a replica", 0, "k")
	}},
	{name: "FLUSHDB direct", run: flushScenario(func(c *coherent) error { return c.direct.FlushDB(bg).Err() })},
	{name: "FLUSHALL direct", run: flushScenario(func(c *coherent) error { return c.direct.FlushAll(bg).Err() })},
	{name: "FLUSHALL async", run: flushScenario(func(c *coherent) error { return c.direct.FlushAllAsync(bg).Err() })},
	{name: "FLUSHDB in MULTI", run: flushScenario(func(c *coherent) error {
		_, err := c.direct.TxPipelined(bg, func(p redis.Pipeliner) error { p.FlushDB(bg); return nil })
		return err
	})},
	{name: "FLUSHALL in a script", run: flushScenario(func(c *coherent) error {
		return c.direct.Eval(bg, "return redis.call('FLUSHALL')", nil).Err()
	})},
	{name: "SWAPDB direct", run: func(t *testing.T, c *coherent) {
		c.set(0, "k", "zero")
		c.set(1, "k", "one")
		c.set(1, "only1", "x")
		c.warm(0, "k", "only1")
		c.warm(1, "k", "only1")
		if err := c.direct.Do(bg, "SWAPDB", 0, 1).Err(); err != nil {
			t.Fatal(err)
		}
		c.agree("SWAPDB 0 1 in db 0", 0, "k", "only1")
		c.agree("SWAPDB 0 1 in db 1", 1, "k", "only1")
	}},
	{name: "RENAME and RENAMENX", run: func(t *testing.T, c *coherent) {
		for _, k := range []string{"src", "dst", "src2", "dst2"} {
			c.set(0, k, k+"-value")
		}
		c.warm(0, "src", "dst", "src2", "dst2", "fresh")
		c.must(c.direct.Rename(bg, "src", "dst").Err())
		c.agree("RENAME onto an existing key", 0, "src", "dst")
		c.must(c.direct.RenameNX(bg, "src2", "fresh").Err())
		c.agree("RENAMENX", 0, "src2", "fresh", "dst2")
	}},
	{name: "COPY", run: func(t *testing.T, c *coherent) {
		c.set(0, "from", "new")
		c.set(0, "to", "old")
		c.warm(0, "from", "to")
		c.warm(2, "to")
		c.must(c.direct.Copy(bg, "from", "to", 0, true).Err())
		c.must(c.direct.Copy(bg, "from", "to", 2, false).Err())
		c.agree("COPY ... REPLACE", 0, "from", "to")
		c.agree("COPY ... DB 2", 2, "to")
	}},
	{name: "MOVE", run: func(t *testing.T, c *coherent) {
		c.set(0, "m", "moved")
		c.warm(0, "m")
		c.warm(1, "m") // a cached nil
		c.must(c.direct.Move(bg, "m", 1).Err())
		c.agree("MOVE from db 0", 0, "m")
		c.agree("MOVE to db 1", 1, "m")
	}},
	{name: "script writes undeclared keys", run: func(t *testing.T, c *coherent) {
		c.set(0, "u1", "old")
		c.set(0, "u2", "old")
		c.warm(0, "u1", "u2")
		const script = "redis.call('SET', ARGV[1], 'new') return 1"
		c.must(c.direct.Eval(bg, script, nil, "u1").Err())
		c.agree("undeclared write directly", 0, "u1")
		c.must(c.proxy.Eval(bg, script, nil, "u2").Err()) // through the proxy: it cannot know the key
		c.agree("undeclared write through the proxy", 0, "u2")
	}},
	{name: "MULTI block direct", run: func(t *testing.T, c *coherent) {
		for _, k := range []string{"t1", "t2", "t3"} {
			c.set(0, k, "old")
		}
		c.warm(0, "t1", "t2", "t3")
		_, err := c.direct.TxPipelined(bg, func(p redis.Pipeliner) error {
			p.Set(bg, "t1", "new", 0)
			p.Append(bg, "t2", "+")
			p.Del(bg, "t3")
			return nil
		})
		c.must(err)
		c.agree("MULTI/EXEC", 0, "t1", "t2", "t3")
	}},
	{name: "expiry without active expire", redis: redistest.Options{Args: []string{"--enable-debug-command", "yes"}},
		run: func(t *testing.T, c *coherent) {
			// Redis now deletes an expired key, and publishes its expired
			// event, only when something touches it: nothing tells the L1.
			flushes := c.sub.State().Flushes
			c.must(c.direct.Do(bg, "DEBUG", "SET-ACTIVE-EXPIRE", "0").Err())
			eventually(t, agreeBound, "the poller's flush for DEBUG", func() bool { return c.sub.State().Flushes > flushes })
			const ttl = time.Second
			const db = 4 // away from the keys of the stream's own checks
			up, cl := c.redis.Client(db), c.client(db)
			_, err := up.Pipelined(bg, func(p redis.Pipeliner) error {
				p.Set(bg, "e:str", "v", ttl)
				p.HSet(bg, "e:hash", "f", "v")
				p.PExpire(bg, "e:hash", ttl)
				p.Set(bg, "e:mget", "v", ttl)
				return nil
			})
			c.must(err)
			expires := time.Now().Add(ttl) // Redis set the expiries before this
			c.sync()
			c.warm(db, "e:str")
			c.cacheRead(func() error { return cl.HGetAll(bg, "e:hash").Err() })
			c.cacheRead(func() error { return cl.MGet(bg, "e:mget").Err() })
			// Redis checks expiry against a clock it caches per event-loop
			// turn, which can lag a little: give it a margin.
			time.Sleep(time.Until(expires.Add(50 * time.Millisecond)))
			if info := c.direct.Info(bg, "keyspace").Val(); !strings.Contains(info, "db4:keys=3,expires=3") {
				t.Fatalf("Redis deleted expired keys by itself; the test proves nothing:\n%s", info)
			}
			// Reads at the expiry, not eventually: the entries must already be gone.
			if v, err := cl.Get(bg, "e:str").Result(); err != redis.Nil {
				t.Errorf("GET after expiry = %q, %v; want nil", v, err)
			}
			if v, err := cl.HGetAll(bg, "e:hash").Result(); err != nil || len(v) != 0 {
				t.Errorf("HGETALL after expiry = %v, %v; want empty", v, err)
			}
			if v, err := cl.MGet(bg, "e:mget").Result(); err != nil || len(v) != 1 || v[0] != nil {
				t.Errorf("MGET after expiry = %v, %v; want [nil]", v, err)
			}
		}},
	{name: "evictions", redis: redistest.Options{Args: []string{"--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"}},
		run: func(t *testing.T, c *coherent) {
			cached := make([]string, 20)
			for i := range cached {
				cached[i] = fmt.Sprintf("ev:%d", i)
				c.set(0, cached[i], "v")
			}
			c.warm(0, cached...)
			// Fill Redis well past maxmemory without touching the cached keys.
			filler := strings.Repeat("x", 8<<10)
			for round := 0; round < 4; round++ {
				_, err := c.direct.Pipelined(bg, func(p redis.Pipeliner) error {
					for i := range 256 {
						p.Set(bg, fmt.Sprintf("filler:%d:%d", round, i), filler, 0)
					}
					return nil
				})
				c.must(err)
			}
			evicted := 0
			for _, k := range cached {
				if c.direct.Exists(bg, k).Val() == 0 {
					evicted++
				}
			}
			if evicted == 0 {
				t.Fatal("no cached key was evicted; the test proves nothing")
			}
			t.Logf("%d of %d cached keys evicted", evicted, len(cached))
			c.agree("evicted keys", 0, cached...)
		}},
	{name: "config refused", redis: redistest.Options{Args: []string{"--rename-command", "CONFIG", ""}},
		run: func(t *testing.T, c *coherent) {
			// Managed Redis: the canary shows that the stream works.
			c.set(0, "k", "v1")
			c.warm(0, "k")
			c.set(0, "k", "v2")
			c.agree("a direct write", 0, "k")
		}},
	{name: "stream goes silent", env: func(o *envOptions) { o.canaryTimeout = 300 * time.Millisecond },
		run: func(t *testing.T, c *coherent) {
			c.set(0, "k", "v1")
			c.warm(0, "k")
			// The subscription stays up and answers PINGs, and yet nothing
			// will be notified any more.
			if c.mode == invalidation.Keyspace {
				c.must(c.direct.ConfigSet(bg, "notify-keyspace-events", "").Err())
			} else {
				m := trackingClient.FindStringSubmatch(c.direct.ClientList(bg).Val())
				if m == nil {
					t.Fatal("no tracking client in CLIENT LIST")
				}
				c.must(c.direct.Do(bg, "CLIENT", "KILL", "ID", m[1]).Err())
			}
			c.must(c.direct.Set(bg, "k", "v2", 0).Err())
			c.agree("a write the stream did not carry", 0, "k")
			if c.mode == invalidation.Keyspace {
				eventually(t, agreeBound, "caching disabled", func() bool { return c.sub.State().CachingDisabled != "" })
				before := c.upstreamCalls()["get"]
				c.proxy.Get(bg, "k")
				c.proxy.Get(bg, "k")
				if n := c.upstreamCalls()["get"] - before; n != 2 {
					t.Errorf("%d of 2 GETs reached Redis with notifications off", n)
				}
			}
		}},
}

// trackingClient finds the connection holding CLIENT TRACKING in CLIENT LIST:
// the one that redirects its invalidations.
var trackingClient = regexp.MustCompile(`(?m)^id=(\d+) .* redir=(\d+) `)

// flushScenario: a command that publishes no per-key event empties db 0
// behind the proxy.
func flushScenario(flush func(c *coherent) error) func(t *testing.T, c *coherent) {
	return func(t *testing.T, c *coherent) {
		c.set(0, "a", "1")
		c.set(0, "b", "2")
		c.set(3, "c", "3")
		c.warm(0, "a", "b", "missing")
		c.warm(3, "c")
		c.must(flush(c))
		c.agree("after the flush", 0, "a", "b", "missing")
		c.agree("after the flush, db 3", 3, "c")
	}
}

// coherent is a proxy environment for one scenario.
type coherent struct {
	*env
	t     *testing.T
	mode  invalidation.Mode
	seen  *seenTarget
	proxy *redis.Client // db 0

	hold *batchHold // holds one upstream batch before it settles

	reconnects int64 // State.Reconnects when the stream was cut
}

func startCoherent(t *testing.T, mode invalidation.Mode, sc scenario) *coherent {
	c := &coherent{t: t, mode: mode, seen: &seenTarget{keys: map[string]int{}}, hold: newBatchHold()}
	o := envOptions{
		redis:          sc.redis,
		mode:           mode,
		canaryInterval: 20 * time.Millisecond,
		canaryTimeout:  2 * time.Second,
		pollInterval:   20 * time.Millisecond,
		wrapTarget: func(target invalidation.Target) invalidation.Target {
			c.seen.Target = target
			return c.seen
		},
		afterUpstream: c.hold.hook,
	}
	if sc.env != nil {
		sc.env(&o)
	}
	c.env = startEnv(t, o)
	c.waitTrusted()
	c.proxy = c.client(0)
	return c
}

func (c *coherent) must(err error) {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
}

// waitTrusted waits until the L1 caches again.
func (c *coherent) waitTrusted() {
	c.t.Helper()
	eventually(c.t, agreeBound, "invalidation stream trusted", func() bool { return c.sub.State().Subscribed })
}

// set writes directly on Redis and waits for the stream to carry the write,
// so that its event cannot spoil a fill that follows.
func (c *coherent) set(db int, key, value string) {
	c.t.Helper()
	c.must(c.redis.Client(db).Set(bg, key, value, 0).Err())
	c.sync()
}

// sync waits until the stream has carried every write made before it: it
// writes a key of its own and waits for that key's invalidation, which
// arrives after all earlier ones.
func (c *coherent) sync() {
	c.t.Helper()
	n := c.seen.count("sync")
	c.must(c.direct.Set(bg, "sync", "x", 0).Err())
	eventually(c.t, agreeBound, "the stream carried the writes", func() bool { return c.seen.count("sync") > n })
}

// warm reads keys of db through the proxy until each is an L1 hit.
func (c *coherent) warm(db int, keys ...string) {
	c.t.Helper()
	cl := c.client(db)
	for _, k := range keys {
		c.cacheRead(func() error {
			if err := cl.Get(bg, k).Err(); err != nil && err != redis.Nil {
				return err
			}
			return nil
		})
	}
}

// cacheRead repeats read until it is answered from the L1.
func (c *coherent) cacheRead(read func() error) {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		c.must(read())
		c.env.cache.Wait()
		hits := c.counter("cacheproxy_l1_hits_total", nil)
		c.must(read())
		if c.counter("cacheproxy_l1_hits_total", nil) > hits {
			return
		}
		if attempt == 5 {
			c.t.Fatal("a read through the proxy is never answered from the L1")
		}
	}
}

// agree waits until GET of each key of db through the proxy answers what
// Redis answers, and logs how long that took.
func (c *coherent) agree(what string, db int, keys ...string) {
	c.t.Helper()
	cl := c.client(db)
	start := time.Now()
	for _, k := range keys {
		eventually(c.t, agreeBound, fmt.Sprintf("%s: db %d key %q through the proxy matches Redis", what, db, k), func() bool {
			want, wantErr := c.redis.Client(db).Get(bg, k).Result()
			got, err := cl.Get(bg, k).Result()
			return got == want && fmt.Sprint(err) == fmt.Sprint(wantErr)
		})
	}
	c.t.Logf("%s: the proxy matched Redis after %v", what, time.Since(start))
}

// cutStream drops the proxy's subscription and writes key in the same MULTI,
// so that Redis publishes the write to nobody, and keeps the proxy from
// subscribing again (an ACL) until restoreStream. It returns once the proxy
// has seen the loss.
func (c *coherent) cutStream(key, value string) {
	c.t.Helper()
	c.reconnects = c.sub.State().Reconnects
	c.must(c.direct.Do(bg, "ACL", "SETUSER", "default", "-subscribe", "-psubscribe").Err())
	cmds, err := c.direct.TxPipelined(bg, func(p redis.Pipeliner) error {
		p.ClientKillByFilter(bg, "TYPE", "pubsub")
		p.Set(bg, key, value, 0)
		return nil
	})
	c.must(err)
	if n := cmds[0].(*redis.IntCmd).Val(); n != 1 {
		c.t.Fatalf("CLIENT KILL TYPE pubsub killed %d clients, want the proxy's one", n)
	}
	eventually(c.t, agreeBound, "the proxy saw the loss", func() bool { return !c.sub.State().Subscribed })
}

// restoreStream lets the proxy subscribe again and waits until it does.
func (c *coherent) restoreStream() {
	c.t.Helper()
	c.must(c.direct.Do(bg, "ACL", "SETUSER", "default", "+subscribe", "+psubscribe").Err())
	eventually(c.t, agreeBound, "stream trusted again", func() bool {
		st := c.sub.State()
		return st.Reconnects > c.reconnects && st.Subscribed
	})
}

// seenTarget passes everything to the proxy's Target and counts the
// invalidations of each key, whatever its database.
type seenTarget struct {
	invalidation.Target
	mu   sync.Mutex
	keys map[string]int
}

func (s *seenTarget) Invalidate(db int, key []byte) {
	s.Target.Invalidate(db, key)
	s.note(key)
}

func (s *seenTarget) InvalidateEveryDB(key []byte) {
	s.Target.InvalidateEveryDB(key)
	s.note(key)
}

func (s *seenTarget) note(key []byte) {
	s.mu.Lock()
	s.keys[string(key)]++
	s.mu.Unlock()
}

func (s *seenTarget) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[key]
}
