package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/faultnet"
	"github.com/cacheproxy/cacheproxy/policy"
)

// faultEnv is a proxy whose every upstream connection (data and invalidation
// stream) goes through a fault-injection bridge in front of a real Redis.
type faultEnv struct {
	*env
	bridge *faultnet.Bridge
}

type faultOptions struct {
	requestTimeout time.Duration
	policies       []policy.Policy
}

func startFaultEnv(t *testing.T, o faultOptions) *faultEnv {
	t.Helper()
	var br *faultnet.Bridge
	e := startEnv(t, envOptions{
		policies:       o.policies,
		requestTimeout: o.requestTimeout,
		staleBytes:     8 << 20,
		allowConfigSet: true,
		canaryInterval: 100 * time.Millisecond,
		canaryTimeout:  time.Second,
		via: func(redisAddr string) string {
			var err error
			if br, err = faultnet.New(redisAddr); err != nil {
				t.Fatal(err)
			}
			// Registered before startEnv's own cleanup, so it runs after it:
			// healed first, the proxy stops cleanly, then the bridge closes.
			t.Cleanup(func() { br.Close() })
			return br.Addr()
		},
	})
	t.Cleanup(br.Heal) // runs before startEnv's cleanup stops the proxy
	e.waitSubscribed()
	return &faultEnv{env: e, bridge: br}
}

// tally is what one pipelined client saw.
type tally struct {
	rounds, failed int
	acked, unknown int64 // INCRs answered, and failed (which may have run)
	wrong          []string
}

// pipeliner runs pipelines of SET k:<id>:<n> n, GET k:<id>:<n>, INCR c:<id>
// until stop, checking each reply that comes back against its command.
func pipeliner(ctx context.Context, c *redis.Client, id int, stop <-chan struct{}) *tally {
	t := &tally{}
	var last int64
	for n := 0; ; n++ {
		select {
		case <-stop:
			return t
		default:
		}
		k := fmt.Sprintf("k:%d:%d", id, n)
		p := c.Pipeline()
		set := p.Set(ctx, k, n, 0)
		get := p.Get(ctx, k)
		incr := p.Incr(ctx, fmt.Sprintf("c:%d", id))
		_, _ = p.Exec(ctx)
		t.rounds++
		if set.Err() != nil {
			t.failed++
		} else if set.Val() != "OK" {
			t.wrong = append(t.wrong, fmt.Sprintf("SET %s = %q", k, set.Val()))
		}
		// A failed SET may still have run (only its reply was lost), and
		// the GET may travel on another connection: it finds n or nothing.
		switch err := get.Err(); {
		case err == nil && get.Val() != strconv.Itoa(n):
			t.wrong = append(t.wrong, fmt.Sprintf("GET %s = %q", k, get.Val()))
		case errors.Is(err, redis.Nil) && set.Err() == nil:
			t.wrong = append(t.wrong, fmt.Sprintf("GET %s = nil after its SET succeeded", k))
		}
		if incr.Err() != nil {
			t.unknown++
			continue
		}
		v := incr.Val()
		// Each acknowledged INCR adds exactly one, plus at most one per
		// INCR whose reply was lost since the previous acknowledgement.
		if v <= last || v > t.acked+t.unknown+1 {
			t.wrong = append(t.wrong, fmt.Sprintf("INCR c:%d = %d after %d (acked %d, unknown %d)", id, v, last, t.acked, t.unknown))
		}
		last = v
		t.acked++
	}
}

// TestFaults runs pipelined clients through the proxy while the bridge
// between it and Redis misbehaves, then heals it. Every reply a client gets
// must be its command's, in order; no INCR may run twice; a write made
// directly on Redis during the fault must be seen through the proxy after
// the heal; and service must resume.
func TestFaults(t *testing.T) {
	faults := []struct {
		name    string
		timeout time.Duration
		inject  func(*faultnet.Bridge)
		// broken: the fault makes commands fail (else they must all succeed).
		broken bool
	}{
		{name: "latency", inject: func(b *faultnet.Bridge) { b.SetLatency(20*time.Millisecond, 30*time.Millisecond) }},
		{name: "slice", inject: func(b *faultnet.Bridge) { b.SliceWrites(7, 50*time.Microsecond) }},
		{name: "bandwidth", inject: func(b *faultnet.Bridge) { b.LimitRate(64 << 10) }},
		{name: "cut mid-reply", broken: true, inject: func(b *faultnet.Bridge) {
			for range 5 {
				b.CutAfter(13) // within a reply of the SET/GET/INCR pipeline
				time.Sleep(150 * time.Millisecond)
			}
		}},
		{name: "blackhole", timeout: 300 * time.Millisecond, broken: true, inject: func(b *faultnet.Bridge) { b.Blackhole() }},
		{name: "cut rst", broken: true, inject: func(b *faultnet.Bridge) { b.Cut(true) }},
		{name: "cut fin", broken: true, inject: func(b *faultnet.Bridge) { b.Cut(false) }},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			e := startFaultEnv(t, faultOptions{requestTimeout: f.timeout})
			ctx := context.Background()
			// A cached key that a direct write changes during the fault.
			proxy := e.client(0)
			if err := proxy.Set(ctx, "coherent", "before", 0).Err(); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if v, err := proxy.Get(ctx, "coherent").Result(); err != nil || v != "before" {
					t.Fatalf("GET coherent = %q, %v", v, err)
				}
			}
			const clients = 4
			stop := make(chan struct{})
			tallies := make([]*tally, clients)
			var wg sync.WaitGroup
			for i := range clients {
				c := redis.NewClient(&redis.Options{Addr: e.addr, MaxRetries: -1, ReadTimeout: 5 * time.Second})
				t.Cleanup(func() { c.Close() })
				wg.Add(1)
				go func() { defer wg.Done(); tallies[i] = pipeliner(ctx, c, i, stop) }()
			}
			time.Sleep(300 * time.Millisecond)
			f.inject(e.bridge)
			if err := e.direct.Set(ctx, "coherent", "during", 0).Err(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			e.bridge.Heal()
			healed := time.Now()
			// Service resumes: a fresh command through the proxy succeeds.
			var resumed, coherent time.Duration
			for {
				if err := proxy.Ping(ctx).Err(); err == nil {
					if err := proxy.Set(ctx, "probe", "x", 0).Err(); err == nil {
						resumed = time.Since(healed)
						break
					}
				}
				if time.Since(healed) > 5*time.Second {
					t.Fatal("no service 5s after heal")
				}
				time.Sleep(5 * time.Millisecond)
			}
			for {
				v, err := proxy.Get(ctx, "coherent").Result()
				if err == nil && v == "during" {
					coherent = time.Since(healed)
					break
				}
				if time.Since(healed) > 5*time.Second {
					t.Fatalf("GET coherent = %q, %v 5s after heal: stale", v, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			close(stop)
			wg.Wait()
			// Requests held by the bridge may still reach Redis after the
			// heal: let them land before counting.
			time.Sleep(200 * time.Millisecond)
			var rounds, failed int
			for i, tl := range tallies {
				for _, w := range tl.wrong {
					t.Errorf("client %d: %s", i, w)
				}
				n, err := e.direct.Get(ctx, fmt.Sprintf("c:%d", i)).Int64()
				if err != nil {
					t.Fatal(err)
				}
				if n < tl.acked || n > tl.acked+tl.unknown {
					t.Errorf("client %d: counter %d, acknowledged %d, unknown %d", i, n, tl.acked, tl.unknown)
				}
				rounds += tl.rounds
				failed += tl.failed
			}
			if !f.broken && failed > 0 {
				t.Errorf("%d of %d pipelines failed under %s", failed, rounds, f.name)
			}
			if rounds < clients*5 {
				t.Errorf("only %d pipelines in all", rounds)
			}
			t.Logf("%s: %d pipelines, %d failed; served again %v after heal, coherent after %v; stale served %v",
				f.name, rounds, failed, resumed.Round(time.Millisecond), coherent.Round(time.Millisecond),
				e.counter("cacheproxy_l1_stale_served_total", nil))
		})
	}
}

// TestMGetFollowerOfFailedFetch: an MGET whose key another client's MGET was
// fetching, when that fetch fails, gets the error as its whole reply, never
// inside its array (found by the soak: Redis never answers MGET so).
func TestMGetFollowerOfFailedFetch(t *testing.T) {
	t.Parallel()
	e := startFaultEnv(t, faultOptions{})
	misses := e.counter("cacheproxy_l1_misses_total", nil)
	e.bridge.Blackhole() // the leader's MGET waits upstream
	leader, follower := dialRaw(t, e.addr), dialRaw(t, e.addr)
	if _, err := leader.c.Write([]byte("MGET mf:1 mf:2\r\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the leader's misses", func() bool {
		return e.counter("cacheproxy_l1_misses_total", nil) >= misses+2
	})
	if _, err := follower.c.Write([]byte("MGET mf:1\r\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the follower's miss", func() bool {
		return e.counter("cacheproxy_l1_misses_total", nil) >= misses+3
	})
	e.bridge.Cut(true) // the leader's fetch fails
	got, fol := leader.roundTrip("", 1), follower.roundTrip("", 1)
	if !strings.HasPrefix(got, "-ERR cacheproxy: upstream unavailable") {
		t.Fatalf("the leader got %q", got)
	}
	if fol != got {
		t.Fatalf("the follower got %q, want the leader's error %q", fol, got)
	}
}
