package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/invalidation"
)

// TestCoherenceUnderChaos runs, for a bounded time and under each mode,
// readers through the proxy on Zipf-popular keys, writers through the proxy
// and directly on Redis, and kills of the proxy's subscription at random
// moments. A prober writes keys of its own directly and measures, through the
// proxy, how long the old value stays visible after Redis acknowledged the
// new one. At the end every key read through the proxy equals Redis.
func TestCoherenceUnderChaos(t *testing.T) {
	t.Parallel()
	for _, mode := range coherenceModes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			runChaos(t, mode, 2*time.Second)
		})
	}
}

func runChaos(t *testing.T, mode invalidation.Mode, d time.Duration) {
	e := startEnv(t, envOptions{mode: mode, canaryInterval: 50 * time.Millisecond, pollInterval: 50 * time.Millisecond})
	e.waitSubscribed()
	const shared, probed = 200, 8
	sharedKey := func(i uint64) string { return fmt.Sprintf("z:%d", i) }
	probeKey := func(i int) string { return fmt.Sprintf("p:%d", i) }
	ownKey := func(i int) string { return fmt.Sprintf("w:%d", i) }

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
		cancel()
	}
	zipf := func(seed uint64) func() uint64 {
		return rand.NewZipf(rand.New(rand.NewPCG(seed, 7)), 1.1, 1, shared-1).Uint64
	}

	// Readers: single keys, MGETs and the probed keys, which keeps those cached.
	for r := range 3 {
		c := e.client(0)
		wg.Go(func() {
			next := zipf(uint64(r))
			rnd := rand.New(rand.NewPCG(uint64(r), 1))
			for ctx.Err() == nil {
				switch rnd.IntN(4) {
				case 0:
					c.MGet(ctx, sharedKey(next()), sharedKey(next()), probeKey(rnd.IntN(probed)))
				case 1:
					c.Get(ctx, probeKey(rnd.IntN(probed)))
				default:
					c.Get(ctx, sharedKey(next()))
				}
			}
		})
	}
	// Writers: through the proxy and directly, on the shared keys.
	for w := range 2 {
		c := e.client(0)
		if w == 1 {
			c = e.redis.Client(0)
		}
		wg.Go(func() {
			next := zipf(uint64(100 + w))
			for n := 0; ctx.Err() == nil; n++ {
				k := sharedKey(next())
				if n%5 == 4 {
					c.Del(ctx, k)
				} else {
					c.Set(ctx, k, fmt.Sprintf("%d-%d", w, n), 0)
				}
			}
		})
	}
	// Read your writes through the proxy, on keys only this writer touches.
	wg.Go(func() {
		c := e.client(0)
		for n := 0; ctx.Err() == nil; n++ {
			k, v := ownKey(n%16), fmt.Sprint(n)
			if err := c.Set(ctx, k, v, 0).Err(); err != nil {
				continue // cancelled, or the proxy's upstream was cut
			}
			if got, err := c.Get(ctx, k).Result(); err == nil && got != v {
				fail(fmt.Errorf("wrote %s=%s through the proxy, then read %q", k, v, got))
				return
			}
		}
	})
	// Subscription kills at random moments.
	kills := 0
	wg.Go(func() {
		rnd := rand.New(rand.NewPCG(42, 42))
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(100+rnd.IntN(300)) * time.Millisecond):
			}
			if e.direct.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Val() > 0 {
				kills++
			}
		}
	})
	// The prober: a direct write, then reads through the proxy until the new
	// value shows. (Until the write's notification arrives, a fill that read
	// the old value may still be stored after a read saw the new one: the
	// staleness measured is up to the first read of the new value.)
	var stale []time.Duration
	wg.Go(func() {
		c := e.client(0)
		rnd := rand.New(rand.NewPCG(9, 9))
		for n := 0; ctx.Err() == nil; n++ {
			k, v := probeKey(rnd.IntN(probed)), fmt.Sprint(n)
			c.Get(ctx, k) // make sure it is cached
			if err := e.direct.Set(context.Background(), k, v, 0).Err(); err != nil {
				fail(err)
				return
			}
			acked := time.Now()
			for {
				got, err := c.Get(context.Background(), k).Result()
				if err == nil && got == v {
					break
				}
				if time.Since(acked) > 2*time.Second {
					fail(fmt.Errorf("%s: the proxy still answers %q, %v 2s after %q was acknowledged", k, got, err, v))
					return
				}
			}
			stale = append(stale, time.Since(acked))
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	// Every key through the proxy equals Redis once the writers stopped.
	c := e.client(0)
	keys := []string{}
	for i := range shared {
		keys = append(keys, sharedKey(uint64(i)))
	}
	for i := range probed {
		keys = append(keys, probeKey(i))
	}
	for i := range 16 {
		keys = append(keys, ownKey(i))
	}
	for _, k := range keys {
		eventually(t, 2*time.Second, "key "+k+" through the proxy matches Redis", func() bool {
			want, wantErr := e.direct.Get(bg, k).Result()
			got, err := c.Get(bg, k).Result()
			mget, merr := c.MGet(bg, k).Result()
			return got == want && fmt.Sprint(err) == fmt.Sprint(wantErr) && merr == nil &&
				(mget[0] == nil) == (wantErr == redis.Nil) && (mget[0] == nil || mget[0] == want)
		})
	}

	if len(stale) == 0 {
		t.Fatal("the prober measured nothing")
	}
	slices.Sort(stale)
	pct := func(p float64) time.Duration { return stale[int(p*float64(len(stale)-1))] }
	st := e.sub.State()
	t.Logf("%d probes: staleness after an acknowledged direct write p50 %v, p99 %v, max %v; "+
		"%d subscription kills, %d reconnects, hits %v, misses %v, canary lag %v",
		len(stale), pct(0.5), pct(0.99), stale[len(stale)-1], kills, st.Reconnects,
		e.counter("cacheproxy_l1_hits_total", nil), e.counter("cacheproxy_l1_misses_total", nil), st.Lag)
}
