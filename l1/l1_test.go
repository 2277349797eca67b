package l1

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newCache returns a cache of maxBytes closed at the end of the test. The clock
// starts at 0 and moves only through the returned pointer.
func newCache(t testing.TB, maxBytes int64) (*Cache, *atomic.Int64) {
	t.Helper()
	c, err := New(Config{MaxBytes: maxBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	clock := new(atomic.Int64)
	c.now = clock.Load
	return c, clock
}

// fill runs a whole miss, Begin as leader and Complete storing reply, waits for
// ristretto to apply it, and returns what Complete returned.
func fill(t testing.TB, c *Cache, db int, key, variant, reply string, ttl time.Duration) bool {
	t.Helper()
	f, leader := c.Begin(db, []byte(key), []byte(variant))
	if !leader {
		t.Fatalf("Begin(%d, %q, %q): joined a fill in flight, want a new one", db, key, variant)
	}
	stored := c.Complete(f, []byte(reply), ttl, true)
	c.Wait()
	return stored
}

func get(c *Cache, db int, key, variant string) (string, bool) {
	r, ok := c.Get(db, []byte(key), []byte(variant))
	return string(r), ok
}

// wantHit waits for ristretto to apply what it was handed, then reads.
func wantHit(t *testing.T, c *Cache, db int, key, variant, want string) {
	t.Helper()
	c.Wait()
	if got, ok := get(c, db, key, variant); !ok || got != want {
		t.Fatalf("Get(%d, %q, %q) = %q, %v; want %q, true", db, key, variant, got, ok, want)
	}
}

// wantMiss reads at once: an entry ristretto has yet to apply must not show.
func wantMiss(t *testing.T, c *Cache, db int, key, variant string) {
	t.Helper()
	if got, ok := get(c, db, key, variant); ok {
		t.Fatalf("Get(%d, %q, %q) = %q, true; want a miss", db, key, variant, got)
	}
}

func TestNewValidatesMaxBytes(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, -1, minMaxBytes - 1} {
		_, err := New(Config{MaxBytes: n})
		if err == nil || !strings.Contains(err.Error(), "at least 1048576") {
			t.Errorf("New(MaxBytes: %d) error = %v; want one asking for at least 1048576", n, err)
		}
	}
	c, err := New(Config{MaxBytes: minMaxBytes})
	if err != nil {
		t.Fatalf("New(MaxBytes: minMaxBytes): %v", err)
	}
	c.Close()
}

const hour = time.Hour

func TestContract(t *testing.T) {
	t.Parallel()

	t.Run("store and get", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		if !fill(t, c, 0, "k", "GET", "$1\r\nv\r\n", hour) {
			t.Fatal("Complete did not store")
		}
		wantHit(t, c, 0, "k", "GET", "$1\r\nv\r\n")
		wantMiss(t, c, 0, "k", "STRLEN")
		wantMiss(t, c, 0, "k2", "GET")
		wantMiss(t, c, 1, "k", "GET")
	})

	t.Run("variants share an entry", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		fill(t, c, 0, "h", "HGET a", "a1", hour)
		fill(t, c, 0, "h", "HGET b", "b1", hour)
		wantHit(t, c, 0, "h", "HGET a", "a1")
		wantHit(t, c, 0, "h", "HGET b", "b1")
		fill(t, c, 0, "h", "HGET a", "a2", hour)
		wantHit(t, c, 0, "h", "HGET a", "a2")
		wantHit(t, c, 0, "h", "HGET b", "b1")
		c.Wait()
		if n := c.Stats().Entries; n != 1 {
			t.Fatalf("Entries = %d; want 1 for one key", n)
		}
	})

	t.Run("variants beyond the bound drop the oldest", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		for i := range maxVariants + 1 {
			fill(t, c, 0, "h", string(rune('A'+i)), "r", hour)
		}
		wantMiss(t, c, 0, "h", "A")
		wantHit(t, c, 0, "h", "B", "r")
		wantHit(t, c, 0, "h", string(rune('A'+maxVariants)), "r")
	})

	t.Run("invalidate drops every variant of the key only", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		fill(t, c, 0, "k", "a", "1", hour)
		fill(t, c, 0, "k", "b", "2", hour)
		fill(t, c, 0, "other", "a", "3", hour)
		fill(t, c, 1, "k", "a", "4", hour)
		c.Invalidate(0, []byte("k"))
		wantMiss(t, c, 0, "k", "a")
		wantMiss(t, c, 0, "k", "b")
		wantHit(t, c, 0, "other", "a", "3")
		wantHit(t, c, 1, "k", "a", "4")
		// A new variant's entry merges the live variants of the one
		// ristretto holds: Invalidate must have left it nothing to merge.
		fill(t, c, 0, "k", "b", "6", hour)
		wantMiss(t, c, 0, "k", "a")
		wantHit(t, c, 0, "k", "b", "6")
		fill(t, c, 0, "k", "a", "5", hour)
		wantHit(t, c, 0, "k", "a", "5")
	})

	t.Run("flushdb leaves other dbs", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		fill(t, c, 0, "k", "a", "db0", hour)
		fill(t, c, 1, "k", "a", "db1", hour)
		c.FlushDB(0)
		wantMiss(t, c, 0, "k", "a")
		wantHit(t, c, 1, "k", "a", "db1")
		fill(t, c, 0, "k", "a", "db0 again", hour)
		wantHit(t, c, 0, "k", "a", "db0 again")
	})

	t.Run("dbs beyond the epoch slots", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		fill(t, c, 3+dbSlots, "k", "a", "high", hour)
		fill(t, c, 4, "k", "a", "low", hour)
		wantMiss(t, c, 3, "k", "a")
		wantHit(t, c, 3+dbSlots, "k", "a", "high")
		c.FlushDB(3)
		wantMiss(t, c, 3+dbSlots, "k", "a") // shares db 3's epoch: a spurious miss
		wantHit(t, c, 4, "k", "a", "low")
		c.FlushDB(3 + dbSlots)
		wantHit(t, c, 4, "k", "a", "low")
	})

	t.Run("flushall", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		fill(t, c, 0, "k", "a", "1", hour)
		fill(t, c, 7, "k", "a", "2", hour)
		c.FlushAll()
		wantMiss(t, c, 0, "k", "a")
		wantMiss(t, c, 7, "k", "a")
		fill(t, c, 0, "k", "a", "3", hour)
		wantHit(t, c, 0, "k", "a", "3")
	})

	t.Run("suspend and resume", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		fill(t, c, 0, "k", "a", "1", hour)
		c.Suspend()
		wantMiss(t, c, 0, "k", "a")
		if fill(t, c, 0, "k", "a", "2", hour) {
			t.Fatal("Complete stored while suspended")
		}
		wantMiss(t, c, 0, "k", "a")
		c.Resume()
		wantMiss(t, c, 0, "k", "a")
		if !fill(t, c, 0, "k", "a", "3", hour) {
			t.Fatal("Complete did not store after Resume")
		}
		wantHit(t, c, 0, "k", "a", "3")
	})

	t.Run("ttl", func(t *testing.T) {
		t.Parallel()
		c, clock := newCache(t, 8<<20)
		fill(t, c, 0, "k", "short", "s", 5*time.Second)
		fill(t, c, 0, "k", "long", "l", 20*time.Second)
		clock.Store(int64(5*time.Second) - 1)
		wantHit(t, c, 0, "k", "short", "s")
		clock.Store(int64(5 * time.Second))
		wantMiss(t, c, 0, "k", "short")
		wantHit(t, c, 0, "k", "long", "l")
		// Adding a variant drops the expired one and keeps the live one's expiry.
		fill(t, c, 0, "k", "new", "n", 100*time.Second)
		clock.Store(int64(20 * time.Second))
		wantMiss(t, c, 0, "k", "long")
		wantHit(t, c, 0, "k", "new", "n")
		fill(t, c, 0, "forever", "a", "f", math.MaxInt64)
		wantHit(t, c, 0, "forever", "a", "f")
		for _, ttl := range []time.Duration{0, -time.Second} {
			if fill(t, c, 0, "z", "a", "x", ttl) {
				t.Fatalf("Complete stored with ttl %v", ttl)
			}
			wantMiss(t, c, 0, "z", "a")
		}
	})

	t.Run("hash collision is a miss", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		c.hashMask = 0 // every (db, key) hashes to 0
		fill(t, c, 0, "one", "a", "reply of one", hour)
		wantHit(t, c, 0, "one", "a", "reply of one")
		wantMiss(t, c, 0, "two", "a")
		wantMiss(t, c, 1, "one", "a")
		fill(t, c, 0, "two", "b", "reply of two", hour)
		wantHit(t, c, 0, "two", "b", "reply of two")
		wantMiss(t, c, 0, "one", "a")
		wantMiss(t, c, 0, "two", "a") // one's variant was not carried over
		// Colliding fills neither join nor spoil each other.
		f1, _ := c.Begin(0, []byte("one"), []byte("a"))
		f2, leader := c.Begin(0, []byte("two"), []byte("a"))
		if !leader || f2 == f1 {
			t.Fatal("a colliding key joined another key's fill")
		}
		c.Invalidate(0, []byte("one"))
		if !c.Complete(f2, []byte("two again"), hour, true) {
			t.Fatal("Invalidate of a colliding key spoiled the fill")
		}
		c.Complete(f1, []byte("stale"), hour, true)
		wantHit(t, c, 0, "two", "a", "two again")
	})

	t.Run("entries over a sixteenth of the budget are not stored", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 4<<20)
		if fill(t, c, 0, "big", "a", strings.Repeat("x", 4<<20/16), hour) {
			t.Fatal("Complete stored an entry over 1/16 of MaxBytes")
		}
		wantMiss(t, c, 0, "big", "a")
		if !fill(t, c, 0, "big", "a", strings.Repeat("x", 4<<20/32), hour) {
			t.Fatal("Complete did not store an entry of 1/32 of MaxBytes")
		}
		wantHit(t, c, 0, "big", "a", strings.Repeat("x", 4<<20/32))
		if s := c.Stats(); s.DroppedReject != 1 {
			t.Fatalf("DroppedReject = %d; want 1", s.DroppedReject)
		}
	})

	t.Run("store false shares but does not store", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		f, _ := c.Begin(0, []byte("k"), []byte("a"))
		g, leader := c.Begin(0, []byte("k"), []byte("a"))
		if leader || g != f {
			t.Fatal("second Begin did not join the fill in flight")
		}
		if c.Complete(f, []byte("-ERR x\r\n"), hour, false) {
			t.Fatal("Complete(store=false) reported storing")
		}
		if got := string(g.Wait()); got != "-ERR x\r\n" {
			t.Fatalf("follower got %q", got)
		}
		wantMiss(t, c, 0, "k", "a")
		if _, leader := c.Begin(0, []byte("k"), []byte("a")); !leader {
			t.Fatal("Begin after Complete joined the completed fill")
		}
	})

	t.Run("complete twice panics", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		f, _ := c.Begin(0, []byte("k"), []byte("a"))
		c.Complete(f, nil, hour, false)
		defer func() {
			if recover() == nil {
				t.Fatal("second Complete did not panic")
			}
		}()
		c.Complete(f, nil, hour, false)
	})

	t.Run("stats", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		fill(t, c, 0, "a", "v", "1", hour)
		fill(t, c, 0, "b", "v", "2", hour)
		fill(t, c, 0, "b", "w", "3", hour)
		f, _ := c.Begin(0, []byte("c"), []byte("v"))
		c.Invalidate(0, []byte("c"))
		c.Complete(f, []byte("stale"), hour, true)
		c.FlushDB(5)
		c.Wait()
		s := c.Stats()
		if s.Entries != 2 || s.Stored != 3 || s.DroppedStale != 1 || s.Invalidations != 1 || s.Flushes != 1 {
			t.Fatalf("Stats = %+v; want 2 entries, 3 stored, 1 dropped stale, 1 invalidation, 1 flush", s)
		}
		a, _ := c.rc.Get(c.hash(0, []byte("a")))
		b, _ := c.rc.Get(c.hash(0, []byte("b")))
		if want := a.cost + b.cost; s.Bytes != want {
			t.Fatalf("Bytes = %d; want %d, the costs of the two entries", s.Bytes, want)
		}
		if a.cost < int64(len("a")+len("v")+len("1")+ristrettoItemBytes) {
			t.Fatalf("entry cost %d leaves out the fixed overhead", a.cost)
		}
		c.Invalidate(0, []byte("a"))
		c.FlushAll()
		c.Wait()
		if s := c.Stats(); s.Entries != 0 || s.Bytes != 0 || s.Flushes != 2 || s.Evictions != 0 {
			t.Fatalf("after Invalidate and FlushAll: %+v; want no entries or bytes, 2 flushes, 0 evictions", s)
		}
	})

	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		fill(t, c, 0, "k", "a", "1", hour)
		f, _ := c.Begin(0, []byte("k"), []byte("b"))
		c.Close()
		wantMiss(t, c, 0, "k", "a")
		if c.Complete(f, []byte("x"), hour, true) {
			t.Fatal("Complete stored after Close")
		}
		if _, leader := c.Begin(0, []byte("k"), []byte("a")); !leader {
			t.Fatal("Begin after Close did not lead")
		}
		if fill(t, c, 0, "j", "a", "x", hour) {
			t.Fatal("Complete stored after Close")
		}
		c.Invalidate(0, []byte("k"))
		c.FlushDB(0)
		c.FlushAll()
		c.Suspend()
		c.Resume()
		c.Wait()
		_ = c.Stats()
		c.Close()
	})
}

// TestCloseRacesUse closes the cache while other goroutines are busy with it:
// ristretto panics on a Set, Del or Wait racing its Close, and races on its
// policy's closed flag when a Get does, so this fails without the guards.
func TestCloseRacesUse(t *testing.T) {
	t.Parallel()
	for range 40 {
		c, _ := newCache(t, 1<<20)
		var wg, busy sync.WaitGroup
		var closed atomic.Bool
		for g := range 4 {
			busy.Add(1)
			wg.Go(func() {
				key := []byte{'k', byte(g)}
				for i := 0; ; i++ {
					switch {
					case i == 50:
						busy.Done()
					case i > 100 && closed.Load():
						return
					}
					c.Get(0, key, nil)
					c.Invalidate(0, key)
					if i%32 == 0 {
						if f, leader := c.Begin(0, key, nil); leader {
							c.Complete(f, key, hour, true)
						}
					}
				}
			})
		}
		busy.Wait()
		c.Close()
		closed.Store(true)
		wg.Wait()
	}
}

// TestResolve: a fill resolved before it is stored answers its followers at
// once, keeps at Store what it would have kept at Resolve, and takes newcomers
// only while what it holds is as good as an entry.
func TestResolve(t *testing.T) {
	t.Parallel()
	begin := func(t *testing.T, c *Cache, want bool) *Fill {
		t.Helper()
		f, leader := c.Begin(0, []byte("k"), []byte("GET"))
		if leader != want {
			t.Fatalf("Begin: leader = %v; want %v", leader, want)
		}
		return f
	}

	t.Run("followers before Store, the entry after", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		f := begin(t, c, true)
		g := begin(t, c, false)
		c.Resolve(f, []byte("v1"), hour, true)
		if got := string(g.Wait()); got != "v1" {
			t.Fatalf("follower got %q; want v1", got)
		}
		if got := string(begin(t, c, false).Wait()); got != "v1" {
			t.Fatalf("newcomer got %q; want v1", got)
		}
		wantMiss(t, c, 0, "k", "GET")
		if !c.Store(f) {
			t.Fatal("Store did not keep the resolved reply")
		}
		wantHit(t, c, 0, "k", "GET", "v1")
	})

	t.Run("no newcomers while suspended", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		c.Suspend()
		f := begin(t, c, true)
		c.Resolve(f, []byte("v1"), hour, true)
		begin(t, c, true)
	})

	t.Run("Wait waits for Store", func(t *testing.T) {
		t.Parallel()
		c, _ := newCache(t, 8<<20)
		f := begin(t, c, true)
		c.Resolve(f, []byte("v1"), hour, true)
		go func() {
			time.Sleep(20 * time.Millisecond) // Wait is polling by then
			c.Store(f)
		}()
		wantHit(t, c, 0, "k", "GET", "v1")
	})

	for _, tc := range []struct {
		name  string
		store bool
		event func(c *Cache, clock *atomic.Int64)
	}{
		{"not to be kept", false, func(*Cache, *atomic.Int64) {}},
		{"an invalidation spoils it", true, func(c *Cache, _ *atomic.Int64) { c.Invalidate(0, []byte("k")) }},
		{"a flush overtakes it", true, func(c *Cache, _ *atomic.Int64) { c.FlushDB(0) }},
		{"the TTL runs from Resolve", true, func(_ *Cache, clock *atomic.Int64) { clock.Add(int64(time.Minute)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, clock := newCache(t, 8<<20)
			f := begin(t, c, true)
			c.Resolve(f, []byte("v1"), time.Minute, tc.store)
			tc.event(c, clock)
			g := begin(t, c, true)
			if c.Store(f) {
				t.Fatal("Store kept a reply overtaken between Resolve and Store")
			}
			c.Wait()
			wantMiss(t, c, 0, "k", "GET")
			c.Complete(g, []byte("v2"), time.Minute, true)
			wantHit(t, c, 0, "k", "GET", "v2")
		})
	}
}
