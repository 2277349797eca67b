package l1

import (
	"testing"
	"time"
)

// TestInvalidateEveryDB: an invalidation that names no database drops the key
// in every database that holds it or has a fill of it in flight, and nothing
// else.
func TestInvalidateEveryDB(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, 1<<20)
	for _, db := range []int{0, 5} {
		fill(t, c, db, "k", "get", "v", time.Minute)
	}
	fill(t, c, 3, "other", "get", "o", time.Minute)
	f, _ := c.Begin(9, []byte("k"), []byte("get")) // the highest database, in flight

	c.InvalidateEveryDB([]byte("k"))
	if c.Complete(f, []byte("stale"), time.Minute, true) {
		t.Error("a fill of k in db 9 begun before the invalidation was stored")
	}
	c.Wait()
	for _, db := range []int{0, 5, 9} {
		wantMiss(t, c, db, "k", "get")
	}
	wantHit(t, c, 3, "other", "get", "o")
}
