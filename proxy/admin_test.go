package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/policy"
)

var adminPolicies = []policy.Policy{
	{Prefix: "user:", Cache: true, TTL: 5 * time.Minute, CacheNil: false, MaxValueBytes: 1024},
	{Prefix: "user:vip:", Cache: true, TTL: time.Minute, CacheNil: true},
	{Prefix: "rate:", Cache: false},
}

// pairs reads a CACHEPROXY reply of name and value pairs.
func pairs(t *testing.T, v any) map[string]any {
	t.Helper()
	if mv, ok := v.(map[any]any); ok { // RESP3
		m := map[string]any{}
		for k, x := range mv {
			m[k.(string)] = x
		}
		return m
	}
	s, ok := v.([]any)
	if !ok || len(s)%2 != 0 {
		t.Fatalf("reply %#v is not a list of pairs", v)
	}
	m := map[string]any{}
	for i := 0; i < len(s); i += 2 {
		m[s[i].(string)] = s[i+1]
	}
	return m
}

// watchInvalidations has the proxy o starts count the keys its invalidation
// stream drops (seenTarget), so that a test can wait for a notification
// rather than race it.
func watchInvalidations(o *envOptions) *seenTarget {
	s := &seenTarget{keys: map[string]int{}}
	o.wrapTarget = func(t invalidation.Target) invalidation.Target {
		s.Target = t
		return s
	}
	return s
}

func waitNotified(t *testing.T, s *seenTarget, keys ...string) {
	t.Helper()
	for _, k := range keys {
		eventually(t, 5*time.Second, "the notification of "+k, func() bool { return s.count(k) > 0 })
	}
}

func TestAdminPolicy(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{policies: adminPolicies})
	c := e.client(0)
	for _, tc := range []struct {
		key  string
		want map[string]any
	}{
		{"user:vip:7", map[string]any{"policy": "user:vip:", "source": "policies[1]", "cache": "yes", "ttl": "1m0s",
			"cache_nil": "yes", "max_value_bytes": int64(0), "pool": "default",
			"why": `longest of the matching prefixes "user:", "user:vip:"`}},
		{"user:7", map[string]any{"policy": "user:", "source": "policies[0]", "ttl": "5m0s", "cache_nil": "no",
			"max_value_bytes": int64(1024), "why": "the only matching prefix"}},
		{"rate:1", map[string]any{"policy": "rate:", "cache": "no", "pool": "-"}},
		{"other", map[string]any{"policy": "", "source": "implicit default", "cache": "no",
			"why": `no policy prefix matches and the list has no "" policy: not cached`}},
	} {
		v, err := c.Do(bg, "cacheproxy", "POLICY", tc.key).Result()
		if err != nil {
			t.Fatalf("CACHEPROXY POLICY %s: %v", tc.key, err)
		}
		got := pairs(t, v)
		if got["key"] != tc.key {
			t.Errorf("%s: key %v", tc.key, got["key"])
		}
		for k, want := range tc.want {
			if got[k] != want {
				t.Errorf("%s: %s = %#v, want %#v", tc.key, k, got[k], want)
			}
		}
	}
	for _, tc := range []struct {
		args []any
		want string
	}{
		{[]any{"CACHEPROXY"}, "ERR wrong number of arguments for 'cacheproxy' command"},
		{[]any{"CACHEPROXY", "POLICY"}, "ERR wrong number of arguments for 'cacheproxy|policy' command"},
		{[]any{"CACHEPROXY", "FLUSH", "a", "b"}, "ERR wrong number of arguments for 'cacheproxy|flush' command"},
		{[]any{"CACHEPROXY", "NOPE"}, "ERR unknown subcommand 'NOPE'. Try CACHEPROXY HELP."},
	} {
		if err := c.Do(bg, tc.args...).Err(); err == nil || err.Error() != tc.want {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	help, err := c.Do(bg, "CACHEPROXY", "HELP").StringSlice()
	if err != nil || len(help) < 4 || !strings.Contains(strings.Join(help, "\n"), "FLUSH [<prefix>]") {
		t.Errorf("HELP = %q, %v", help, err)
	}
	if n := e.upstreamCalls()["cacheproxy"]; n != 0 {
		t.Errorf("CACHEPROXY reached the upstream %d times", n)
	}
}

func TestAdminStats(t *testing.T) {
	t.Parallel()
	o := envOptions{policies: adminPolicies}
	seen := watchInvalidations(&o)
	e := startEnv(t, o)
	e.waitSubscribed()
	c := e.client(0)
	e.direct.Set(bg, "user:1", "a", 0)
	waitNotified(t, seen, "user:1")
	for range 4 {
		c.Get(bg, "user:1") // 1 miss, then hits
		e.cache.Wait()
	}
	c.Set(bg, "user:1", "b", 0) // a write through the proxy
	v, err := c.Do(bg, "CACHEPROXY", "STATS").Result()
	if err != nil {
		t.Fatal(err)
	}
	st := pairs(t, v)
	pols := st["policies"].([]any)
	if len(pols) != 2 {
		t.Fatalf("policies %v: want the 2 that cache", pols)
	}
	user := pairs(t, pols[0])
	if user["policy"] != "user:" || user["hits"] != int64(3) || user["misses"] != int64(1) || user["hit_ratio"] != "0.7500" {
		t.Errorf("user: stats %v; want 3 hits, 1 miss, ratio 0.7500", user)
	}
	if vip := pairs(t, pols[1]); vip["hit_ratio"] != "-" {
		t.Errorf("user:vip: stats %v; want no ratio without reads", vip)
	}
	pool := pairs(t, st["pools"].([]any)[0])
	if pool["pool"] != "default" || pool["max_bytes"] != int64(64<<20) || pool["fills_stored"] != int64(1) {
		t.Errorf("pool stats %v", pool)
	}
	inv := pairs(t, st["invalidations"])
	if inv["write"].(int64) < 1 {
		t.Errorf("invalidations %v: the SET through the proxy is not counted", inv)
	}
	if st["caching_enabled"] != int64(1) {
		t.Errorf("caching_enabled %v", st["caching_enabled"])
	}
}

// TestAdminFlush: FLUSH drops L1 entries under a prefix (and only those of the
// policies that can hold such keys), never the data in Redis.
func TestAdminFlush(t *testing.T) {
	t.Parallel()
	o := envOptions{policies: append([]policy.Policy{{Prefix: "", Cache: true, TTL: time.Minute}}, adminPolicies...)}
	seen := watchInvalidations(&o)
	e := startEnv(t, o)
	e.waitSubscribed()
	c := e.client(0)
	keys := []string{"user:1", "user:vip:1", "session:1"}
	warm := func() {
		for _, k := range keys {
			e.direct.Set(bg, k, "v-"+k, 0)
		}
		waitNotified(t, seen, keys...)
		for _, k := range keys {
			c.Get(bg, k)
			e.cache.Wait()
		}
	}
	// gets reports, per key, whether reading it again cost Redis a GET.
	gets := func() map[string]bool {
		out := map[string]bool{}
		for _, k := range keys {
			before := e.upstreamCalls()["get"]
			if v, err := c.Get(bg, k).Result(); err != nil || v != "v-"+k {
				t.Fatalf("GET %s = %q, %v: FLUSH must not touch Redis", k, v, err)
			}
			out[k] = e.upstreamCalls()["get"] > before
			e.cache.Wait()
		}
		return out
	}
	warm()
	if got := gets(); got["user:1"] || got["user:vip:1"] || got["session:1"] {
		t.Fatalf("warm L1 still reads Redis: %v", got)
	}

	reply, err := c.Do(bg, "CACHEPROXY", "FLUSH", "user:vip:").Text()
	if err != nil || reply != `OK flushed the L1 entries of policies "user:vip:"` {
		t.Fatalf("FLUSH user:vip: = %q, %v", reply, err)
	}
	if got := gets(); got["user:1"] || !got["user:vip:1"] || got["session:1"] {
		t.Fatalf("after FLUSH user:vip:, upstream reads %v; want user:vip:1 only", got)
	}

	// A prefix that is no policy's takes the policy that covers it, and
	// longer ones under it.
	reply, err = c.Do(bg, "CACHEPROXY", "FLUSH", "user:").Text()
	if err != nil || reply != `OK flushed the L1 entries of policies "user:", "user:vip:"` {
		t.Fatalf("FLUSH user: = %q, %v", reply, err)
	}
	if got := gets(); !got["user:1"] || !got["user:vip:1"] || got["session:1"] {
		t.Fatalf("after FLUSH user:, upstream reads %v", got)
	}

	if reply, err = c.Do(bg, "CACHEPROXY", "FLUSH", "rate:").Text(); err != nil || !strings.Contains(reply, "nothing to flush") {
		t.Fatalf("FLUSH of an uncached prefix = %q, %v", reply, err)
	}

	if reply, err = c.Do(bg, "CACHEPROXY", "FLUSH").Text(); err != nil || reply != "OK flushed every L1 pool" {
		t.Fatalf("FLUSH = %q, %v", reply, err)
	}
	if got := gets(); !got["user:1"] || !got["user:vip:1"] || !got["session:1"] {
		t.Fatalf("after FLUSH, upstream reads %v; want every key", got)
	}
	if n := e.counter("cacheproxy_invalidations_total", map[string]string{"source": "admin"}); n != 4 {
		t.Errorf("admin invalidations %v, want 4 (1 + 2 policies + 1 whole flush)", n)
	}
	if err := e.direct.Get(bg, "user:1").Err(); err != nil {
		t.Fatalf("Redis lost user:1: %v", err)
	}
}

// TestAdminReplyBytes: the replies are plain RESP2 arrays, bulk
// strings and integers, which every client and redis-cli can print.
func TestAdminReplyBytes(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{policies: adminPolicies})
	r := dialRaw(t, e.addr)
	got := r.roundTrip("*3\r\n$10\r\nCACHEPROXY\r\n$6\r\nPOLICY\r\n$6\r\nrate:1\r\n", 1)
	want := crlf(`*18
$3
key
$6
rate:1
$6
policy
$5
rate:
$6
source
$11
policies[2]
$3
why
$24
the only matching prefix
$5
cache
$2
no
$3
ttl
$2
0s
$9
cache_nil
$2
no
$15
max_value_bytes
:0
$4
pool
$1
-
`)
	if got != want {
		t.Fatalf("reply:\n%q\nwant\n%q", got, want)
	}
}
