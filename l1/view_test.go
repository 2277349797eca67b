package l1

import (
	"strings"
	"testing"
	"time"
)

func viewFill(t *testing.T, v View, key, reply string) bool {
	t.Helper()
	f, leader := v.Begin(0, []byte(key), []byte("get"))
	if !leader {
		t.Fatalf("Begin(%q): joined a fill in flight", key)
	}
	stored := v.Cache().Complete(f, []byte(reply), time.Minute, true)
	v.Cache().Wait()
	return stored
}

// TestViewTags: an entry is seen only through the tag it was stored under, so
// a new tag hides everything stored under the old one without a walk, while
// invalidation still reaches entries of every tag.
func TestViewTags(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, 8<<20)
	a, b := c.View(1, 0), c.View(2, 0)
	if !viewFill(t, a, "k", "va") {
		t.Fatal("fill through view 1 not stored")
	}
	if r, ok := a.Get(0, []byte("k"), []byte("get")); !ok || string(r) != "va" {
		t.Fatalf("view 1 Get = %q, %v; want its own entry", r, ok)
	}
	if r, ok := b.Get(0, []byte("k"), []byte("get")); ok {
		t.Fatalf("view 2 sees view 1's entry %q", r)
	}
	wantMiss(t, c, 0, "k", "get") // the Cache's own tag 0 neither

	// A fill through view 2 replaces the entry: view 1's variants are not kept.
	if !viewFill(t, b, "k", "vb") {
		t.Fatal("fill through view 2 not stored")
	}
	if _, ok := a.Get(0, []byte("k"), []byte("get")); ok {
		t.Fatal("view 1 still sees an entry after view 2 replaced it")
	}
	c.Invalidate(0, []byte("k"))
	if _, ok := b.Get(0, []byte("k"), []byte("get")); ok {
		t.Fatal("Invalidate did not reach view 2's entry")
	}

	// Fills are shared within a tag only.
	f1, lead1 := a.Begin(0, []byte("j"), []byte("get"))
	f2, lead2 := b.Begin(0, []byte("j"), []byte("get"))
	f3, lead3 := a.Begin(0, []byte("j"), []byte("get"))
	if !lead1 || !lead2 || lead3 || f3 != f1 {
		t.Fatalf("leaders %v %v %v: want a fill per tag, joined within one", lead1, lead2, lead3)
	}
	c.Complete(f1, []byte("x"), time.Minute, true)
	c.Complete(f2, []byte("x"), time.Minute, true)
}

// TestViewMaxReply: a reply over the view's limit reaches the readers but is
// not kept, and is counted apart from other reasons not to keep a reply.
func TestViewMaxReply(t *testing.T) {
	t.Parallel()
	c, _ := newCache(t, 8<<20)
	v := c.View(7, 10)
	if viewFill(t, v, "big", strings.Repeat("x", 11)) {
		t.Fatal("an 11-byte reply was stored under a 10-byte limit")
	}
	if !viewFill(t, v, "small", strings.Repeat("x", 10)) {
		t.Fatal("a 10-byte reply was not stored under a 10-byte limit")
	}
	f, _ := v.Begin(0, []byte("declined"), []byte("get"))
	c.Complete(f, []byte("-ERR no"), time.Minute, false)
	st := c.Stats()
	if st.DroppedTooLarge != 1 || st.Declined != 1 || st.Stored != 1 {
		t.Fatalf("stats %+v: want 1 too large, 1 declined, 1 stored", st)
	}
}

// TestCompleteOnAnotherCachePanics: a fill completed on the wrong pool would
// lock the wrong shard and store in the wrong budget.
func TestCompleteOnAnotherCachePanics(t *testing.T) {
	t.Parallel()
	c1, _ := newCache(t, 1<<20)
	c2, _ := newCache(t, 1<<20)
	f, _ := c1.Begin(0, []byte("k"), nil)
	defer c1.Complete(f, nil, 0, false)
	defer func() {
		if recover() == nil {
			t.Fatal("Complete on another Cache did not panic")
		}
	}()
	c2.Complete(f, nil, 0, false)
}

// TestViewGetDoesNotAllocate: the hit path through a View stays free.
func TestViewGetDoesNotAllocate(t *testing.T) {
	c, _ := newCache(t, 8<<20)
	v := c.View(3, 1<<20)
	viewFill(t, v, "k", "v")
	key, variant := []byte("k"), []byte("get")
	hit := true
	if n := testing.AllocsPerRun(100, func() {
		_, ok := v.Get(0, key, variant)
		hit = hit && ok
	}); n != 0 || !hit {
		t.Fatalf("View.Get allocates %v times (all hits: %v)", n, hit)
	}
}
