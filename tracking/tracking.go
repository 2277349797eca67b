// Package tracking is the proxy's own CLIENT TRACKING: the table of which client
// may have cached which key, and each client's tracking mode, so that the proxy
// serves Redis client-side caching from what it already knows (the writes it
// forwards and its invalidation stream) even when the upstream refuses CLIENT
// TRACKING. It follows Redis 7.0's src/tracking.c.
//
// In default mode Remember records the reading client against each key in a
// table sharded by key hash; Invalidate removes the key and sends one
// invalidation to each of its readers, so a key read once is invalidated once.
// A reader is a pointer to its client's state, live while that client's
// tracking stays on: turning tracking off (or Forget) only marks it dead, and
// dead readers are skipped, then dropped when their key is invalidated, evicted
// or flushed, or when its reader list grows. BCAST clients are found through an
// index of their prefixes that is replaced, never modified, when one registers
// or leaves, so Invalidate reads it without a lock. Keys are names only, in no
// database, as in Redis.
//
// Delivery: every message goes to the Sink given to New, called synchronously by
// the goroutine whose call produced it (Invalidate, FlushAll, and Remember when
// it evicts), after the table has released its locks: the sink may block, take
// its own locks or call back into the table. The sink is called concurrently
// from many goroutines and in no particular order between calls.
//
// What the caller must order, since the table cannot: Remember a read before it
// is sent upstream or answered from a cache, and write an invalidation to a
// connection only after the reply of any command it has in flight. Otherwise:
// the client reads v1 → a writer sets v2 and its invalidation reaches the
// client → the client receives and caches v1, which nothing will invalidate.
// Redis gets this for free by being single-threaded.
//
// The package never talks to a socket, encodes no RESP and knows nothing of the
// proxy: ids, keys and error texts in, calls to the Sink out.
package tracking

import (
	"errors"
	"hash/maphash"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// DefaultMaxKeys is Redis's default tracking-table-max-keys.
const DefaultMaxKeys = 1_000_000

// Sink delivers what the table sends. See the package doc for when it is
// called; key is valid only during the call.
type Sink interface {
	// Invalidate sends one invalidation naming key to connection target: a
	// RESP3 push; for a RESP2 target in pub/sub mode, a message on
	// __redis__:invalidate; otherwise nothing, as Redis. It reports false only
	// if target is gone.
	Invalidate(target int64, key []byte) bool
	// InvalidateAll sends the null invalidation ("drop everything") to target;
	// false only if target is gone.
	InvalidateAll(target int64) bool
	// RedirectBroken tells client that redirect, its REDIRECT target, is gone
	// (the RESP3 push tracking-redir-broken; a RESP2 client gets nothing).
	// Sent on every message that could not be redirected, as Redis does.
	RedirectBroken(client, redirect int64)
}

// Config configures a Table.
type Config struct {
	// Sink receives every message. Required.
	Sink Sink
	// MaxKeys bounds the keys remembered, as tracking-table-max-keys does:
	// past it, Remember evicts keys and invalidates them. 0 means no bound,
	// as in Redis (whose default is DefaultMaxKeys). Concurrent Remembers may
	// overshoot it by the keys they are adding.
	MaxKeys int
}

// Table is safe for concurrent use. Remember of a key already remembered for
// the client, and Invalidate of a key nobody tracks, take one shard lock and
// do not allocate.
type Table struct {
	sink    Sink
	maxKeys int64
	seed    maphash.Seed

	clients sync.Map // int64 → *client, for every client with tracking on
	shards  [shardCount]shard
	nkeys   atomic.Int64 // keys in all shards, kept as they are added and removed
	bcast   atomic.Pointer[bcastIndex]

	mu        sync.Mutex   // serializes Tracking and Forget, and so changes of bcast
	ntracking atomic.Int64 // clients with tracking on
}

// client is one connection's tracking state while tracking is on. Turning
// tracking off discards it (mode becomes nil for good), so a re-enabled
// client is a new *client and readers left in the table by the old one are
// dead. Its BCAST-ness therefore never changes.
type client struct {
	id      int64
	mode    atomic.Pointer[mode] // nil once tracking is off
	caching atomic.Bool          // CLIENT CACHING was given; CommandDone clears it
	broken  atomic.Bool          // a message found the redirect target gone
}

// mode is what CLIENT TRACKING on set, immutable: a new call replaces it.
type mode struct {
	bcast, optin, optout, noloop bool
	redirect                     int64    // 0: the client's own connection
	prefixes                     []string // BCAST only; sorted, as Redis lists them
}

func (c *client) live() bool { return c.mode.Load() != nil }

// tracks mirrors trackingRememberKeys' gate: OPTIN needs CACHING yes, OPTOUT
// is off after CACHING no.
func (c *client) tracks() bool {
	m := c.mode.Load()
	if m == nil || m.bcast {
		return false
	}
	caching := c.caching.Load()
	return !(m.optin && !caching) && !(m.optout && caching)
}

const shardCount = 64

type shardState struct {
	mu    sync.Mutex
	keys  map[string]*readers // guarded by mu; nil until the first key
	items int                 // readers in keys, dead ones included; guarded by mu
}

// shard pads shardState to whole cache lines so that shards do not share one.
type shard struct {
	shardState
	_ [128 - unsafe.Sizeof(shardState{})%128]byte
}

// New returns an empty table.
func New(cfg Config) (*Table, error) {
	if cfg.Sink == nil {
		return nil, errors.New("tracking: Config.Sink is required")
	}
	if cfg.MaxKeys < 0 {
		return nil, errors.New("tracking: Config.MaxKeys must be 0 (no bound) or positive")
	}
	return &Table{sink: cfg.Sink, maxKeys: int64(cfg.MaxKeys), seed: maphash.MakeSeed()}, nil
}

func (t *Table) client(id int64) *client {
	if v, ok := t.clients.Load(id); ok {
		return v.(*client)
	}
	return nil
}

func (t *Table) shard(key []byte) *shard {
	return &t.shards[maphash.Bytes(t.seed, key)&(shardCount-1)]
}

// ShouldTrack reports whether the keys of a read-only command that client id
// runs now must be remembered: tracking on in default mode, and OPTIN/OPTOUT
// satisfied by CLIENT CACHING. Remember checks it too; calling it first only
// spares extracting the keys.
func (t *Table) ShouldTrack(id int64) bool {
	c := t.client(id)
	return c != nil && c.tracks()
}

// CommandDone ends a command of client id, which consumes its CLIENT CACHING
// unless keep: keep is true when the client is inside MULTI after the command
// (MULTI itself and each queued command, so the flag lasts until EXEC), and
// when the command was any CLIENT subcommand (CLIENT CACHING included), as
// Redis spares the flag then. EXEC and DISCARD are not kept. A command run by
// EXEC is not a command of its own here.
func (t *Table) CommandDone(id int64, keep bool) {
	if keep {
		return
	}
	if c := t.client(id); c != nil && c.caching.Load() {
		c.caching.Store(false)
	}
}

// Remember records that client id may now cache keys, if ShouldTrack(id). The
// bytes are copied. Past MaxKeys it then evicts keys, any of them (this call's
// included, as Redis picks at random), and sends their invalidations before it
// returns.
func (t *Table) Remember(id int64, keys [][]byte) {
	c := t.client(id)
	if c == nil || !c.tracks() {
		return
	}
	for _, key := range keys {
		s := t.shard(key)
		s.mu.Lock()
		r := s.keys[string(key)]
		if r == nil {
			if s.keys == nil {
				s.keys = make(map[string]*readers)
			}
			r = new(readers)
			r.list = r.first[:0]
			s.keys[string(key)] = r
			t.nkeys.Add(1)
		}
		s.items += r.add(c)
		s.mu.Unlock()
	}
	if t.maxKeys > 0 && t.nkeys.Load() > t.maxKeys {
		t.evict()
	}
}

// evict removes keys until the table is within MaxKeys, starting from a random
// shard and letting map iteration pick the keys, and invalidates them for their
// readers as if they had changed (Redis picks random keys too).
func (t *Table) evict() {
	type evicted struct {
		key string
		r   *readers
	}
	var out []evicted
	start := rand.Uint32()
	for i := range uint32(shardCount) {
		if t.nkeys.Load() <= t.maxKeys {
			break
		}
		s := &t.shards[(start+i)%shardCount]
		s.mu.Lock()
		for k, r := range s.keys {
			if t.nkeys.Load() <= t.maxKeys {
				break
			}
			delete(s.keys, k)
			s.items -= r.len()
			t.nkeys.Add(-1)
			out = append(out, evicted{k, r})
		}
		s.mu.Unlock()
	}
	for _, e := range out {
		key := []byte(e.key)
		e.r.each(func(c *client) { t.send(c, key, 0) })
	}
}

// Invalidate reports that key changed, written by client writer (0 when
// unknown, as for a keyspace event). Each default-mode client that remembered
// the key gets one invalidation and the key is forgotten, so a second change
// before a new read sends nothing; each BCAST client gets one per prefix of
// its own that matches. A NOLOOP client gets nothing for its own writes, and
// is forgotten for the key all the same, as in Redis.
func (t *Table) Invalidate(key []byte, writer int64) {
	s := t.shard(key)
	s.mu.Lock()
	r := s.keys[string(key)]
	if r != nil {
		delete(s.keys, string(key))
		s.items -= r.len()
		t.nkeys.Add(-1)
	}
	s.mu.Unlock()
	if r != nil {
		r.each(func(c *client) { t.send(c, key, writer) })
	}
	if ix := t.bcast.Load(); ix != nil {
		for _, n := range ix.lens {
			if n > len(key) {
				break
			}
			for _, c := range ix.clients[string(key[:n])] {
				t.send(c, key, writer)
			}
		}
	}
}

// send delivers key's invalidation for c, or nothing if c's tracking is off
// or c is the NOLOOP writer.
func (t *Table) send(c *client, key []byte, writer int64) {
	m := c.mode.Load()
	if m == nil || (m.noloop && c.id == writer) {
		return
	}
	if m.redirect == 0 {
		t.sink.Invalidate(c.id, key)
	} else if !t.sink.Invalidate(m.redirect, key) {
		t.redirectBroken(c, m)
	}
}

func (t *Table) redirectBroken(c *client, m *mode) {
	c.broken.Store(true)
	t.sink.RedirectBroken(c.id, m.redirect)
}

// FlushAll reports that everything may have changed (FLUSHDB, FLUSHALL, a lost
// invalidation stream, an upstream restart): every tracking client, default
// and BCAST, gets the null invalidation, and the table empties.
func (t *Table) FlushAll() {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		t.nkeys.Add(-int64(len(s.keys)))
		s.keys, s.items = nil, 0
		s.mu.Unlock()
	}
	var all []*client
	t.clients.Range(func(_, v any) bool {
		all = append(all, v.(*client))
		return true
	})
	for _, c := range all {
		m := c.mode.Load()
		if m == nil {
			continue
		}
		if m.redirect == 0 {
			t.sink.InvalidateAll(c.id)
		} else if !t.sink.InvalidateAll(m.redirect) {
			t.redirectBroken(c, m)
		}
	}
}

// Forget drops client id's tracking state, as CLIENT TRACKING off does; call
// it when the connection closes. Its keys leave the table lazily (see the
// package doc). The id must not be used again.
func (t *Table) Forget(id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.disable(id)
}

// disable turns client id's tracking off. t.mu must be held.
func (t *Table) disable(id int64) {
	c := t.client(id)
	if c == nil {
		return
	}
	m := c.mode.Load()
	t.clients.Delete(id)
	c.mode.Store(nil)
	t.ntracking.Add(-1)
	if m.bcast {
		t.bcast.Store(t.bcast.Load().without(c, m.prefixes))
	}
}

// readers is the set of clients that read one key. Most keys have few, kept
// in a slice; a key read by many moves to a map so that Remember stays cheap.
type readers struct {
	list  []*client            // while set is nil
	set   map[*client]struct{} // once the list outgrew smallReaders
	sweep int                  // len(set) at which dead readers are next dropped
	first [1]*client           // list's first array: most keys have one reader
}

const smallReaders = 16

// add inserts c and returns the change in the number of readers: 1, 0 if c was
// there, or less when dead readers were dropped on the way. Dropping them only
// when the list or set must grow keeps the cost amortized O(1) and each key's
// readers within about twice the live ones.
func (r *readers) add(c *client) int {
	if r.set == nil {
		for _, x := range r.list {
			if x == c {
				return 0
			}
		}
		n := len(r.list)
		if n == cap(r.list) && n > 0 {
			r.list = dropDead(r.list)
		}
		if len(r.list) < smallReaders {
			r.list = append(r.list, c)
			return len(r.list) - n
		}
		r.set = make(map[*client]struct{}, 2*smallReaders)
		for _, x := range r.list {
			r.set[x] = struct{}{}
		}
		r.list = nil
		r.sweep = 2 * smallReaders
	}
	if _, ok := r.set[c]; ok {
		return 0
	}
	n := len(r.set)
	if n >= r.sweep {
		for x := range r.set {
			if !x.live() {
				delete(r.set, x)
			}
		}
		r.sweep = max(2*len(r.set), 2*smallReaders)
	}
	r.set[c] = struct{}{}
	return len(r.set) - n
}

func dropDead(list []*client) []*client {
	live := list[:0]
	for _, c := range list {
		if c.live() {
			live = append(live, c)
		}
	}
	clear(list[len(live):])
	return live
}

func (r *readers) len() int { return len(r.list) + len(r.set) }

func (r *readers) each(f func(*client)) {
	for _, c := range r.list {
		f(c)
	}
	for c := range r.set {
		f(c)
	}
}

// bcastIndex maps each registered prefix to its BCAST clients. It is never
// modified once published: with and without return a new one.
type bcastIndex struct {
	lens    []int // distinct prefix lengths, ascending
	clients map[string][]*client
}

// with returns ix (which may be nil) plus c under each of prefixes.
func (ix *bcastIndex) with(c *client, prefixes []string) *bcastIndex {
	next := ix.clone()
	for _, p := range prefixes {
		next.clients[p] = append(append([]*client(nil), next.clients[p]...), c)
	}
	return next.indexLens()
}

// without returns ix less c under each of prefixes, or nil when no prefix is
// left, which tells Invalidate there is no BCAST client at all.
func (ix *bcastIndex) without(c *client, prefixes []string) *bcastIndex {
	next := ix.clone()
	for _, p := range prefixes {
		var rest []*client
		for _, x := range next.clients[p] {
			if x != c {
				rest = append(rest, x)
			}
		}
		if len(rest) == 0 {
			delete(next.clients, p)
		} else {
			next.clients[p] = rest
		}
	}
	if len(next.clients) == 0 {
		return nil
	}
	return next.indexLens()
}

func (ix *bcastIndex) clone() *bcastIndex {
	if ix == nil {
		return &bcastIndex{clients: make(map[string][]*client)}
	}
	return &bcastIndex{clients: maps.Clone(ix.clients)}
}

func (ix *bcastIndex) indexLens() *bcastIndex {
	seen := make(map[int]bool)
	for p := range ix.clients {
		if !seen[len(p)] {
			seen[len(p)] = true
			ix.lens = append(ix.lens, len(p))
		}
	}
	slices.Sort(ix.lens)
	return ix
}
