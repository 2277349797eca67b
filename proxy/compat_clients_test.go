package proxy

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/valkey-io/valkey-go"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// RESP3 client libraries through the proxy. rueidis and valkey-go speak RESP3
// only (they fail on NOPROTO) and multiplex everything, pub/sub included, on
// shared connections; go-redis is asked for RESP3 explicitly. Each scenario
// runs against a Redis of its own first, so that it holds for Redis itself,
// then through the proxy.

// clientSide is one server a scenario runs against, and a go-redis client
// straight to the Redis behind it, for writes made behind the proxy's back.
type clientSide struct {
	name   string
	addr   string
	direct *redis.Client
	e      *env // the proxy's side only
}

// hits is the proxy's L1 hit count, 0 on Redis's side.
func (s clientSide) hits() float64 {
	if s.e == nil {
		return 0
	}
	return s.e.counter("cacheproxy_l1_hits_total", nil)
}

func clientSides(t *testing.T) []clientSide {
	t.Helper()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	ref := redistest.Start(t, redistest.Options{})
	return []clientSide{{"redis", ref.Addr(), ref.Client(0), nil}, {"proxy", e.addr, e.direct, e}}
}

// coherenceBound is how long a write made directly on Redis may take to be
// seen through the proxy. Invalidation takes milliseconds; the bound is
// generous because this is a coherence claim, not a timing one.
const coherenceBound = 2 * time.Second

// TestRueidisThroughProxy: rueidis without client-side caching.
func TestRueidisThroughProxy(t *testing.T) {
	t.Parallel()
	for _, side := range clientSides(t) {
		t.Run(side.name, func(t *testing.T) {
			c, err := rueidis.NewClient(rueidis.ClientOption{
				InitAddress:  []string{side.addr},
				DisableCache: true,
				DisableRetry: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rueidisScenario(t, c, side)
		})
	}
}

// TestRueidisClientSideCachingThroughProxy: rueidis with its default options,
// which turn on client-side caching (CLIENT TRACKING ON OPTIN), and DoCache.
func TestRueidisClientSideCachingThroughProxy(t *testing.T) {
	t.Parallel()
	for _, side := range clientSides(t) {
		t.Run(side.name, func(t *testing.T) {
			c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{side.addr}, DisableRetry: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rueidisScenario(t, c, side) // the same, with client-side caching on
			ctx := context.Background()
			key := "csc:" + side.name
			if err := c.Do(ctx, c.B().Set().Key(key).Value("v1").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			get := func() rueidis.RedisResult { return c.DoCache(ctx, c.B().Get().Key(key).Cache(), time.Minute) }
			if v, err := get().ToString(); err != nil || v != "v1" {
				t.Fatalf("DoCache GET = %q, %v", v, err)
			}
			// The SET's keyspace event may reach the proxy after the first
			// GET and invalidate what it cached: a read may miss once more.
			hits := side.hits()
			eventually(t, coherenceBound, "a DoCache GET served from rueidis's cache", func() bool {
				hits = side.hits()
				return get().IsCacheHit()
			})
			if side.hits() != hits {
				t.Fatal("the cached read reached the proxy")
			}
			if err := side.direct.Set(ctx, key, "v2", 0).Err(); err != nil {
				t.Fatal(err)
			}
			took := eventually(t, coherenceBound, "rueidis's cache invalidated after a direct write", func() bool {
				r := get()
				v, err := r.ToString()
				return err == nil && v == "v2"
			})
			t.Logf("a direct write reached rueidis's own cache after %v", took)
		})
	}
}

func rueidisScenario(t *testing.T, c rueidis.Client, side clientSide) {
	ctx := context.Background()
	p := "rueidis:"
	do := func(cmd rueidis.Completed) rueidis.RedisResult {
		t.Helper()
		r := c.Do(ctx, cmd)
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			t.Fatalf("%v: %v", cmd.Commands(), err)
		}
		return r
	}

	// SET and GET, twice (the second from the L1), and a missing key.
	do(c.B().Set().Key(p + "k").Value("v").Build())
	for i := 0; i < 2; i++ {
		if v, err := do(c.B().Get().Key(p + "k").Build()).ToString(); err != nil || v != "v" {
			t.Fatalf("GET = %q, %v", v, err)
		}
		if err := do(c.B().Get().Key(p + "missing").Build()).Error(); !rueidis.IsRedisNil(err) {
			t.Fatalf("GET of a missing key: %v, want a nil reply", err)
		}
	}
	// DoCache falls back to Do with the cache disabled.
	if v, err := c.DoCache(ctx, c.B().Get().Key(p+"k").Cache(), time.Minute).ToString(); err != nil || v != "v" {
		t.Fatalf("DoCache GET = %q, %v", v, err)
	}

	// HGETALL is a RESP3 map; ZSCORE a double; MGET nulls in an array.
	do(c.B().Hset().Key(p+"h").FieldValue().FieldValue("f1", "v1").FieldValue("f2", "v2").Build())
	for i := 0; i < 2; i++ {
		r := do(c.B().Hgetall().Key(p + "h").Build())
		if m, err := r.ToMessage(); err != nil || !m.IsMap() {
			t.Fatalf("HGETALL is not a map: %v, %v", m, err)
		}
		if m, err := r.AsStrMap(); err != nil || len(m) != 2 || m["f1"] != "v1" || m["f2"] != "v2" {
			t.Fatalf("HGETALL = %v, %v", m, err)
		}
	}
	do(c.B().Zadd().Key(p+"z").ScoreMember().ScoreMember(1.5, "a").Build())
	if m, err := do(c.B().Zscore().Key(p + "z").Member("a").Build()).ToMessage(); err != nil || !m.IsFloat64() {
		t.Fatalf("ZSCORE is not a double: %v, %v", m, err)
	}
	if f, err := do(c.B().Zincrby().Key(p + "z").Increment(0.25).Member("a").Build()).AsFloat64(); err != nil || f != 1.75 {
		t.Fatalf("ZINCRBY = %v, %v", f, err)
	}
	for i := 0; i < 2; i++ {
		vs, err := do(c.B().Mget().Key(p+"k", p+"missing").Build()).ToArray()
		if err != nil || len(vs) != 2 || !vs[1].IsNil() {
			t.Fatalf("MGET = %v, %v", vs, err)
		}
	}

	// MULTI/EXEC in one DoMulti, and a WATCH transaction on a dedicated
	// connection that a concurrent write makes fail.
	rs := c.DoMulti(ctx,
		c.B().Multi().Build(),
		c.B().Set().Key(p+"tx").Value("1").Build(),
		c.B().Incr().Key(p+"tx").Build(),
		c.B().Exec().Build())
	if exec, err := rs[3].ToArray(); err != nil || len(exec) != 2 {
		t.Fatalf("EXEC = %v, %v", exec, err)
	} else if n, err := exec[1].AsInt64(); err != nil || n != 2 {
		t.Fatalf("INCR inside MULTI = %d, %v", n, err)
	}
	if v, _ := do(c.B().Get().Key(p + "tx").Build()).ToString(); v != "2" {
		t.Fatalf("GET after EXEC = %q", v)
	}
	for _, interfere := range []bool{false, true} {
		err := c.Dedicated(func(d rueidis.DedicatedClient) error {
			if err := d.Do(ctx, d.B().Watch().Key(p+"tx").Build()).Error(); err != nil {
				return err
			}
			n, err := d.Do(ctx, d.B().Get().Key(p+"tx").Build()).AsInt64()
			if err != nil {
				return err
			}
			if interfere {
				do(c.B().Set().Key(p + "tx").Value("100").Build())
			}
			rs := d.DoMulti(ctx,
				d.B().Multi().Build(),
				d.B().Set().Key(p+"tx").Value(fmt.Sprint(n*10)).Build(),
				d.B().Exec().Build())
			exec := rs[2]
			switch {
			case interfere && !rueidis.IsRedisNil(exec.Error()):
				return fmt.Errorf("EXEC after a concurrent write to a watched key = %v, want a nil reply", exec.Error())
			case !interfere && exec.Error() != nil:
				return fmt.Errorf("EXEC: %v", exec.Error())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := do(c.B().Get().Key(p + "tx").Build()).ToString(); v != "100" {
		t.Fatalf("GET after the failed CAS = %q, want the concurrent write's 100", v)
	}

	// Pub/sub: Receive shares the connection with the commands that run
	// meanwhile, whose replies interleave with the pushes.
	rueidisPubSub(t, func(ch string, fn func(string)) (func() error, error) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		subscribed := make(chan struct{})
		var once sync.Once
		hook := rueidis.WithOnSubscriptionHook(ctx, func(rueidis.PubSubSubscription) { once.Do(func() { close(subscribed) }) })
		go func() {
			done <- c.Receive(hook, c.B().Subscribe().Channel(ch).Build(), func(m rueidis.PubSubMessage) { fn(m.Message) })
		}()
		select {
		case <-subscribed:
		case err := <-done:
			cancel()
			return nil, err
		case <-time.After(5 * time.Second):
			cancel()
			return nil, fmt.Errorf("no subscription confirmation within 5s")
		}
		return func() error { cancel(); return <-done }, nil
	}, func(ch, msg string) error {
		return c.Do(ctx, c.B().Publish().Channel(ch).Message(msg).Build()).Error()
	}, func(i int) error {
		k := fmt.Sprintf("%sps%d", p, i%5)
		if err := c.Do(ctx, c.B().Set().Key(k).Value(fmt.Sprint(i)).Build()).Error(); err != nil {
			return err
		}
		v, err := c.Do(ctx, c.B().Get().Key(k).Build()).ToString()
		if err == nil && v != fmt.Sprint(i) {
			err = fmt.Errorf("GET %s = %q after SET %d", k, v, i)
		}
		return err
	}, p+"news")

	// A write made on Redis directly is seen through the proxy.
	do(c.B().Set().Key(p + "co").Value("old").Build())
	do(c.B().Get().Key(p + "co").Build())
	if err := side.direct.Set(ctx, p+"co", "new", 0).Err(); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, coherenceBound, "a direct write seen through rueidis", func() bool {
		v, err := c.Do(ctx, c.B().Get().Key(p+"co").Build()).ToString()
		return err == nil && v == "new"
	})
	t.Logf("a direct write was seen after %v", took)
}

// rueidisPubSub subscribes to ch with subscribe, publishes n messages while
// the same client runs commands (work), and checks that every message arrives,
// in order, and that every command succeeded; stop ends the subscription. It
// serves rueidis and valkey-go alike.
func rueidisPubSub(t *testing.T,
	subscribe func(ch string, fn func(string)) (stop func() error, err error),
	publish func(ch, msg string) error, work func(i int) error, ch string) {
	t.Helper()
	const n = 200
	got := make(chan string, n)
	stop, err := subscribe(ch, func(m string) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			if err := publish(ch, fmt.Sprint(i)); err != nil {
				errs <- fmt.Errorf("PUBLISH %d: %w", i, err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			if err := work(i); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case m := <-got:
			if m != fmt.Sprint(i) {
				t.Fatalf("message %d is %q", i, m)
			}
		case <-deadline:
			t.Fatalf("%d of %d messages arrived within 10s", i, n)
		}
	}
	if err := stop(); err != nil && err != context.Canceled {
		t.Fatalf("Receive ended with %v", err)
	}
}

// TestValkeyGoThroughProxy: valkey-go without client-side caching.
func TestValkeyGoThroughProxy(t *testing.T) {
	t.Parallel()
	for _, side := range clientSides(t) {
		t.Run(side.name, func(t *testing.T) {
			c, err := valkey.NewClient(valkey.ClientOption{
				InitAddress:  []string{side.addr},
				DisableCache: true,
				DisableRetry: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			valkeyScenario(t, c, side)
		})
	}
}

// TestValkeyGoClientSideCachingThroughProxy: valkey-go with its default
// options, which turn on client-side caching, and DoCache.
func TestValkeyGoClientSideCachingThroughProxy(t *testing.T) {
	t.Parallel()
	for _, side := range clientSides(t) {
		t.Run(side.name, func(t *testing.T) {
			c, err := valkey.NewClient(valkey.ClientOption{InitAddress: []string{side.addr}, DisableRetry: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			valkeyScenario(t, c, side) // the same, with client-side caching on
			ctx := context.Background()
			key := "csc:" + side.name
			if err := c.Do(ctx, c.B().Set().Key(key).Value("v1").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			get := func() valkey.ValkeyResult { return c.DoCache(ctx, c.B().Get().Key(key).Cache(), time.Minute) }
			if v, err := get().ToString(); err != nil || v != "v1" {
				t.Fatalf("DoCache GET = %q, %v", v, err)
			}
			// The SET's keyspace event may reach the proxy after the first
			// GET and invalidate what it cached: a read may miss once more.
			hits := side.hits()
			eventually(t, coherenceBound, "a DoCache GET served from valkey-go's cache", func() bool {
				hits = side.hits()
				return get().IsCacheHit()
			})
			if side.hits() != hits {
				t.Fatal("the cached read reached the proxy")
			}
			if err := side.direct.Set(ctx, key, "v2", 0).Err(); err != nil {
				t.Fatal(err)
			}
			took := eventually(t, coherenceBound, "valkey-go's cache invalidated after a direct write", func() bool {
				r := get()
				v, err := r.ToString()
				return err == nil && v == "v2"
			})
			t.Logf("a direct write reached valkey-go's own cache after %v", took)
		})
	}
}

func valkeyScenario(t *testing.T, c valkey.Client, side clientSide) {
	ctx := context.Background()
	p := "valkey:"
	do := func(cmd valkey.Completed) valkey.ValkeyResult {
		t.Helper()
		r := c.Do(ctx, cmd)
		if err := r.Error(); err != nil && !valkey.IsValkeyNil(err) {
			t.Fatalf("%v: %v", cmd.Commands(), err)
		}
		return r
	}

	do(c.B().Set().Key(p + "k").Value("v").Build())
	for i := 0; i < 2; i++ {
		if v, err := do(c.B().Get().Key(p + "k").Build()).ToString(); err != nil || v != "v" {
			t.Fatalf("GET = %q, %v", v, err)
		}
		if err := do(c.B().Get().Key(p + "missing").Build()).Error(); !valkey.IsValkeyNil(err) {
			t.Fatalf("GET of a missing key: %v, want a nil reply", err)
		}
	}

	do(c.B().Hset().Key(p+"h").FieldValue().FieldValue("f1", "v1").FieldValue("f2", "v2").Build())
	for i := 0; i < 2; i++ {
		r := do(c.B().Hgetall().Key(p + "h").Build())
		if m, err := r.ToMessage(); err != nil || !m.IsMap() {
			t.Fatalf("HGETALL is not a map: %v, %v", m, err)
		}
		if m, err := r.AsStrMap(); err != nil || len(m) != 2 || m["f1"] != "v1" || m["f2"] != "v2" {
			t.Fatalf("HGETALL = %v, %v", m, err)
		}
	}
	do(c.B().Zadd().Key(p+"z").ScoreMember().ScoreMember(1.5, "a").Build())
	if m, err := do(c.B().Zscore().Key(p + "z").Member("a").Build()).ToMessage(); err != nil || !m.IsFloat64() {
		t.Fatalf("ZSCORE is not a double: %v, %v", m, err)
	}
	for i := 0; i < 2; i++ {
		vs, err := do(c.B().Mget().Key(p+"k", p+"missing").Build()).ToArray()
		if err != nil || len(vs) != 2 || !vs[1].IsNil() {
			t.Fatalf("MGET = %v, %v", vs, err)
		}
	}

	rs := c.DoMulti(ctx,
		c.B().Multi().Build(),
		c.B().Set().Key(p+"tx").Value("1").Build(),
		c.B().Incr().Key(p+"tx").Build(),
		c.B().Exec().Build())
	if exec, err := rs[3].ToArray(); err != nil || len(exec) != 2 {
		t.Fatalf("EXEC = %v, %v", exec, err)
	} else if n, err := exec[1].AsInt64(); err != nil || n != 2 {
		t.Fatalf("INCR inside MULTI = %d, %v", n, err)
	}
	err := c.Dedicated(func(d valkey.DedicatedClient) error {
		if err := d.Do(ctx, d.B().Watch().Key(p+"tx").Build()).Error(); err != nil {
			return err
		}
		do(c.B().Set().Key(p + "tx").Value("100").Build())
		rs := d.DoMulti(ctx, d.B().Multi().Build(), d.B().Set().Key(p+"tx").Value("lost").Build(), d.B().Exec().Build())
		if !valkey.IsValkeyNil(rs[2].Error()) {
			return fmt.Errorf("EXEC after a concurrent write to a watched key = %v, want a nil reply", rs[2].Error())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := do(c.B().Get().Key(p + "tx").Build()).ToString(); v != "100" {
		t.Fatalf("GET after the failed CAS = %q, want the concurrent write's 100", v)
	}

	rueidisPubSub(t, func(ch string, fn func(string)) (func() error, error) {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		subscribed := make(chan struct{})
		var once sync.Once
		hook := valkey.WithOnSubscriptionHook(ctx, func(valkey.PubSubSubscription) { once.Do(func() { close(subscribed) }) })
		go func() {
			done <- c.Receive(hook, c.B().Subscribe().Channel(ch).Build(), func(m valkey.PubSubMessage) { fn(m.Message) })
		}()
		select {
		case <-subscribed:
		case err := <-done:
			cancel()
			return nil, err
		case <-time.After(5 * time.Second):
			cancel()
			return nil, fmt.Errorf("no subscription confirmation within 5s")
		}
		return func() error { cancel(); return <-done }, nil
	}, func(ch, msg string) error {
		return c.Do(ctx, c.B().Publish().Channel(ch).Message(msg).Build()).Error()
	}, func(i int) error {
		k := fmt.Sprintf("%sps%d", p, i%5)
		if err := c.Do(ctx, c.B().Set().Key(k).Value(fmt.Sprint(i)).Build()).Error(); err != nil {
			return err
		}
		v, err := c.Do(ctx, c.B().Get().Key(k).Build()).ToString()
		if err == nil && v != fmt.Sprint(i) {
			err = fmt.Errorf("GET %s = %q after SET %d", k, v, i)
		}
		return err
	}, p+"news")

	do(c.B().Set().Key(p + "co").Value("old").Build())
	do(c.B().Get().Key(p + "co").Build())
	if err := side.direct.Set(ctx, p+"co", "new", 0).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, coherenceBound, "a direct write seen through valkey-go", func() bool {
		v, err := c.Do(ctx, c.B().Get().Key(p+"co").Build()).ToString()
		return err == nil && v == "new"
	})
}

// TestGoRedisRESP3ThroughProxy: go-redis asked for RESP3 explicitly (no
// fallback to RESP2), reading RESP3's types, in transactions and pub/sub.
func TestGoRedisRESP3ThroughProxy(t *testing.T) {
	t.Parallel()
	for _, side := range clientSides(t) {
		t.Run(side.name, func(t *testing.T) {
			connect := func() *redis.Client {
				c := redis.NewClient(&redis.Options{Addr: side.addr, Protocol: 3, MaxRetries: -1, ClientName: "app3"})
				t.Cleanup(func() { c.Close() })
				return c
			}
			c := connect()
			ctx := context.Background()
			p := "goredis3:"
			if info := must(t, c.ClientInfo(ctx)).Val(); info.Resp != 3 {
				t.Fatalf("CLIENT INFO says resp=%d", info.Resp)
			}
			must(t, c.Set(ctx, p+"k", "v", 0))
			for i := 0; i < 2; i++ {
				if v := must(t, c.Get(ctx, p+"k")).Val(); v != "v" {
					t.Fatalf("GET = %q", v)
				}
				if err := c.Get(ctx, p+"missing").Err(); err != redis.Nil {
					t.Fatalf("GET of a missing key: %v", err)
				}
			}
			must(t, c.HSet(ctx, p+"h", "f1", "v1", "f2", "v2"))
			for i := 0; i < 2; i++ {
				// Do returns a RESP3 map as a Go map.
				raw := must(t, c.Do(ctx, "HGETALL", p+"h")).Val()
				if m, ok := raw.(map[interface{}]interface{}); !ok || len(m) != 2 || m["f1"] != "v1" {
					t.Fatalf("HGETALL through Do = %#v, want a map", raw)
				}
				if m := must(t, c.HGetAll(ctx, p+"h")).Val(); len(m) != 2 || m["f2"] != "v2" {
					t.Fatalf("HGETALL = %v", m)
				}
			}
			must(t, c.ZAdd(ctx, p+"z", redis.Z{Score: 1.5, Member: "a"}))
			if raw := must(t, c.Do(ctx, "ZSCORE", p+"z", "a")).Val(); raw != 1.5 {
				t.Fatalf("ZSCORE through Do = %#v, want the double 1.5", raw)
			}
			if zs := must(t, c.ZRangeWithScores(ctx, p+"z", 0, -1)).Val(); len(zs) != 1 || zs[0].Score != 1.5 {
				t.Fatalf("ZRANGE WITHSCORES = %v", zs)
			}
			if raw := must(t, c.Do(ctx, "SMEMBERS", p+"none")).Val(); fmt.Sprint(raw) != "[]" {
				t.Fatalf("SMEMBERS of a missing key = %#v", raw)
			}
			for i := 0; i < 2; i++ {
				if vs := must(t, c.MGet(ctx, p+"k", p+"missing")).Val(); len(vs) != 2 || vs[0] != "v" || vs[1] != nil {
					t.Fatalf("MGET = %#v", vs)
				}
			}
			cmds, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, p+"tx", 1, 0)
				pipe.Incr(ctx, p+"tx")
				pipe.HGetAll(ctx, p+"h")
				return nil
			})
			if err != nil || len(cmds) != 3 || cmds[1].(*redis.IntCmd).Val() != 2 || len(cmds[2].(*redis.MapStringStringCmd).Val()) != 2 {
				t.Fatalf("MULTI/EXEC = %v, %v", cmds, err)
			}
			err = c.Watch(ctx, func(tx *redis.Tx) error {
				n := must(t, tx.Get(ctx, p+"tx")).Val()
				must(t, c.Set(ctx, p+"tx", 100, 0))
				_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
					pipe.Set(ctx, p+"tx", n+"0", 0)
					return nil
				})
				return err
			}, p+"tx")
			if err != redis.TxFailedErr {
				t.Fatalf("WATCH, a concurrent write, EXEC: %v, want %v", err, redis.TxFailedErr)
			}
			sub := connect().Subscribe(ctx, p+"news")
			defer sub.Close()
			if _, err := sub.Receive(ctx); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 50; i++ {
				must(t, c.Publish(ctx, p+"news", i))
			}
			for i := 0; i < 50; i++ {
				m, err := sub.ReceiveMessage(ctx)
				if err != nil || m.Payload != fmt.Sprint(i) {
					t.Fatalf("message %d: %v, %v", i, m, err)
				}
			}
			must(t, c.Set(ctx, p+"co", "old", 0))
			must(t, c.Get(ctx, p+"co"))
			if err := side.direct.Set(ctx, p+"co", "new", 0).Err(); err != nil {
				t.Fatal(err)
			}
			eventually(t, coherenceBound, "a direct write seen through go-redis in RESP3", func() bool {
				return c.Get(ctx, p+"co").Val() == "new"
			})
			// The framework patterns, in RESP3 explicitly.
			for _, pat := range []struct {
				name string
				run  func(*testing.T, *redis.Client, func() *redis.Client)
			}{
				{"sessions", goSessions}, {"rate limiter", goRateLimiter}, {"lock", goLock},
				{"pubsub", goPubSub}, {"queues", goQueues}, {"streams", goStreams},
			} {
				t.Run(pat.name, func(t *testing.T) { pat.run(t, c, connect) })
			}
		})
	}
}
