package l1

import (
	"container/list"
	"encoding/binary"
	"errors"
	"sync"
	"time"
)

// Last keeps, beside the caches that share it (Config.Last), the last reply
// stored for each key and variant whose fill asked for it (Fill.KeepLast),
// with when it was stored: for answering reads while the upstream cannot be
// reached (stale-if-error). The cache itself cannot: it drops everything at
// Suspend, which is exactly when the upstream goes away.
//
// What a Last holds follows the cache's coherence, minus the stream's loss:
// a reply enters it only through Store, under the same lock and checks (a
// spoiled or overtaken fill never enters), and Invalidate, FlushDB and
// FlushAll drop from it as from the cache. Suspend leaves it alone, so that
// it can answer while the upstream is gone; but Resume empties it, because
// writes made while the stream was lost were never seen, and a reply from
// before the gap can no longer be vouched for once the upstream answers
// again. The hit path never touches it.
//
// Its memory is bounded by MaxBytes (keys, variants and replies); the oldest
// stored go first.
type Last struct {
	mu    sync.Mutex                          // guards the fields below
	keys  map[string]map[string]*list.Element // (db, key) → variant → *lastEntry
	order list.List                           // of *lastEntry, oldest stored first
	bytes int64
	max   int64
	now   func() time.Time
}

type lastEntry struct {
	dbKey, variant string
	db             int
	reply          []byte
	at             time.Time
}

func (e *lastEntry) cost() int64 { return int64(len(e.dbKey)+len(e.variant)+len(e.reply)) + 128 }

// NewLast returns a Last of at most maxBytes.
func NewLast(maxBytes int64) (*Last, error) {
	if maxBytes < 1<<10 {
		return nil, errors.New("l1: a Last needs at least 1KiB")
	}
	return &Last{keys: make(map[string]map[string]*list.Element), max: maxBytes, now: time.Now}, nil
}

func lastKey(db int, key []byte) string {
	b := binary.AppendUvarint(make([]byte, 0, len(key)+4), uint64(db))
	return string(append(b, key...))
}

// KeepLast asks Store to keep f's reply in the cache's Last too. The leader
// calls it before Store; without a Last it does nothing.
func (f *Fill) KeepLast() { f.keepLast = true }

// Get returns the reply last stored for f's key and variant, if it was
// stored no more than maxAge ago, and its age.
func (l *Last) Get(f *Fill, maxAge time.Duration) ([]byte, time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.keys[lastKey(f.db, f.key())][string(f.variant())]
	if !ok {
		return nil, 0, false
	}
	e := el.Value.(*lastEntry)
	age := l.now().Sub(e.at)
	if age > maxAge {
		return nil, age, false
	}
	return e.reply, age, true
}

// Len is the number of replies held.
func (l *Last) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}

// put keeps f's reply. It runs under the shard lock of f's key, as Store,
// which orders it with Invalidate; it checks c's epochs again under l.mu, as
// FlushDB, FlushAll and Resume bump them before they empty l.
func (l *Last) put(c *Cache, f *Fill) {
	e := &lastEntry{dbKey: lastKey(f.db, f.key()), variant: string(f.variant()), db: f.db, reply: f.reply}
	if e.cost() > l.max {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !c.current(f) {
		return
	}
	e.at = l.now()
	vs := l.keys[e.dbKey]
	if vs == nil {
		vs = make(map[string]*list.Element, 1)
		l.keys[e.dbKey] = vs
	}
	if old, ok := vs[e.variant]; ok {
		l.remove(old)
		if vs = l.keys[e.dbKey]; vs == nil {
			vs = make(map[string]*list.Element, 1)
			l.keys[e.dbKey] = vs
		}
	}
	vs[e.variant] = l.order.PushBack(e)
	l.bytes += e.cost()
	for l.bytes > l.max {
		l.remove(l.order.Front())
	}
}

// remove drops one entry, with mu held.
func (l *Last) remove(el *list.Element) {
	e := l.order.Remove(el).(*lastEntry)
	l.bytes -= e.cost()
	vs := l.keys[e.dbKey]
	delete(vs, e.variant)
	if len(vs) == 0 {
		delete(l.keys, e.dbKey)
	}
}

// invalidate drops every variant of (db, key).
func (l *Last) invalidate(db int, key []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, el := range l.keys[lastKey(db, key)] {
		l.remove(el)
	}
}

// flushDB drops every entry of db.
func (l *Last) flushDB(db int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for el := l.order.Front(); el != nil; {
		next := el.Next()
		if el.Value.(*lastEntry).db == db {
			l.remove(el)
		}
		el = next
	}
}

// clear drops everything.
func (l *Last) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.keys)
	l.order.Init()
	l.bytes = 0
}
