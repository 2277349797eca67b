package proxy

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/policy"
)

// readsUpstream reports whether a GET of key through c costs Redis a GET, and
// checks the value.
func readsUpstream(t *testing.T, e *env, key, want string) bool {
	t.Helper()
	before := e.upstreamCalls()["get"]
	if v, err := e.client(0).Get(bg, key).Result(); err != nil || v != want {
		t.Fatalf("GET %s = %q, %v; want %q", key, v, err, want)
	}
	e.srv.cache.Wait()
	return e.upstreamCalls()["get"] > before
}

// TestReloadDropsChangedPolicies: a new policy set keeps the entries of the
// policies it keeps as they were, and drops those of policies it changes or
// removes, at once.
func TestReloadDropsChangedPolicies(t *testing.T) {
	t.Parallel()
	o := envOptions{policies: []policy.Policy{
		{Prefix: "a:", Cache: true, TTL: time.Minute, CacheNil: true},
		{Prefix: "b:", Cache: true, TTL: time.Minute, CacheNil: true},
		{Prefix: "c:", Cache: true, TTL: time.Minute, CacheNil: true},
	}}
	seen := watchInvalidations(&o)
	e := startEnv(t, o)
	e.waitSubscribed()
	keys := []string{"a:1", "b:1", "c:1"}
	for _, k := range keys {
		e.direct.Set(bg, k, k, 0)
	}
	waitNotified(t, seen, keys...)
	for _, k := range keys {
		readsUpstream(t, e, k, k)
		if readsUpstream(t, e, k, k) {
			t.Fatalf("%s is not cached before the reload", k)
		}
	}

	next, err := policy.Compile([]policy.Policy{
		{Prefix: "a:", Cache: true, TTL: time.Minute, CacheNil: true},     // unchanged
		{Prefix: "b:", Cache: true, TTL: 2 * time.Minute, CacheNil: true}, // changed
		{Prefix: "d:", Cache: true, TTL: time.Minute, CacheNil: true},     // new; c: is gone
	})
	if err != nil {
		t.Fatal(err)
	}
	dropped, err := e.srv.SetPolicies(next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dropped, []string{"b:", "c:"}) {
		t.Errorf("dropped %q, want b: and c:", dropped)
	}
	if readsUpstream(t, e, "a:1", "a:1") {
		t.Error("a: kept its definition, yet its entry was dropped")
	}
	if !readsUpstream(t, e, "b:1", "b:1") {
		t.Error("b: changed, yet its entry still answers")
	}
	if readsUpstream(t, e, "b:1", "b:1") {
		t.Error("b: does not cache under its new definition")
	}
	if !readsUpstream(t, e, "c:1", "c:1") || !readsUpstream(t, e, "c:1", "c:1") {
		t.Error("c: was removed, yet its key is still answered from the L1")
	}
	if n := e.counter("cacheproxy_invalidations_total", map[string]string{"source": "reload"}); n != 2 {
		t.Errorf("reload invalidations %v, want 2", n)
	}

	// A set naming a pool the server lacks is refused whole.
	bad, _ := policy.Compile([]policy.Policy{{Prefix: "a:", Cache: true, TTL: time.Second, Pool: "nope"}})
	if _, err := e.srv.SetPolicies(bad); err == nil || !strings.Contains(err.Error(), `pool "nope"`) {
		t.Fatalf("SetPolicies with an unknown pool: %v", err)
	}
	if readsUpstream(t, e, "a:1", "a:1") {
		t.Error("a refused set changed the running policies")
	}
}

// TestMaxValueBytes: replies over the policy's limit are answered but never
// kept, and counted as too large.
func TestMaxValueBytes(t *testing.T) {
	t.Parallel()
	o := envOptions{policies: []policy.Policy{{Prefix: "", Cache: true, TTL: time.Minute, CacheNil: true, MaxValueBytes: 64}}}
	seen := watchInvalidations(&o)
	e := startEnv(t, o)
	e.waitSubscribed()
	big, small := strings.Repeat("x", 100), strings.Repeat("y", 50)
	e.direct.Set(bg, "big", big, 0)
	e.direct.Set(bg, "small", small, 0) // 50 bytes of value: "$50\r\n...\r\n" is 57 bytes of reply
	waitNotified(t, seen, "big", "small")
	for range 3 {
		if !readsUpstream(t, e, "big", big) {
			t.Fatal("a 100-byte value was kept under a 64-byte limit")
		}
	}
	readsUpstream(t, e, "small", small)
	if readsUpstream(t, e, "small", small) {
		t.Fatal("a 57-byte reply was not kept under a 64-byte limit")
	}
	if n := e.counter("cacheproxy_l1_fills_dropped_total", map[string]string{"reason": "too_large"}); n != 3 {
		t.Errorf("too_large drops %v, want 3", n)
	}
}

// TestMissStoredWhateverEndsTheBatch: the L1 keeps a miss's reply once it has
// been written to the client, and also when the batch ends in a way other than
// the usual write: the client subscribes, quits, hangs up before reading, or
// blocks.
func TestMissStoredWhateverEndsTheBatch(t *testing.T) {
	t.Parallel()
	var o envOptions
	seen := watchInvalidations(&o)
	e := startEnv(t, o)
	e.waitSubscribed()
	cases := []struct {
		key   string
		after []string // the command pipelined behind the GET (multibulk, as inline ones travel alone)
	}{
		{"user:end:subscribe", []string{"SUBSCRIBE", "ch"}},
		{"user:end:quit", []string{"QUIT"}},
		{"user:end:hangup", nil},
		{"user:end:blpop", []string{"BLPOP", "q", "0"}},
	}
	for _, tc := range cases {
		e.direct.Set(bg, tc.key, "v", 0)
		// Its event must not spoil the fill below.
		waitNotified(t, seen, tc.key)
	}
	for _, tc := range cases {
		clients, misses := e.srv.clients.Load(), e.counter("cacheproxy_l1_misses_total", nil)
		stored := e.srv.cache.Stats().Stored
		r := dialRaw(t, e.addr)
		req := command("GET", tc.key).Raw
		if tc.after != nil {
			req = append(req, command(tc.after...).Raw...)
		}
		switch tc.key {
		case "user:end:blpop":
			// The GET's reply waits behind the BLPOP; its fill must not.
			if _, err := r.c.Write(req); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "BLPOP blocked", func() bool {
				return len(e.upstreamClients("cmd=blpop")) == 1
			})
		case "user:end:hangup":
			if _, err := r.c.Write(req); err != nil {
				t.Fatal(err)
			}
			r.c.Close()
			// At most as many clients as before: the previous case's client
			// (QUIT) may still have been letting go when they were counted.
			eventually(t, 5*time.Second, "the proxy reads the GET, then lets the client go", func() bool {
				return e.counter("cacheproxy_l1_misses_total", nil) > misses && e.srv.clients.Load() <= clients
			})
		default:
			if got := r.roundTrip(string(req), 2); !strings.HasPrefix(got, "$1\r\nv\r\n") {
				t.Fatalf("%s: replies %q", tc.key, got)
			}
		}
		e.srv.cache.Wait() // panics if the fill is never stored
		if n := e.srv.cache.Stats().Stored; n != stored+1 {
			t.Fatalf("%s: %d fills stored; want 1", tc.key, n-stored)
		}
	}
}
