package l1

// View is a Cache as one caching rule sees it: Get finds only what was stored
// through a View with the same tag, and Store keeps no reply longer than
// the View's limit. Giving every rule its own tag, and a new one whenever the
// rule changes or its entries must go, drops every entry stored under the old
// rule at once and without a walk: they stay in memory, invisible, until they
// are replaced or evicted, as after FlushDB. The Cache's own Get and Begin are
// the View with tag 0 and no limit.
//
// A View is a small value: copy it freely. Invalidations and flushes act on the
// Cache, whatever View stored the entry.
type View struct {
	c        *Cache
	tag      uint64
	maxReply int
}

// View returns the view of c with tag; replies longer than maxReply bytes are
// not stored through it (0: no limit).
func (c *Cache) View(tag uint64, maxReply int) View {
	return View{c: c, tag: tag, maxReply: max(maxReply, 0)}
}

// Cache is the Cache v looks at.
func (v View) Cache() *Cache { return v.c }

// Get is Cache.Get restricted to the entries stored through v's tag.
func (v View) Get(db int, key, variant []byte) ([]byte, bool) {
	return v.c.get(db, key, variant, v.tag, 0)
}

// GetAt is Get as of now, a reading of the Cache's Now: for a caller that
// looks up many keys at once (an MGET), and would otherwise read the clock
// once for each.
func (v View) GetAt(db int, key, variant []byte, now int64) ([]byte, bool) {
	return v.c.get(db, key, variant, v.tag, now)
}

// Begin is Cache.Begin for v: the fill stores under v's tag and limit, and
// joins only fills begun through the same tag.
func (v View) Begin(db int, key, variant []byte) (f *Fill, leader bool) {
	return v.c.begin(db, key, variant, v.tag, v.maxReply)
}

// Cache is the Cache f was begun on: the one to complete it on.
func (f *Fill) Cache() *Cache { return f.cache }

// Key returns the database and key f reads; key must not be modified.
func (f *Fill) Key() (db int, key []byte) { return f.db, f.key() }

// MaxBytes is the budget c was made with (Config.MaxBytes).
func (c *Cache) MaxBytes() int64 { return c.maxBytes }

// Tag is v's tag.
func (v View) Tag() uint64 { return v.tag }

// MaxReply is v's limit on the replies it stores; 0: none.
func (v View) MaxReply() int { return v.maxReply }
