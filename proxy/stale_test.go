package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/policy"
)

// TestStaleIfError: with Redis unreachable, a read under a stale_if_error
// policy gets the last cached value while it is young enough, then the
// error; a policy without it gets the error at once.
func TestStaleIfError(t *testing.T) {
	t.Parallel()
	const window = 1500 * time.Millisecond
	e := startFaultEnv(t, faultOptions{policies: []policy.Policy{
		{Prefix: "", Cache: true, TTL: time.Minute, CacheNil: true},
		{Prefix: "stale:", Cache: true, TTL: time.Minute, CacheNil: true, StaleIfError: window},
	}})
	ctx := context.Background()
	c := e.client(0)
	for _, k := range []string{"stale:k", "plain:k"} {
		if err := c.Set(ctx, k, "v1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, k).Result(); err != nil || v != "v1" {
			t.Fatalf("GET %s = %q, %v", k, v, err)
		}
	}
	// The fill is stored just after its reply is written, and only while
	// the stream is trusted (a fill begun before a Resume is not): read
	// again until it is kept.
	for start := time.Now(); e.cache.Last().Len() == 0; {
		if time.Since(start) > 5*time.Second {
			t.Fatal("stale:k never kept for stale_if_error")
		}
		time.Sleep(10 * time.Millisecond)
		if _, err := c.Get(ctx, "stale:k").Result(); err != nil {
			t.Fatal(err)
		}
	}
	stored := time.Now()
	e.bridge.Cut(true)
	// The stream's loss flushes the L1; reads then miss and fail upstream.
	deadline := time.Now().Add(time.Second)
	for e.sub.State().Subscribed {
		if time.Now().After(deadline) {
			t.Fatal("stream still trusted 1s after the cut")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if v, err := c.Get(ctx, "stale:k").Result(); err != nil || v != "v1" {
		t.Fatalf("stale:k while Redis is unreachable = %q, %v; want the stale v1", v, err)
	}
	if got := e.counter("cacheproxy_l1_stale_served_total", map[string]string{"policy": "stale:"}); got != 1 {
		t.Fatalf("stale served %v, want 1", got)
	}
	if v, err := c.Get(ctx, "plain:k").Result(); err == nil || !strings.Contains(err.Error(), "upstream unavailable") {
		t.Fatalf("plain:k while Redis is unreachable = %q, %v; want the upstream error", v, err)
	}
	time.Sleep(time.Until(stored.Add(window + 100*time.Millisecond)))
	if v, err := c.Get(ctx, "stale:k").Result(); err == nil || !strings.Contains(err.Error(), "upstream unavailable") {
		t.Fatalf("stale:k past the window = %q, %v; want the upstream error", v, err)
	}
	t.Logf("stale served within %v of the store, refused after", window)
	// Written meanwhile on Redis: after the heal the proxy reads the new value.
	if err := e.direct.Set(ctx, "stale:k", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	e.bridge.Heal()
	healed := time.Now()
	for {
		v, err := c.Get(ctx, "stale:k").Result()
		if err == nil && v == "v2" {
			break
		}
		if time.Since(healed) > 3*time.Second {
			t.Fatalf("stale:k 3s after heal = %q, %v", v, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("v2 read through the proxy %v after heal", time.Since(healed).Round(time.Millisecond))
}
