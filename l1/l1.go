// Package l1 is the proxy's in-process cache of raw Redis replies, keyed by (db, key).
//
// One ristretto entry per (db, key) holds the replies of every cacheable command
// variant read on that key (GET, HGET field, HGETALL, ...), so invalidating a key is
// one delete. Entries are immutable: adding a variant stores a new copy. Reads go
// through fills: Begin registers the read before it is sent upstream, Invalidate
// spoils every fill of the key in flight, and a fill's Store keeps only what no
// invalidation, flush or Suspend overtook; concurrent misses of one key and variant
// share a fill. FlushDB, FlushAll and Suspend never walk the cache: they bump an
// epoch that every entry and fill carries, which hides what came before at once.
//
// Each variant expires ttl after the Resolve that answered its fill, on the
// monotonic clock, and Get checks that itself. Ristretto gets no TTL: its check,
// made on every hit, reads the wall clock as well and costs twice ours. An expired
// variant keeps its memory until its key is filled again or ristretto evicts the
// entry.
//
// Hits do not go through ristretto: the entries it holds, and those queued for
// it, are also in an index of our own, which Store fills and ristretto's exits
// empty. Ristretto's Get, besides its own locking, counts every access for its
// admission policy, whose sketch is large and randomly touched: a hit paid more
// for that than for its lookup. A hit therefore counts one time in
// hitSampling, a miss every time, so that hot keys still rank high and new
// keys still get in.
//
// Memory: ristretto's cost of an entry is the bytes of its key, variants and
// replies as allocated, plus a fixed estimate of our and ristretto's per-entry
// structures; its MaxCost is Config.MaxBytes less its admission counters and a
// bound on what may wait in its set buffer. Entries hidden by FlushDB stay until
// evicted or replaced; FlushAll and Suspend also clear ristretto.
//
// l1 owns ristretto: nothing else in the project touches it. It never talks to Redis
// and never decides what is cacheable: callers pass opaque variant and reply bytes
// and a TTL.
package l1

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
	"weak"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
)

// Config configures a Cache.
type Config struct {
	// MaxBytes is the whole memory budget: keys, variants and replies plus an
	// estimate of every per-entry overhead (ours and ristretto's), of
	// ristretto's admission counters (5 to 10% of MaxBytes), and of the entries
	// waiting in ristretto's set buffer (at most 1/16 of MaxBytes, which is
	// also the largest entry stored). Required; at least 1 MiB.
	MaxBytes int64
	// Last, when set, also keeps the reply of each fill marked KeepLast that
	// Store keeps, for stale-if-error (see Last). Several caches may share
	// one. nil: no fill's reply is kept beyond the cache.
	Last *Last
}

// Cache is safe for concurrent use. Get takes no lock shared by all goroutines
// and does not allocate.
type Cache struct {
	rc *ristretto.Cache[uint64, *entry]

	// global is bumped by FlushAll, Suspend and Resume; dbEpochs[db%dbSlots] by
	// FlushDB. An entry or fill made under other values is dead.
	global    atomic.Uint64
	dbEpochs  [dbSlots]atomic.Uint64
	suspended atomic.Bool
	// maxDB is the highest database any fill has begun in: no entry or fill
	// of a database above it exists, so InvalidateEveryDB stops there.
	maxDB atomic.Int64

	shards [numShards]shard

	// closed is set once by Close. Every call into ristretto happens under a read
	// lock of one of guards and after checking closed, so Close, which takes each
	// guard for writing once, knows that no call is in progress or will start:
	// ristretto panics on a Set, Del, Wait or (now and then) Get racing its Close.
	closed atomic.Bool
	guards [numGuards]guard
	// index holds every entry Store handed to ristretto and ristretto has not
	// let go of (gone): what Get looks up.
	index [numShards]indexShard
	// life serialises ristretto's Clear with its Close.
	life sync.Mutex

	// queued is the cost of the entries ristretto has been handed and has not
	// yet taken off its set buffer; Store hands over nothing that would take it
	// past maxQueued. Ristretto bounds that buffer by count only.
	queued    atomic.Int64
	maxQueued int64
	maxBytes  int64 // Config.MaxBytes
	last      *Last // Config.Last

	st counters

	// Hooks for tests; set before the cache is used.
	hashMask uint64         // ANDed into every key hash: 0 makes every key collide
	now      func() int64   // monotonic nanoseconds
	costHook func(e *entry) // runs on ristretto's goroutine just before it admits e
}

// Fill is one in-flight upstream read of (db, key, variant), shared by every
// caller that misses on it until the leader completes it or the key is
// invalidated.
type Fill struct {
	h       uint64
	db      int
	buf     []byte // key, then variant
	keyLen  int
	global  uint64 // epochs at Begin
	dbEpoch uint64
	cache   *Cache
	tag     uint64 // the View's: what the fill stores is visible through that View only
	max     int    // the View's largest reply stored; 0: no limit

	// guarded by the shard's mu
	next     *Fill // next fill in the shard's flight list for h
	spoiled  bool
	resolved bool          // reply, ttl, at and why are set
	stored   bool          // Store has run
	keepLast bool          // set by the leader before Store: see KeepLast
	ttl      time.Duration // what Resolve was given
	at       int64         // when Resolve ran: the TTL counts from here
	why      *atomic.Int64 // the counter of why Store will not keep the reply; nil: it may

	done  chan struct{} // closed by Resolve after reply is set
	reply []byte
}

// Stats are counters since New. Entries and Bytes follow ristretto's own
// bookkeeping, which applies new entries a moment after Store hands them over.
type Stats struct {
	// Entries and Bytes are what the cache holds now, Bytes as counted against
	// Config.MaxBytes (admission counters excluded).
	Entries, Bytes int64
	// Stored counts replies handed to ristretto; DroppedStale those not kept
	// because an invalidation, flush or Suspend overtook their fill;
	// DroppedReject those not kept for want of room: ristretto's set buffer was
	// full (by count, or by bytes: see Config.MaxBytes), or its admission policy
	// refused them; DroppedTooLarge those over their View's limit; Declined
	// those the caller said not to store (store false, or no ttl), or whose TTL
	// ran out between Resolve and Store.
	Stored, DroppedStale, DroppedReject, DroppedTooLarge, Declined int64
	// Evictions counts entries removed to make room for others.
	Evictions int64
	// Invalidations counts Invalidate calls; Flushes FlushDB, FlushAll and
	// Suspend calls.
	Invalidations, Flushes int64
}

const (
	minMaxBytes = 1 << 20
	// dbSlots is how many databases have an epoch of their own: Redis's default
	// 16 and then some. Databases d and d+dbSlots share one, so FlushDB(d) also
	// hides entries of d+dbSlots: a spurious miss, never a stale reply.
	dbSlots = 64
	// numShards splits the fill guard's lock and flight lists by key hash.
	numShards = 256
	// hitSampling: one hit in this many is counted by ristretto's admission
	// policy; a power of two.
	hitSampling = 8
	// numGuards spreads Get's read lock (see Cache.closed) so that even a single
	// hot key does not make all readers share one cache line.
	numGuards = 64
	// maxVariants bounds an entry: adding a variant copies the entry, so a key
	// read under very many variants (HGET of every field) would grow quadratically.
	// The oldest variants go first.
	maxVariants = 32
	// queuedShare is the share of MaxBytes that entries waiting in ristretto's
	// set buffer may take; it is also the largest entry stored.
	queuedShare = 16
	// avgEntryGuess sizes ristretto's admission counters, ten per entry of that
	// size that MaxBytes would hold.
	avgEntryGuess = 1 << 10
	minCounters   = 1 << 12
	maxCounters   = 1 << 26
	// counterBytes is the memory of one admission counter: four 4-bit count-min
	// rows plus about 1.2 bytes of doorkeeper bloom filter, both rounded up to a
	// power of two by ristretto.
	counterBytes = 5
	// ristrettoItemBytes is ristretto's resident cost of one item beyond our
	// entry: a 48-byte storeItem plus its uint64 key in the store's map, and a
	// key and cost in the policy's map, at the load factor of a Go map that has
	// grown by doubling (about two thirds full).
	ristrettoItemBytes = 120
	// indexItemBytes is an entry's slot in our index: a uint64 key and a
	// pointer in a Go map, at the same load factor.
	indexItemBytes = 24
)

var (
	entryBytes = classSize(int(unsafe.Sizeof(entry{})))
	spanBytes  = int(unsafe.Sizeof(span{}))
	// base anchors the monotonic clock of entry expiries.
	base = time.Now()
)

// entry is the value of one ristretto item: every variant stored for (db, key).
// It never changes after it is stored, except for dead and state.
type entry struct {
	h       uint64
	db      int
	global  uint64 // epochs its fill began under
	dbEpoch uint64
	tag     uint64 // the View it was stored through
	buf     []byte // key, then each variant's name and reply
	keyLen  int
	vars    []span // newest first
	one     [1]span
	cost    int64

	// dead is set by an Invalidate that ran while ristretto might still be about to
	// add e (see store): Get must then ignore e even though the store has it.
	dead atomic.Bool
	// state tracks e in Stats and Cache.queued: 0 queued, 1 counted, 2 gone.
	state atomic.Int32
}

// span locates one variant in entry.buf.
type span struct {
	off, nameLen, replyLen int
	expires                int64 // on the cache's monotonic clock
}

type shard struct {
	mu      sync.Mutex
	flights map[uint64]*Fill // live fills by key hash, chained through Fill.next
	// settling tracks entries handed to ristretto as new items and not yet
	// known to be applied; guarded by mu. The pointers are weak so that an entry
	// ristretto rejected or evicted is not kept alive until the next sweep.
	settling []settler
	sweepAt  int // len(settling) at which the next store sweeps it
	unstored int // fills resolved and not yet stored, for Wait; guarded by mu
	_        [64 - 8 - 8 - 24 - 8 - 8]byte
}

type settler struct {
	h uint64
	e weak.Pointer[entry]
}

type indexShard struct {
	mu sync.RWMutex
	m  map[uint64]*entry
	_  [64 - unsafe.Sizeof(sync.RWMutex{}) - 8]byte
}

// put indexes e, unless ristretto let go of it meanwhile.
func (c *Cache) put(e *entry) {
	x := &c.index[e.h>>56]
	x.mu.Lock()
	x.m[e.h] = e
	x.mu.Unlock()
	if e.state.Load() == 2 {
		c.unindex(e) // gone ran before e was indexed
	}
}

// unindex drops e from the index, if it is what the index holds for its hash.
func (c *Cache) unindex(e *entry) {
	x := &c.index[e.h>>56]
	x.mu.Lock()
	if x.m[e.h] == e {
		delete(x.m, e.h)
	}
	x.mu.Unlock()
}

type guard struct {
	sync.RWMutex
	_ [64 - unsafe.Sizeof(sync.RWMutex{})]byte
}

type counters struct {
	entries, bytes, stored, droppedStale, droppedReject atomic.Int64
	droppedTooLarge, declined                           atomic.Int64
	evictions, invalidations, flushes                   atomic.Int64
}

// New validates cfg and starts the cache. Close stops it.
func New(cfg Config) (*Cache, error) {
	if cfg.MaxBytes < minMaxBytes {
		return nil, fmt.Errorf("l1: MaxBytes is %d; set it to at least %d (1 MiB)", cfg.MaxBytes, minMaxBytes)
	}
	numCounters := min(max(cfg.MaxBytes/avgEntryGuess*10, minCounters), maxCounters)
	maxQueued := cfg.MaxBytes / queuedShare
	maxCost := cfg.MaxBytes - maxQueued - nextPow2(numCounters)*counterBytes
	c := &Cache{
		maxQueued: maxQueued,
		maxBytes:  cfg.MaxBytes,
		last:      cfg.Last,
		hashMask:  ^uint64(0),
		now:       func() int64 { return int64(time.Since(base)) },
	}
	for i := range c.shards {
		c.shards[i].flights = make(map[uint64]*Fill)
		c.index[i].m = make(map[uint64]*entry)
	}
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters:        numCounters,
		MaxCost:            maxCost,
		BufferItems:        64,
		KeyToHash:          func(h uint64) (uint64, uint64) { return h, 0 },
		Cost:               c.admitting,
		IgnoreInternalCost: true,
		OnEvict: func(it *ristretto.Item[*entry]) {
			// Clear reports every item it drops as evicted, with Cost 0; only
			// evictions to make room carry the item's cost.
			if it.Cost != 0 {
				c.st.evictions.Add(1)
			}
		},
		OnReject: func(*ristretto.Item[*entry]) { c.st.droppedReject.Add(1) },
		OnExit:   c.gone,
	})
	if err != nil {
		return nil, fmt.Errorf("l1: starting ristretto: %w", err)
	}
	c.rc = rc
	return c, nil
}

// Close stops the cache's goroutines and drops every entry. Calls made after
// Close miss, do not store and do not panic; a Fill begun before Close must still
// be resolved to release its followers.
func (c *Cache) Close() {
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed.Swap(true) {
		return
	}
	// Taking each guard once waits out the calls into ristretto in progress;
	// later ones see closed.
	for i := range c.guards {
		c.guards[i].Lock()
		c.guards[i].Unlock()
	}
	c.rc.Close()
	for i := range c.index {
		x := &c.index[i]
		x.mu.Lock()
		clear(x.m)
		x.mu.Unlock()
	}
}

// Get returns the stored reply of (db, key, variant). The reply is shared with
// every other reader: it must not be modified.
func (c *Cache) Get(db int, key, variant []byte) ([]byte, bool) {
	return c.get(db, key, variant, 0, 0)
}

// Now is the cache's clock, in the unit GetAt takes.
func (c *Cache) Now() int64 { return c.now() }

// get finds (db, key, variant) among the entries stored through tag, as of
// now, the cache's clock; 0 reads the clock.
func (c *Cache) get(db int, key, variant []byte, tag uint64, now int64) ([]byte, bool) {
	h := c.hash(db, key)
	x := &c.index[h>>56]
	x.mu.RLock()
	e := x.m[h]
	x.mu.RUnlock()
	if e == nil || !c.visible(e, db, key, tag) {
		c.count(h)
		return nil, false
	}
	if rand.Uint32()%hitSampling == 0 {
		c.count(h)
	}
	for i := range e.vars {
		v := &e.vars[i]
		if bytes.Equal(e.buf[v.off:v.off+v.nameLen], variant) {
			if now == 0 {
				now = c.now()
			}
			if now >= v.expires {
				return nil, false
			}
			start := v.off + v.nameLen
			end := start + v.replyLen
			return e.buf[start:end:end], true
		}
	}
	return nil, false
}

// count tells ristretto's admission policy of an access to h.
func (c *Cache) count(h uint64) {
	g := &c.guards[rand.Uint32()%numGuards]
	g.RLock()
	if !c.closed.Load() {
		c.rc.Get(h)
	}
	g.RUnlock()
}

// visible reports whether e may answer a read of (db, key). Suspend needs no test
// of its own: it bumps the global epoch, and Store keeps nothing while
// suspended.
func (c *Cache) visible(e *entry, db int, key []byte, tag uint64) bool {
	return !c.closed.Load() && !e.dead.Load() &&
		e.tag == tag &&
		e.global == c.global.Load() &&
		e.db == db &&
		e.dbEpoch == c.dbEpochs[uint(db)%dbSlots].Load() &&
		bytes.Equal(e.buf[:e.keyLen], key)
}

// Begin starts or joins a fill of (db, key, variant). The leader (leader == true)
// must send its upstream read after Begin returns and then call Complete (or
// Resolve and Store) once, whatever happens to the read; followers call Wait. A
// fill is joined only while no invalidation of the key or flush of its db has
// happened since it began, so a caller that Begins after a write's Invalidate
// returned never gets a reply read before that write.
func (c *Cache) Begin(db int, key, variant []byte) (f *Fill, leader bool) {
	return c.begin(db, key, variant, 0, 0)
}

func (c *Cache) begin(db int, key, variant []byte, tag uint64, maxReply int) (f *Fill, leader bool) {
	// Raised before the fill exists, so an InvalidateEveryDB that runs after
	// this fill's upstream read sees its database.
	for m := c.maxDB.Load(); int64(db) > m && !c.maxDB.CompareAndSwap(m, int64(db)); m = c.maxDB.Load() {
	}
	h := c.hash(db, key)
	s := &c.shards[h>>56]
	s.mu.Lock()
	defer s.mu.Unlock()
	global, dbEpoch := c.global.Load(), c.dbEpochs[uint(db)%dbSlots].Load()
	for p := s.flights[h]; p != nil; p = p.next {
		if p.db != db || p.tag != tag || !bytes.Equal(p.key(), key) || !bytes.Equal(p.variant(), variant) {
			continue
		}
		if p.resolved && (p.why != nil || c.suspended.Load() || c.now()-p.at >= int64(p.ttl)) {
			// See Resolve. While suspended no entry is served, since no
			// invalidation is trusted: nor is a reply read long ago.
			continue
		}
		if p.global == global && p.dbEpoch == dbEpoch {
			return p, false
		}
		// Overtaken by a flush: its Store will not keep it, and a reader who
		// flushed must not be handed a reply read before the flush.
		s.unlink(p)
	}
	f = &Fill{
		h:       h,
		db:      db,
		buf:     append(append(make([]byte, 0, len(key)+len(variant)), key...), variant...),
		keyLen:  len(key),
		global:  global,
		dbEpoch: dbEpoch,
		cache:   c,
		tag:     tag,
		max:     maxReply,
		next:    s.flights[h],
		done:    make(chan struct{}),
	}
	s.flights[h] = f
	return f, true
}

// Complete ends the leader's fill at once: Resolve, then Store.
func (c *Cache) Complete(f *Fill, reply []byte, ttl time.Duration, store bool) bool {
	c.Resolve(f, reply, ttl, store)
	return c.Store(f)
}

// Resolve hands reply to the leader's followers. Store, which the leader must
// call next, keeps a copy of it for ttl, counted from now, when store is true,
// ttl > 0, reply is within the limit of the View that began f, and no
// invalidation of the key, flush of its db, or Suspend happens before Store.
// Followers share reply: nobody may modify it afterwards.
//
// The two steps let a leader answer its own client before it pays for the
// store. Meanwhile newcomers join f only while Store would keep its reply and
// the TTL lasts: it is then as fresh as the entry they would find after Store.
func (c *Cache) Resolve(f *Fill, reply []byte, ttl time.Duration, store bool) {
	if f.cache != c {
		panic("l1: Resolve called on another Cache than the Fill's")
	}
	s := &c.shards[f.h>>56]
	s.mu.Lock()
	if f.resolved {
		s.mu.Unlock()
		panic("l1: Resolve called twice on one Fill")
	}
	f.resolved = true
	f.reply, f.ttl, f.at = reply, ttl, c.now()
	s.unstored++
	switch {
	case !store || ttl <= 0:
		f.why = &c.st.declined
	case f.max > 0 && len(reply) > f.max:
		f.why = &c.st.droppedTooLarge
	}
	s.mu.Unlock()
	close(f.done)
}

// Store ends f, which Resolve answered, and stores its reply on the terms given
// to Resolve. It reports whether the reply was handed to ristretto (which may
// still evict it).
func (c *Cache) Store(f *Fill) bool {
	if f.cache != c {
		panic("l1: Store called on another Cache than the Fill's")
	}
	s := &c.shards[f.h>>56]
	s.mu.Lock()
	defer s.mu.Unlock()
	if !f.resolved || f.stored {
		panic("l1: Store called on a Fill not resolved, or twice")
	}
	f.stored = true
	s.unstored--
	s.unlink(f)
	switch {
	case f.why != nil:
		f.why.Add(1)
		return false
	case c.now()-f.at >= int64(f.ttl):
		c.st.declined.Add(1)
		return false
	}
	// The stale fill, and why the check and the Set share s.mu with
	// Invalidate's Del and spoiling:
	//
	//   reader: GET k misses, Begin(k) records fill F
	//   reader: sends GET k upstream, which answers v1
	//   writer: SET k v2 upstream
	//   writer: Invalidate(k) deletes k from ristretto: nothing there yet
	//   reader: Store(F) stores v1; the L1 now serves v1 until its TTL
	//
	// Invalidate marks F spoiled under s.mu, so the reader's check below sees
	// it. Had Store checked first and Set after releasing the lock, the whole
	// of Invalidate could run in between: Del first, then the stale Set. Under
	// one lock, either Store runs first and Invalidate's Del removes what it
	// stored, or Invalidate runs first and Store drops v1. Flushes do the same
	// through the epochs, which Get also checks, so an entry stored just after
	// a flush bumped them is never visible.
	if f.spoiled || !c.current(f) {
		c.st.droppedStale.Add(1)
		return false
	}
	if f.keepLast && c.last != nil {
		c.last.put(c, f) // under s.mu, as the store below: see Last
	}
	return c.store(s, f)
}

// current reports whether no flush or Suspend has overtaken f.
func (c *Cache) current(f *Fill) bool {
	return !c.suspended.Load() &&
		f.global == c.global.Load() &&
		f.dbEpoch == c.dbEpochs[uint(f.db)%dbSlots].Load()
}

// store hands f's reply to ristretto as part of a new entry for f's key, merged
// with the live variants of the current one. It runs under s.mu.
func (c *Cache) store(s *shard, f *Fill) bool {
	g := &c.guards[rand.Uint32()%numGuards]
	g.RLock()
	defer g.RUnlock()
	if c.closed.Load() {
		return false
	}
	if len(s.settling) >= s.sweepAt {
		c.sweep(s)
		s.sweepAt = 2*len(s.settling) + 8
	}
	cur, _ := c.rc.Get(f.h)
	if cur != nil && (cur.dead.Load() || cur.db != f.db || cur.tag != f.tag || cur.global != f.global ||
		cur.dbEpoch != f.dbEpoch || !bytes.Equal(cur.buf[:cur.keyLen], f.key())) {
		cur = nil // another key's (hash collision), or dead: nothing to keep
	}
	now := c.now()
	expires := f.at + int64(f.ttl)
	if expires < f.at {
		expires = math.MaxInt64
	}
	e := newEntry(f, cur, f.reply, expires, now)
	if c.queued.Add(e.cost) > c.maxQueued || !c.rc.Set(f.h, e, 0) {
		// Ristretto's goroutine is behind, or e alone is over the bound.
		c.queued.Add(-e.cost)
		c.st.droppedReject.Add(1)
		return false
	}
	c.st.stored.Add(1)
	c.put(e)
	if got, _ := c.rc.Get(f.h); got != e {
		// Ristretto queued e as a new item, to be added on its own goroutine.
		// Its Del deletes at once and queues a second delete behind pending
		// Sets, but that leaves a window:
		//
		//   reader: Store(F) queues e, holding v1; F was not spoiled, v1 is current
		//   writer: SET k v2 upstream
		//   writer: Invalidate(k): Del finds nothing, queues a delete behind e
		//   writer: Invalidate returns, the write is acknowledged
		//   ristretto: adds e
		//   writer: GET k finds e and reads v1 after its own write
		//   ristretto: applies the queued delete
		//
		// So until e is known to be applied, Invalidate finds it in s.settling
		// and marks it dead, which Get checks. When ristretto replaces a
		// stored entry instead, it does so at once and Del removes e.
		s.settling = append(s.settling, settler{f.h, weak.Make(e)})
	}
	return true
}

// sweep stops tracking the entries of s.settling that ristretto has applied:
// those in its store, and those gone (rejected, evicted, replaced, cleared,
// collected). An entry whose cost ristretto has not yet asked for is still
// queued. Weak pointers keep nothing alive, so sweeping only bounds the list,
// and stores do it when the list has doubled. It runs under s.mu and a guard,
// with the cache open.
func (c *Cache) sweep(s *shard) {
	s.settling = slices.DeleteFunc(s.settling, func(t settler) bool {
		e := t.e.Value()
		if e == nil {
			return true
		}
		switch e.state.Load() {
		case 2:
			return true
		case 1:
			got, _ := c.rc.Get(t.h)
			return got == e
		}
		return false
	})
}

// Wait blocks until every fill resolved so far is stored and ristretto has
// applied every store and delete handed to it: a Get that follows sees what
// Store kept, and Stats count it. Correctness never needs it; tests do. It
// panics when a resolved fill is not stored within waitBound: its leader lost it.
func (c *Cache) Wait() {
	for deadline := time.Now().Add(waitBound); c.unstored(); time.Sleep(50 * time.Microsecond) {
		if time.Now().After(deadline) {
			panic("l1: a resolved fill was not stored within " + waitBound.String())
		}
	}
	g := &c.guards[rand.Uint32()%numGuards]
	g.RLock()
	defer g.RUnlock()
	if !c.closed.Load() {
		c.rc.Wait()
	}
}

const waitBound = 10 * time.Second

func (c *Cache) unstored() bool {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n := s.unstored
		s.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

// Wait blocks until the leader completes f and returns its reply, which must not
// be modified. The leader must not call it before Resolve.
func (f *Fill) Wait() []byte {
	<-f.done
	return f.reply
}

// Invalidate drops every variant of (db, key) and spoils fills of it in flight,
// so that neither they nor anyone joining them later stores or shares a reply
// read before the call. Call it after the write reached the upstream.
func (c *Cache) Invalidate(db int, key []byte) {
	c.st.invalidations.Add(1)
	h := c.hash(db, key)
	s := &c.shards[h>>56]
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.settling {
		if t.h != h {
			continue
		}
		if e := t.e.Value(); e != nil {
			e.dead.Store(true) // a colliding key's entry too: a miss, never stale
		}
	}
	if c.last != nil {
		c.last.invalidate(db, key)
	}
	// Whatever ristretto holds or has queued for h was indexed by a Store
	// under s.mu, which is held here: with no index entry there is nothing to
	// delete. Most writes are of keys never cached, and ristretto's Del wakes
	// its goroutine, a futex call each way, for every one.
	x := &c.index[h>>56]
	x.mu.RLock()
	_, held := x.m[h]
	x.mu.RUnlock()
	if held {
		g := &c.guards[rand.Uint32()%numGuards]
		g.RLock()
		if !c.closed.Load() {
			c.rc.Del(h)
		}
		g.RUnlock()
		x.mu.Lock()
		delete(x.m, h) // a colliding key's entry too: a miss, never stale
		x.mu.Unlock()
	}
	for p := s.flights[h]; p != nil; p = p.next {
		if p.db == db && bytes.Equal(p.key(), key) {
			p.spoiled = true
			s.unlink(p)
		}
	}
}

// InvalidateEveryDB is Invalidate of key in every database that has ever held
// a fill: for invalidations that do not say which database changed (Redis's
// client tracking).
func (c *Cache) InvalidateEveryDB(key []byte) {
	for db := range c.maxDB.Load() + 1 {
		c.Invalidate(int(db), key)
	}
}

// FlushDB drops every entry of db and spoils fills of db in flight. The entries
// stay in memory, invisible, until ristretto evicts or replaces them.
func (c *Cache) FlushDB(db int) {
	c.st.flushes.Add(1)
	c.dbEpochs[uint(db)%dbSlots].Add(1)
	if c.last != nil {
		c.last.flushDB(db)
	}
}

// FlushAll drops every entry and spoils every fill in flight.
func (c *Cache) FlushAll() {
	c.st.flushes.Add(1)
	c.global.Add(1)
	if c.last != nil {
		c.last.clear()
	}
	c.clear()
}

// Suspend flushes everything and stores nothing until Resume: for when the
// invalidation stream cannot be trusted. Get misses while suspended. Suspend and
// Resume do not nest.
func (c *Cache) Suspend() {
	c.st.flushes.Add(1)
	c.suspended.Store(true)
	c.global.Add(1)
	c.clear()
}

// Resume allows storing again after Suspend. Call it once invalidations are
// trusted again: fills begun before Resume still do not store, since a write
// whose invalidation was lost may have overtaken them.
func (c *Cache) Resume() {
	c.global.Add(1)
	if c.last != nil {
		c.last.clear() // see Last: the gap's writes are unknown
	}
	c.suspended.Store(false)
}

// Last is Config.Last.
func (c *Cache) Last() *Last { return c.last }

// clear reclaims the memory of entries a bump of the global epoch made
// invisible. Correctness does not depend on it: ristretto's Clear is not atomic,
// and entries stored meanwhile may survive it or be dropped.
func (c *Cache) clear() {
	c.life.Lock()
	defer c.life.Unlock()
	if !c.closed.Load() {
		c.rc.Clear()
	}
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	return Stats{
		Entries:         c.st.entries.Load(),
		Bytes:           c.st.bytes.Load(),
		Stored:          c.st.stored.Load(),
		DroppedStale:    c.st.droppedStale.Load(),
		DroppedReject:   c.st.droppedReject.Load(),
		DroppedTooLarge: c.st.droppedTooLarge.Load(),
		Declined:        c.st.declined.Load(),
		Evictions:       c.st.evictions.Load(),
		Invalidations:   c.st.invalidations.Load(),
		Flushes:         c.st.flushes.Load(),
	}
}

// admitting is ristretto's Cost function. Ristretto calls it on its own goroutine
// right before it decides on a new item, and for an in-place replacement after
// the fact; either way e is then (about to be) in its store, until gone runs.
func (c *Cache) admitting(e *entry) int64 {
	if e.state.CompareAndSwap(0, 1) {
		c.queued.Add(-e.cost)
		c.st.entries.Add(1)
		c.st.bytes.Add(e.cost)
	}
	if c.costHook != nil {
		c.costHook(e)
	}
	return e.cost
}

// gone is ristretto's OnExit: e left the store, or never got in.
func (c *Cache) gone(e *entry) {
	if e == nil {
		return
	}
	switch e.state.Swap(2) {
	case 0:
		c.queued.Add(-e.cost)
	case 1:
		c.st.entries.Add(-1)
		c.st.bytes.Add(-e.cost)
	}
	c.unindex(e)
}

// hash maps (db, key) to ristretto's key and to a shard.
func (c *Cache) hash(db int, key []byte) uint64 {
	h := xxhash.Sum64(key) ^ uint64(db)*0x9e3779b97f4a7c15
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h & c.hashMask
}

func (f *Fill) key() []byte     { return f.buf[:f.keyLen] }
func (f *Fill) variant() []byte { return f.buf[f.keyLen:] }

// unlink removes f from s's flight list, if it is there.
func (s *shard) unlink(f *Fill) {
	head := s.flights[f.h]
	if head == f {
		if f.next == nil {
			delete(s.flights, f.h)
		} else {
			s.flights[f.h] = f.next
		}
		return
	}
	for p := head; p != nil; p = p.next {
		if p.next == f {
			p.next = f.next
			return
		}
	}
}

// newEntry builds the entry holding reply as f's variant plus the variants of
// cur (nil or of the same key and epochs) that are live at now and not replaced.
func newEntry(f *Fill, cur *entry, reply []byte, expires, now int64) *entry {
	key, variant := f.key(), f.variant()
	var keep []span
	size := len(key) + len(variant) + len(reply)
	if cur != nil {
		for _, v := range cur.vars {
			if len(keep) == maxVariants-1 {
				break
			}
			if v.expires > now && !bytes.Equal(cur.buf[v.off:v.off+v.nameLen], variant) {
				keep = append(keep, v)
				size += v.nameLen + v.replyLen
			}
		}
	}
	e := &entry{h: f.h, db: f.db, global: f.global, dbEpoch: f.dbEpoch, tag: f.tag, keyLen: len(key)}
	// Growing from nil rounds the capacity up to the allocation's size class, so
	// cap(buf) is what the buffer really occupies.
	buf := slices.Grow([]byte(nil), size)
	buf = append(buf, key...)
	if len(keep) == 0 {
		e.vars = e.one[:0]
	} else {
		e.vars = make([]span, 0, 1+len(keep))
	}
	e.vars = append(e.vars, span{off: len(buf), nameLen: len(variant), replyLen: len(reply), expires: expires})
	buf = append(append(buf, variant...), reply...)
	for _, v := range keep {
		e.vars = append(e.vars, span{off: len(buf), nameLen: v.nameLen, replyLen: v.replyLen, expires: v.expires})
		buf = append(buf, cur.buf[v.off:v.off+v.nameLen+v.replyLen]...)
	}
	e.buf = buf
	e.cost = int64(entryBytes + ristrettoItemBytes + indexItemBytes + cap(buf))
	if len(keep) > 0 {
		e.cost += int64(classSize(cap(e.vars) * spanBytes))
	}
	return e
}

// classSize is the size the Go allocator really hands out for n bytes.
func classSize(n int) int { return cap(slices.Grow([]byte(nil), n)) }

func nextPow2(n int64) int64 {
	p := int64(1)
	for p < n {
		p <<= 1
	}
	return p
}
