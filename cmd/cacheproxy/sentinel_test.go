package main

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// TestSentinelFailoverUnderLoad runs the proxy on a redis-sentinel:// URL
// (a master, one replica, one sentinel), checks that it serves and caches,
// then forces SENTINEL FAILOVER while writers INCR counters and readers GET
// cached keys through it.
//
// What it asserts: every reply is the reply of its own command (an INCR's
// is an integer above the counter's previous acknowledged value unless the
// counter went back, a GET of a fixed key returns that key's value); after
// the failover each counter on the new master is at least the last value
// acknowledged before SENTINEL FAILOVER was sent; and reads through the
// proxy come to match the new master. Writes acknowledged by the old master
// during the failover itself, after the replica's promotion and before the
// sentinel demoted the old master, are lost as they would be for any client
// of Sentinel: the test counts them and logs the number.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	primary := redistest.Start(t, redistest.Options{})
	replica := redistest.Start(t, redistest.Options{ReplicaOf: primary.Addr()})
	sent := redistest.StartSentinel(t, primary, redistest.SentinelOptions{})

	p := startProcOn(t, "redis-sentinel://"+sent.Addr()+"/mymaster/0",
		"policies:\n  - prefix: \"\"\n    ttl: 30s\nshutdown_grace: 0s\n")
	listen, metrics, logs := p.listen, p.metrics, p.logs

	c := redis.NewClient(&redis.Options{Addr: listen, MaxRetries: -1, PoolSize: 16})
	defer c.Close()
	// (1) serves reads and writes, and caches.
	const readers, writers = 3, 4
	for i := range readers {
		if err := c.Set(bg, fmt.Sprintf("fixed:%d", i), fmt.Sprintf("value-%d", i), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if !cached(t, primary, c, "fixed:0") {
		t.Fatal("GET fixed:0 through the proxy never came from the L1")
	}

	// (2) failover under load.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var wrong atomic.Int64 // replies that are not their command's
	var failed atomic.Int64
	var wentBack atomic.Int64 // acknowledged increments the counters lost
	lastAck := make([]atomic.Int64, writers)
	var ackedBefore []int64 // last acknowledged before SENTINEL FAILOVER was sent
	for w := range writers {
		wg.Go(func() {
			key := fmt.Sprintf("ctr:%d", w)
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := c.Incr(bg, key).Result()
				if err != nil {
					failed.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				if prev := lastAck[w].Load(); n <= prev {
					wentBack.Add(prev - n + 1)
				}
				lastAck[w].Store(n)
			}
		})
	}
	for r := range readers {
		wg.Go(func() {
			key, want := fmt.Sprintf("fixed:%d", r), fmt.Sprintf("value-%d", r)
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := c.Get(bg, key).Result()
				if err != nil {
					failed.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				if got != want {
					wrong.Add(1)
					t.Errorf("GET %s = %q; want %q", key, got, want)
				}
				// A counter's GET must be a number.
				v, err := c.Get(bg, fmt.Sprintf("ctr:%d", r%writers)).Result()
				if err == nil {
					if _, perr := strconv.Atoi(v); perr != nil {
						wrong.Add(1)
						t.Errorf("GET ctr = %q, not a number", v)
					}
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	redistest.WaitReplicas(t, sent, "mymaster", 1)
	for w := range writers {
		ackedBefore = append(ackedBefore, lastAck[w].Load())
	}
	start := time.Now()
	redistest.Failover(t, sent, "mymaster")
	// Serving the new master: a write through the proxy lands on the
	// replica as a master (its role says so, and the value is there).
	newMaster := replica.Client(0)
	var switched time.Duration
	for i := 0; ; i++ {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the proxy did not reach the new master within 30s")
		}
		role, _ := newMaster.Do(bg, "ROLE").Slice()
		if len(role) > 0 && role[0] == "master" {
			probe := fmt.Sprintf("probe-%d", i)
			if c.Set(bg, "probe", probe, 0).Err() == nil {
				if v, _ := newMaster.Get(bg, "probe").Result(); v == probe {
					// Not relayed there by the old master still replicating.
					if old, _ := primary.Client(0).Get(bg, "probe").Result(); old != probe {
						switched = time.Since(start)
						break
					}
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the proxy served the new master %v after SENTINEL FAILOVER was sent", switched.Round(time.Millisecond))
	time.Sleep(time.Second) // load continues on the new master
	close(stop)
	wg.Wait()

	for w := range writers {
		key := fmt.Sprintf("ctr:%d", w)
		got, err := newMaster.Get(bg, key).Int64()
		if err != nil {
			t.Fatalf("GET %s on the new master: %v", key, err)
		}
		if got < ackedBefore[w] {
			t.Errorf("%s is %d on the new master; %d was acknowledged before the failover", key, got, ackedBefore[w])
		}
		// No stale read once settled: the proxy matches the new master.
		waitFor(t, 5*time.Second, "GET "+key+" through the proxy matches the new master", logs, func() bool {
			v, err := c.Get(bg, key).Int64()
			return err == nil && v == got
		})
	}
	if wrong.Load() > 0 {
		t.Errorf("%d replies belonged to another command", wrong.Load())
	}
	t.Logf("requests failed during the failover: %d; acknowledged increments lost (the counter went back): %d", failed.Load(), wentBack.Load())
	if !cached(t, replica, c, "fixed:1") {
		t.Error("no caching on the new master")
	}
	if s := scrape(t, metrics); !containsLine(s, "cacheproxy_upstream_failovers_total 1") {
		t.Errorf("failover counter not 1:\n%s", s)
	}
}

func containsLine(s, line string) bool {
	for l := range splitLines(s) {
		if l == line {
			return true
		}
	}
	return false
}

func splitLines(s string) map[string]bool {
	m := map[string]bool{}
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			m[s[start:i]] = true
			start = i + 1
		}
	}
	return m
}
