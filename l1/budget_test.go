package l1

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// TestMemoryBudget writes ten times MaxBytes of 1 KiB replies and checks that,
// once ristretto has settled, the heap holds no more than a small multiple of
// the budget. It measures the whole process's heap, so it does not run in
// parallel with other tests.
func TestMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 80 MiB")
	}
	const budget = 8 << 20
	const factor = 3
	reply := make([]byte, 1<<10)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	c, err := New(Config{MaxBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const writers = 4
	perWriter := 10 * budget / len(reply) / writers
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			key := make([]byte, 0, 32)
			for i := range perWriter {
				key = fmt.Appendf(key[:0], "user:%d:%d", w, i)
				f, _ := c.Begin(0, key, []byte("GET"))
				c.Complete(f, reply, hour, true)
			}
		})
	}
	wg.Wait()
	c.Wait()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	s := c.Stats()
	inuse := int64(after.HeapInuse) - int64(before.HeapInuse)
	live := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("budget %d MiB: heap in use +%.1f MiB (%.2fx), live +%.1f MiB (%.2fx); stats %+v",
		budget>>20, float64(inuse)/(1<<20), float64(inuse)/budget,
		float64(live)/(1<<20), float64(live)/budget, s)
	if s.Bytes > budget {
		t.Errorf("Stats.Bytes = %d, over the budget of %d", s.Bytes, budget)
	}
	indexed := 0
	for i := range c.index {
		indexed += len(c.index[i].m)
	}
	if int64(indexed) != s.Entries {
		t.Errorf("the index holds %d entries, ristretto %d: evictions and rejections must leave both", indexed, s.Entries)
	}
	if s.Evictions == 0 || s.Entries == 0 {
		t.Errorf("writing ten times the budget evicted nothing or kept nothing: %+v", s)
	}
	if live > budget*3/2 {
		t.Errorf("live heap grew by %d bytes, over 1.5x the budget of %d: the cost estimate leaves something out", live, budget)
	}
	if inuse > factor*budget {
		t.Errorf("heap in use grew by %d bytes, more than %dx the budget of %d", inuse, factor, budget)
	}
}
