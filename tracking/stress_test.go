package tracking

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// modelClient is a caching client as the proxy should serve it: it caches a
// value it read if the read was tracked, drops what an invalidation names,
// and an invalidation arriving while a read is in flight waits for that read's
// reply (the caller's rule in the package doc).
type modelClient struct {
	mu       sync.Mutex
	inflight bool
	pending  []string // invalidated keys held back by the read in flight; "" for all
	all      bool     // a null invalidation is held back
	cached   map[string]int64
	received int
}

func (c *modelClient) deliver(key string, all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.received++
	if c.inflight {
		c.pending = append(c.pending, key)
		c.all = c.all || all
		return
	}
	c.drop(key, all)
}

func (c *modelClient) drop(key string, all bool) {
	if all {
		clear(c.cached)
	} else {
		delete(c.cached, key)
	}
}

func (c *modelClient) begin() {
	c.mu.Lock()
	c.inflight = true
	c.mu.Unlock()
}

// reply ends the read of key: v is what the read returns, as it would be read
// upstream after the read was remembered.
func (c *modelClient) reply(key string, v *atomic.Int64, keep bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if keep {
		c.cached[key] = v.Load()
	}
	c.inflight = false
	for _, k := range c.pending {
		c.drop(k, false)
	}
	if c.all {
		clear(c.cached)
	}
	c.pending, c.all = c.pending[:0], false
}

// model is the Sink: every id, a client's own or its redirect target, leads
// to one modelClient.
type model struct {
	byTarget map[int64]*modelClient
	broken   atomic.Int64
}

func (m *model) Invalidate(target int64, key []byte) bool {
	m.byTarget[target].deliver(string(key), false)
	return true
}

func (m *model) InvalidateAll(target int64) bool {
	m.byTarget[target].deliver("", true)
	return true
}

func (m *model) RedirectBroken(int64, int64) { m.broken.Add(1) }

// TestConcurrentNoStaleCache runs tracking clients of every kind (default,
// redirected, OPTIN with and without CACHING yes, BCAST with and without a
// prefix) that read, write, and turn tracking off and on, against a keyspace
// stream writing and a flusher, with a table small enough to evict. Whatever
// the interleaving, once all have stopped every value a client still caches
// must be the key's current one: a client that remembered a key and then saw
// it change was invalidated.
func TestConcurrentNoStaleCache(t *testing.T) {
	const (
		nclients = 36
		nkeys    = 128
		rounds   = 1500
		maxKeys  = nkeys * 7 / 8 // evicts, rarely enough for hot keys to gather readers
	)
	var versions [nkeys]atomic.Int64
	key := func(i int) string { return fmt.Sprint("k", i) }
	modes := []string{"on", "on REDIRECT $r", "on OPTIN", "on BCAST PREFIX k1", "on BCAST", "on NOLOOP"}

	m := &model{byTarget: map[int64]*modelClient{}}
	tbl, err := New(Config{Sink: m, MaxKeys: maxKeys})
	if err != nil {
		t.Fatal(err)
	}
	clients := make([]*modelClient, nclients)
	// enable and its callers use t.Error: t.Fatal must not leave a goroutine
	// other than the test's.
	enable := func(id int64) {
		line := strings.ReplaceAll(modes[id%int64(len(modes))], "$r", fmt.Sprint(1000+id))
		if err := tbl.Tracking(id, keys(strings.Fields(line)...), anyID); err != nil {
			t.Errorf("client %d: CLIENT TRACKING %s: %v", id, line, err)
		}
	}
	for i := range clients {
		id := int64(i + 1)
		clients[i] = &modelClient{cached: map[string]int64{}}
		m.byTarget[id] = clients[i]
		m.byTarget[1000+id] = clients[i]
		enable(id)
	}

	var wg sync.WaitGroup
	for i, c := range clients {
		id := int64(i + 1)
		mode := modes[id%int64(len(modes))]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(id), 1))
			for r := range rounds {
				k := rng.IntN(nkeys)
				if id == 1 && r%(rounds/3) == rounds/6 {
					// FLUSHALL, twice in the run: a flush clears every
					// cache, so more would hide missed invalidations.
					for k := range versions {
						versions[k].Add(1)
					}
					tbl.FlushAll()
				}
				switch op := rng.IntN(1000); {
				case op < 940:
					if rng.IntN(2) == 0 {
						// A few hot keys, read by more clients than a
						// reader list holds, and written no more often.
						k %= 4
					}
					c.mu.Lock()
					_, hit := c.cached[key(k)]
					c.mu.Unlock()
					if hit {
						// Served from the client's cache: a stale copy stays
						// until an invalidation removes it.
						continue
					}
					if strings.Contains(mode, "OPTIN") && r%2 == 0 {
						if err := tbl.Caching(id, keys("yes")); err != nil {
							t.Error(err)
							return
						}
						tbl.CommandDone(id, true)
					}
					c.begin()
					tracked := tbl.ShouldTrack(id)
					tbl.Remember(id, keys(key(k)))
					tbl.CommandDone(id, false)
					if strings.Contains(mode, "BCAST") {
						tracked = strings.HasPrefix(key(k), bcastPrefix(mode))
					}
					c.reply(key(k), &versions[k], tracked)
				case op < 997:
					if strings.Contains(mode, "NOLOOP") {
						// It is not told of its own writes: it drops its copy.
						c.mu.Lock()
						delete(c.cached, key(k))
						c.mu.Unlock()
					}
					versions[k].Add(1)
					tbl.Invalidate([]byte(key(k)), id)
				default:
					c.mu.Lock()
					if err := tbl.Tracking(id, keys("off"), anyID); err != nil {
						t.Error(err)
					}
					clear(c.cached)
					enable(id)
					c.mu.Unlock()
				}
			}
		})
	}
	wg.Go(func() { // the keyspace stream
		for i := range rounds {
			k := i * 7 % nkeys
			versions[k].Add(1)
			tbl.Invalidate([]byte(key(k)), 0)
		}
	})
	wg.Wait()

	received := 0
	for i, c := range clients {
		received += c.received
		for k, v := range c.cached {
			var n int
			fmt.Sscanf(k, "k%d", &n)
			if now := versions[n].Load(); v != now {
				t.Errorf("client %d caches %s at version %d, now %d: an invalidation was missed", i+1, k, v, now)
			}
		}
	}
	if received == 0 {
		t.Fatal("no invalidation delivered")
	}
	if n := m.broken.Load(); n != 0 {
		t.Fatalf("%d broken redirects, none expected", n)
	}
	if n := tbl.Stats().Keys; n > maxKeys {
		t.Fatalf("%d keys, max %d", n, maxKeys)
	}
}

func bcastPrefix(mode string) string {
	_, p, _ := strings.Cut(mode, "PREFIX ")
	return p
}
