package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// coherenceWait bounds how long a write may take to reach another proxy's
// L1: milliseconds normally, seconds on a loaded machine.
const coherenceWait = 15 * time.Second

// manyProxies is the "many proxies in front of one dataset" scenario: three
// proxies on upstream, caching every key for a minute, so that only their
// invalidation streams can keep them coherent, with writers and readers on
// each and no traffic between them.
//
// Each writer owns a key: it writes a new value through its proxy, then reads
// the key through each of the two others, which hold the previous value in
// their L1 from the last round, until they return the new one. Other writers
// overwrite shared keys through every proxy while readers keep them cached.
// In the end every proxy returns, for every shared key, what direct (a client
// of the dataset itself) reads.
func manyProxies(t *testing.T, upstream, prefix string, direct redis.Cmdable) {
	const (
		proxies = 3
		writers = 2 // per proxy, for the owned keys and for the shared ones
		rounds  = 60
		shared  = 20
	)
	var procs []*proc
	var clients []*redis.Client
	for range proxies {
		p := startProcOn(t, upstream, "policies:\n  - {prefix: \"\", ttl: 1m}\nshutdown_grace: 0s\n")
		procs = append(procs, p)
		c := redis.NewClient(&redis.Options{Addr: p.listen, MaxRetries: -1, PoolSize: 8})
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
	}
	sharedKey := func(i int) string { return fmt.Sprintf("%sshared:%d", prefix, i) }

	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	var writersWG sync.WaitGroup
	for p := range proxies {
		for w := range writers {
			// An owned key, checked on the other proxies after each write.
			writersWG.Go(func() {
				key := fmt.Sprintf("%sown:%d:%d", prefix, p, w)
				for n := 1; n <= rounds; n++ {
					if err := clients[p].Set(bg, key, n, 0).Err(); err != nil {
						report(fmt.Errorf("SET %s through proxy %d: %w", key, p, err))
						return
					}
					for q := range proxies {
						if q == p {
							continue
						}
						if err := waitValue(clients[q], key, strconv.Itoa(n)); err != nil {
							report(fmt.Errorf("proxy %d after proxy %d wrote: %w", q, p, err))
							return
						}
					}
				}
			})
			// Shared keys, written through every proxy.
			writersWG.Go(func() {
				for n := range rounds * 4 {
					key := sharedKey(rand.IntN(shared))
					if err := clients[p].Set(bg, key, fmt.Sprintf("p%d-w%d-%d", p, w, n), 0).Err(); err != nil {
						report(fmt.Errorf("SET %s through proxy %d: %w", key, p, err))
						return
					}
				}
			})
		}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				key := sharedKey(rand.IntN(shared))
				if err := clients[p].Get(bg, key).Err(); err != nil && err != redis.Nil {
					report(fmt.Errorf("GET %s through proxy %d: %w", key, p, err))
					return
				}
			}
		})
	}
	writersWG.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for i := range shared {
		key := sharedKey(i)
		want, err := direct.Get(bg, key).Result()
		if err != nil {
			t.Fatalf("GET %s from the dataset: %v", key, err)
		}
		for q, c := range clients {
			if err := waitValue(c, key, want); err != nil {
				t.Errorf("proxy %d: %v", q, err)
			}
		}
	}
	for q, p := range procs {
		if hits := metricSum(scrape(t, p.metrics), "cacheproxy_l1_hits_total"); hits == 0 {
			t.Errorf("proxy %d served no L1 hit: the test proved nothing about its stream", q)
		}
	}
}

// waitValue reads key through c until it returns want, for up to
// coherenceWait.
func waitValue(c *redis.Client, key, want string) error {
	deadline := time.Now().Add(coherenceWait)
	for {
		got, err := c.Get(bg, key).Result()
		if err == nil && got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET %s = %q (%v); want %q, not within %v", key, got, err, want, coherenceWait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// metricSum adds up every sample of the metric name in a scrape.
func metricSum(scrape, name string) float64 {
	var sum float64
	for line := range strings.SplitSeq(scrape, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) > 0 {
			v, _ := strconv.ParseFloat(f[0], 64)
			sum += v
		}
	}
	return sum
}

func TestManyProxiesOneRedis(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	manyProxies(t, r.URL(0), "mp:", r.Client(0))
}
