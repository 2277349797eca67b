package l1

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestFillGuard forces each interleaving of a fill with a write or flush.
func TestFillGuard(t *testing.T) {
	t.Parallel()
	k, a, b := []byte("k"), []byte("a"), []byte("b")

	overtakers := map[string]func(c *Cache){
		"invalidate": func(c *Cache) { c.Invalidate(0, k) },
		"flushdb":    func(c *Cache) { c.FlushDB(0) },
		"flushall":   func(c *Cache) { c.FlushAll() },
		"suspend":    func(c *Cache) { c.Suspend() },
		"suspend and resume": func(c *Cache) {
			c.Suspend()
			c.Resume()
		},
	}
	for name, overtake := range overtakers {
		t.Run(name+" between Begin and Complete", func(t *testing.T) {
			t.Parallel()
			c, _ := newCache(t, 8<<20)
			f, _ := c.Begin(0, k, a)
			overtake(c)
			if c.Complete(f, []byte("v1"), hour, true) {
				t.Fatal("Complete stored a reply read before the write")
			}
			c.Wait()
			wantMiss(t, c, 0, "k", "a")
			if s := c.Stats(); s.DroppedStale != 1 || s.Stored != 0 {
				t.Fatalf("Stats = %+v; want 1 dropped stale, 0 stored", s)
			}
		})

		t.Run(name+" does not let a later Begin join", func(t *testing.T) {
			t.Parallel()
			c, _ := newCache(t, 8<<20)
			old, _ := c.Begin(0, k, a)
			overtake(c)
			c.Resume() // for the suspend case: the new fill must be able to store
			f, leader := c.Begin(0, k, a)
			if !leader || f == old {
				t.Fatal("Begin after the write joined a read sent before it")
			}
			if !c.Complete(f, []byte("v2"), hour, true) {
				t.Fatal("the new fill did not store")
			}
			if c.Complete(old, []byte("v1"), hour, true) {
				t.Fatal("the old fill stored")
			}
			wantHit(t, c, 0, "k", "a", "v2")
		})
	}

	t.Run("flushdb of another db lets the fill store", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		f, _ := c.Begin(1, k, a)
		c.FlushDB(0)
		if !c.Complete(f, []byte("v"), hour, true) {
			t.Fatal("FlushDB(0) spoiled a fill of db 1")
		}
		wantHit(t, c, 1, "k", "a", "v")
	})

	t.Run("follower joined before invalidate gets the reply", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		f, _ := c.Begin(0, k, a)
		g, leader := c.Begin(0, k, a)
		if leader || g != f {
			t.Fatal("second Begin did not join")
		}
		c.Invalidate(0, k)
		got := make(chan []byte)
		go func() { got <- g.Wait() }()
		c.Complete(f, []byte("v1"), hour, true)
		if r := string(<-got); r != "v1" {
			t.Fatalf("follower got %q", r)
		}
		wantMiss(t, c, 0, "k", "a")
	})

	t.Run("complete after invalidate does not resurrect the entry", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		fill(t, c, 0, "k", "a", "a1", hour)
		f, _ := c.Begin(0, k, b)
		c.Invalidate(0, k)
		if c.Complete(f, []byte("b1"), hour, true) {
			t.Fatal("Complete stored after Invalidate")
		}
		c.Wait()
		wantMiss(t, c, 0, "k", "a")
		wantMiss(t, c, 0, "k", "b")
	})

	t.Run("complete before invalidate is removed by it", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		f, _ := c.Begin(0, k, a)
		c.Complete(f, []byte("v1"), hour, true)
		c.Invalidate(0, k)
		wantMiss(t, c, 0, "k", "a")
		c.Wait()
		wantMiss(t, c, 0, "k", "a")
	})
}

// TestInvalidateWhileRistrettoAddsEntry holds ristretto's goroutine between
// adding a new entry and applying the delete an Invalidate queued behind it, the
// moment where the entry is in ristretto's store although its key was
// invalidated before. Get must not return it.
func TestInvalidateWhileRistrettoAddsEntry(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, 8<<20)
	kh := c.hash(0, []byte("k"))
	reached := make(chan string, 2)
	gates := map[string]chan struct{}{"k": make(chan struct{}), "x": make(chan struct{})}
	var opened sync.Map
	open := func(key string) {
		if _, done := opened.LoadOrStore(key, true); !done {
			close(gates[key])
		}
	}
	c.costHook = func(e *entry) {
		key := string(e.buf[:e.keyLen])
		if gate, ok := gates[key]; ok {
			reached <- key
			<-gate
		}
	}
	defer func() { // a failure must not leave ristretto stuck in the hook
		open("k")
		open("x")
	}()
	// Ristretto takes k's new entry and stops just before admitting it.
	f, _ := c.Begin(0, []byte("k"), []byte("a"))
	c.Complete(f, []byte("v1"), hour, true)
	if got := <-reached; got != "k" {
		t.Fatalf("ristretto reached %q first", got)
	}
	// x's entry queues behind k's, so that ristretto stops again after adding k.
	xf, _ := c.Begin(0, []byte("x"), []byte("a"))
	c.Complete(xf, []byte("x1"), hour, true)
	// Ristretto has asked for k's cost but not added it: a sweep must keep it.
	s := &c.shards[kh>>56]
	s.mu.Lock()
	c.sweep(s)
	s.mu.Unlock()
	// The write: its delete is queued behind both entries.
	c.Invalidate(0, []byte("k"))
	open("k")
	if got := <-reached; got != "x" {
		t.Fatalf("ristretto reached %q second", got)
	}
	if e, _ := c.rc.Get(kh); e == nil {
		t.Fatal("k's entry is not in ristretto's store: the test missed the window")
	}
	wantMiss(t, c, 0, "k", "a")
	open("x")
	c.Wait()
	wantMiss(t, c, 0, "k", "a")
	wantHit(t, c, 0, "x", "a", "x1")
}

// TestStressNoStaleRead runs readers through Get, Begin, Resolve, Store and
// Wait against writers that bump a key's version upstream and then Invalidate
// it (or flush its db, or everything). A reader notes, before it starts, the
// newest version whose invalidation has returned; it must never be answered
// with an older one, whether from an entry, a fill in flight or a resolved one.
// Leaders yield between their upstream read and Resolve, and between Resolve
// and Store, to open both windows wide. Rounds repeat, a bounded number of
// times, until the run has seen fills both stored and spoiled.
func TestStressNoStaleRead(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, 8<<20)
	type key struct {
		db   int
		name []byte
		// version is the upstream value; floor the newest version whose
		// invalidation has returned.
		version, floor atomic.Int64
	}
	var keys []*key
	for db := range 2 {
		for _, name := range []string{"a", "b", "c"} {
			keys = append(keys, &key{db: db, name: []byte(name)})
		}
	}
	variants := [][]byte{[]byte("GET"), []byte("STRLEN")}
	raise := func(k *key, v int64) {
		for {
			old := k.floor.Load()
			if old >= v || k.floor.CompareAndSwap(old, v) {
				return
			}
		}
	}
	var failures atomic.Int64
	check := func(k *key, variant, reply []byte, floor int64, how string) {
		want := fmt.Sprintf("%d|%s|%s|", k.db, k.name, variant)
		rest, ok := strings.CutPrefix(string(reply), want)
		v, err := strconv.ParseInt(rest, 10, 64)
		if !ok || err != nil || v < floor {
			if failures.Add(1) <= 5 {
				t.Errorf("%s of %d/%s/%s = %q; want version >= %d", how, k.db, k.name, variant, reply, floor)
			}
		}
	}

	round := func(seed uint64) {
		var wg sync.WaitGroup
		for r := range 6 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(r), seed))
				for range 3000 {
					k := keys[rng.IntN(len(keys))]
					variant := variants[rng.IntN(len(variants))]
					floor := k.floor.Load()
					if reply, ok := c.Get(k.db, k.name, variant); ok {
						check(k, variant, reply, floor, "Get")
						continue
					}
					f, leader := c.Begin(k.db, k.name, variant)
					if !leader {
						check(k, variant, f.Wait(), floor, "Wait")
						continue
					}
					reply := fmt.Appendf(nil, "%d|%s|%s|%d", k.db, k.name, variant, k.version.Load())
					if rng.IntN(2) == 0 {
						runtime.Gosched()
					}
					c.Resolve(f, reply, hour, true)
					if rng.IntN(2) == 0 {
						runtime.Gosched()
					}
					c.Store(f)
				}
			})
		}
		for w := range 2 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), seed+1000))
				for range 1500 {
					switch n := rng.IntN(100); {
					case n < 90:
						k := keys[rng.IntN(len(keys))]
						v := k.version.Add(1)
						c.Invalidate(k.db, k.name)
						raise(k, v)
					case n < 98:
						db := rng.IntN(2)
						bumped := map[*key]int64{}
						for _, k := range keys {
							if k.db == db {
								bumped[k] = k.version.Add(1)
							}
						}
						c.FlushDB(db)
						for k, v := range bumped {
							raise(k, v)
						}
					default:
						bumped := map[*key]int64{}
						for _, k := range keys {
							bumped[k] = k.version.Add(1)
						}
						c.FlushAll()
						for k, v := range bumped {
							raise(k, v)
						}
					}
					runtime.Gosched()
				}
			})
		}
		wg.Wait()
	}
	var s Stats
	for seed := range uint64(20) {
		round(seed)
		if s = c.Stats(); s.Stored > 0 && s.DroppedStale > 0 {
			break
		}
	}
	t.Logf("stats: %+v", s)
	if s.Stored == 0 || s.DroppedStale == 0 {
		t.Fatalf("20 rounds exercised too little: %+v", s)
	}
}
