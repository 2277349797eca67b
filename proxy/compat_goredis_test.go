package proxy

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// TestGoRedisPatterns replays framework patterns with go-redis v9, which opens
// every connection with HELLO 3 and falls back to RESP2 on the proxy's
// NOPROTO. The same checks run against a Redis of their own first, so that
// they hold for Redis itself.
func TestGoRedisPatterns(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	ref := redistest.Start(t, redistest.Options{})
	for _, side := range []struct{ name, addr string }{{"redis", ref.Addr()}, {"proxy", e.addr}} {
		t.Run(side.name, func(t *testing.T) {
			connect := func() *redis.Client {
				c := redis.NewClient(&redis.Options{Addr: side.addr, MaxRetries: -1, ClientName: "app"})
				t.Cleanup(func() { c.Close() })
				return c
			}
			c := connect()
			for _, p := range []struct {
				name string
				run  func(*testing.T, *redis.Client, func() *redis.Client)
			}{
				{"sessions", goSessions},
				{"rate limiter", goRateLimiter},
				{"pattern delete", goPatternDelete},
				{"versions", goVersions},
				{"lock", goLock},
				{"pubsub", goPubSub},
				{"queues", goQueues},
				{"streams", goStreams},
			} {
				t.Run(p.name, func(t *testing.T) { p.run(t, c, connect) })
			}
		})
	}
}

// must fails the test on a command's error and returns the command.
func must[C interface{ Err() error }](t *testing.T, c C) C {
	t.Helper()
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	return c
}

// noErr fails the test on err and returns v.
func noErr[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func goSessions(t *testing.T, c *redis.Client, _ func() *redis.Client) {
	must(t, c.Set(bg, "session:abc", `{"user":7}`, 30*time.Second))
	for i := 0; i < 2; i++ {
		if v := must(t, c.Get(bg, "session:abc")).Val(); v != `{"user":7}` {
			t.Fatalf("GET = %q", v)
		}
	}
	must(t, c.Set(bg, "session:abc", `{}`, 30*time.Second))
	if v := must(t, c.Get(bg, "session:abc")).Val(); v != `{}` {
		t.Fatalf("GET after SET = %q", v)
	}
	if ttl := must(t, c.TTL(bg, "session:abc")).Val(); ttl <= 0 || ttl > 30*time.Second {
		t.Fatalf("TTL = %v", ttl)
	}
	c.Del(bg, "session:abc")
	if err := c.Get(bg, "session:abc").Err(); err != redis.Nil {
		t.Fatalf("GET after DEL: %v", err)
	}
}

func goRateLimiter(t *testing.T, c *redis.Client, _ func() *redis.Client) {
	key := "ratelimit:user:1"
	step := func(p redis.Pipeliner, i int) *redis.IntCmd {
		now := time.Now().UnixMilli()
		p.ZRemRangeByScore(bg, key, "0", fmt.Sprint(now-60000))
		p.ZAdd(bg, key, redis.Z{Score: float64(now), Member: fmt.Sprint(now, "-", i)})
		card := p.ZCard(bg, key)
		p.Expire(bg, key, time.Minute)
		return card
	}
	for i := 1; i <= 5; i++ {
		var card *redis.IntCmd
		noErr[[]redis.Cmder](t)(c.TxPipelined(bg, func(p redis.Pipeliner) error { card = step(p, i); return nil }))
		if card.Val() != int64(i) {
			t.Fatalf("request %d: ZCARD in MULTI = %d", i, card.Val())
		}
	}
	var card *redis.IntCmd
	noErr[[]redis.Cmder](t)(c.Pipelined(bg, func(p redis.Pipeliner) error { card = step(p, 6); return nil }))
	if card.Val() != 6 || c.ZCard(bg, key).Val() != 6 {
		t.Fatalf("ZCARD in a pipeline = %d", card.Val())
	}
	// WATCH-based optimistic update, as go-redis's docs show it.
	c.Set(bg, "ratelimit:budget", 10, 0)
	err := c.Watch(bg, func(tx *redis.Tx) error {
		n := noErr[int](t)(tx.Get(bg, "ratelimit:budget").Int())
		_, err := tx.TxPipelined(bg, func(p redis.Pipeliner) error {
			p.Set(bg, "ratelimit:budget", n-1, 0)
			return nil
		})
		return err
	}, "ratelimit:budget")
	if err != nil || c.Get(bg, "ratelimit:budget").Val() != "9" {
		t.Fatalf("WATCH update: %v, budget %q", err, c.Get(bg, "ratelimit:budget").Val())
	}
}

func goPatternDelete(t *testing.T, c *redis.Client, _ func() *redis.Client) {
	for i := 0; i < 250; i++ {
		c.Set(bg, fmt.Sprintf("cache:page:%d", i), i, 0)
	}
	if v := c.Get(bg, "cache:page:7").Val(); v != "7" {
		t.Fatalf("GET = %q", v)
	}
	var keys []string
	iter := c.Scan(bg, 0, "cache:page:*", 50).Iterator()
	for iter.Next(bg) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 250 {
		t.Fatalf("SCAN found %d keys", len(keys))
	}
	sort.Strings(keys)
	for len(keys) > 0 {
		n := min(len(keys), 100)
		must(t, c.Del(bg, keys[:n]...))
		keys = keys[n:]
	}
	if err := c.Get(bg, "cache:page:7").Err(); err != redis.Nil {
		t.Fatalf("GET after the pattern delete: %v", err)
	}
}

func goVersions(t *testing.T, c *redis.Client, _ func() *redis.Client) {
	c.Del(bg, "version:user:7")
	for i := int64(1); i <= 10; i++ {
		if n := must(t, c.Incr(bg, "version:user:7")).Val(); n != i {
			t.Fatalf("INCR = %d, want %d", n, i)
		}
		if v := c.Get(bg, "version:user:7").Val(); v != fmt.Sprint(i) {
			t.Fatalf("GET after INCR %d = %q", i, v)
		}
	}
}

func goLock(t *testing.T, c *redis.Client, _ func() *redis.Client) {
	release := redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
	must(t, release.Load(bg, c))
	if !must(t, c.SetNX(bg, "lock:order:1", "owner-a", 10*time.Second)).Val() {
		t.Fatal("first SET NX PX failed")
	}
	if must(t, c.SetNX(bg, "lock:order:1", "owner-b", 10*time.Second)).Val() {
		t.Fatal("second SET NX PX succeeded")
	}
	c.Get(bg, "lock:order:1")
	if n := noErr[int](t)(release.EvalSha(bg, c, []string{"lock:order:1"}, "owner-b").Int()); n != 0 {
		t.Fatalf("release by another owner = %d", n)
	}
	if n := noErr[int](t)(release.EvalSha(bg, c, []string{"lock:order:1"}, "owner-a").Int()); n != 1 {
		t.Fatalf("release = %d", n)
	}
	if err := c.Get(bg, "lock:order:1").Err(); err != redis.Nil {
		t.Fatalf("GET after release: %v", err)
	}
	c.ScriptFlush(bg)
	c.Set(bg, "lock:order:2", "me", 10*time.Second)
	if n := noErr[int](t)(release.Run(bg, c, []string{"lock:order:2"}, "me").Int()); n != 1 { // EVALSHA, NOSCRIPT, EVAL
		t.Fatalf("release after SCRIPT FLUSH = %d", n)
	}
}

func goPubSub(t *testing.T, c *redis.Client, connect func() *redis.Client) {
	sub := connect().Subscribe(bg, "events")
	defer sub.Close()
	if err := sub.PSubscribe(bg, "jobs.*"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // both confirmations
		noErr[any](t)(sub.Receive(bg))
	}
	for i := 0; i < 50; i++ {
		if n := must(t, c.Publish(bg, "events", i)).Val(); n != 1 {
			t.Fatalf("PUBLISH reached %d subscribers", n)
		}
	}
	c.Publish(bg, "jobs.mail", "send")
	for i := 0; i < 50; i++ {
		m := noErr[*redis.Message](t)(sub.ReceiveMessage(bg))
		if m.Channel != "events" || m.Payload != fmt.Sprint(i) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	if m := noErr[*redis.Message](t)(sub.ReceiveMessage(bg)); m.Pattern != "jobs.*" || m.Payload != "send" {
		t.Fatalf("pmessage: %+v", m)
	}
	if err := sub.Ping(bg, "hi"); err != nil {
		t.Fatal(err)
	}
	if p, ok := noErr[any](t)(sub.Receive(bg)).(*redis.Pong); !ok || p.Payload != "hi" {
		t.Fatalf("PING in subscribed mode: %#v", p)
	}
}

func goQueues(t *testing.T, c *redis.Client, connect func() *redis.Client) {
	worker := connect()
	c.Del(bg, "queue:jobs", "queue:processing", "queue:done")
	popped := make(chan []string, 1)
	go func() { popped <- worker.BLPop(bg, 5*time.Second, "queue:jobs").Val() }()
	time.Sleep(20 * time.Millisecond) // let it block; either order gives the same result
	c.LPush(bg, "queue:jobs", "job-1")
	if got := <-popped; fmt.Sprint(got) != "[queue:jobs job-1]" {
		t.Fatalf("BLPOP = %v", got)
	}
	c.LPush(bg, "queue:jobs", "job-2")
	if v := must(t, worker.BRPopLPush(bg, "queue:jobs", "queue:processing", time.Second)).Val(); v != "job-2" {
		t.Fatalf("BRPOPLPUSH = %q", v)
	}
	if v := must(t, worker.BLMove(bg, "queue:processing", "queue:done", "RIGHT", "LEFT", time.Second)).Val(); v != "job-2" {
		t.Fatalf("BLMOVE = %q", v)
	}
	if got := c.LRange(bg, "queue:done", 0, -1).Val(); fmt.Sprint(got) != "[job-2]" {
		t.Fatalf("LRANGE = %v", got)
	}
	if err := worker.BLPop(bg, 100*time.Millisecond, "queue:empty").Err(); err != redis.Nil {
		t.Fatalf("BLPOP timeout: %v", err)
	}
}

func goStreams(t *testing.T, c *redis.Client, connect func() *redis.Client) {
	worker := connect()
	c.Del(bg, "stream:orders")
	must(t, c.XGroupCreateMkStream(bg, "stream:orders", "billing", "$"))
	read := make(chan []redis.XStream, 1)
	go func() {
		read <- worker.XReadGroup(bg, &redis.XReadGroupArgs{
			Group: "billing", Consumer: "w1", Streams: []string{"stream:orders", ">"}, Block: 5 * time.Second,
		}).Val()
	}()
	time.Sleep(20 * time.Millisecond)
	id := must(t, c.XAdd(bg, &redis.XAddArgs{Stream: "stream:orders", Values: []string{"order", "42"}})).Val()
	got := <-read
	if len(got) != 1 || len(got[0].Messages) != 1 || got[0].Messages[0].ID != id || got[0].Messages[0].Values["order"] != "42" {
		t.Fatalf("XREADGROUP = %+v", got)
	}
	if n := must(t, c.XAck(bg, "stream:orders", "billing", id)).Val(); n != 1 {
		t.Fatalf("XACK = %d", n)
	}
}
