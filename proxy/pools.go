package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync/atomic"
	"time"

	"github.com/cacheproxy/cacheproxy/l1"
	"github.com/cacheproxy/cacheproxy/policy"
)

// DefaultPool names the L1 pool given as Options.Cache.
const DefaultPool = "default"

// pools are the L1's memory pools: separate caches, each with a budget of its
// own, so that a flood of entries in one never evicts another's. Reads go to
// the pool of the key's policy (policyState); everything that drops entries
// reaches every pool, since a reload may have moved a key's policy from one
// pool to another while a fill of it was in flight.
type pools struct {
	names  []string // names[0] is DefaultPool
	caches []*l1.Cache
	log    *slog.Logger
	// trace caches whether log takes debug records: the per-key HIT, MISS,
	// FILL and INVALIDATE lines. A handler's Enabled is an interface call the
	// hit path should not pay for.
	trace atomic.Bool
}

func newPools(def *l1.Cache, named map[string]*l1.Cache, log *slog.Logger) (*pools, error) {
	p := &pools{names: []string{DefaultPool}, caches: []*l1.Cache{def}, log: log}
	p.trace.Store(log.Enabled(context.Background(), slog.LevelDebug))
	for _, name := range sortedKeys(named) {
		if name == DefaultPool || name == "" {
			return nil, fmt.Errorf("proxy: Options.Pools: %q is the default pool's name (Options.Cache)", name)
		}
		if named[name] == nil {
			return nil, fmt.Errorf("proxy: Options.Pools[%q] is nil", name)
		}
		p.names = append(p.names, name)
		p.caches = append(p.caches, named[name])
	}
	return p, nil
}

// index returns the position of the pool a policy names ("" is the default).
func (p *pools) index(name string) (int, bool) {
	if name == "" {
		return 0, true
	}
	for i, n := range p.names {
		if n == name {
			return i, true
		}
	}
	return 0, false
}

func (p *pools) tracing() bool { return p.trace.Load() }

// LogLevelChanged makes the server notice that its logger's level changed:
// debug turns the per-key HIT, MISS, FILL and INVALIDATE lines on.
func (s *Server) LogLevelChanged() {
	s.cache.trace.Store(s.log.Enabled(context.Background(), slog.LevelDebug))
}

// store stores f, resolved with ttl, on the pool it was begun on.
func (p *pools) store(f *l1.Fill, ttl time.Duration) {
	stored := f.Cache().Store(f)
	if p.tracing() {
		db, key := f.Key()
		p.log.Debug("FILL", "db", db, "key", string(key), "stored", stored, "ttl", ttl, "bytes", len(f.Wait()))
	}
}

func (p *pools) Invalidate(db int, key []byte) {
	for _, c := range p.caches {
		c.Invalidate(db, key)
	}
	if p.tracing() {
		p.log.Debug("INVALIDATE", "db", db, "key", string(key))
	}
}

func (p *pools) InvalidateEveryDB(key []byte) {
	for _, c := range p.caches {
		c.InvalidateEveryDB(key)
	}
	if p.tracing() {
		p.log.Debug("INVALIDATE", "db", "all", "key", string(key))
	}
}

func (p *pools) FlushDB(db int) {
	for _, c := range p.caches {
		c.FlushDB(db)
	}
}

func (p *pools) FlushAll() {
	for _, c := range p.caches {
		c.FlushAll()
	}
}

func (p *pools) Suspend() {
	for _, c := range p.caches {
		c.Suspend()
	}
}

func (p *pools) Resume() {
	for _, c := range p.caches {
		c.Resume()
	}
}

// Wait waits for every pool to apply what it was handed (tests).
func (p *pools) Wait() {
	for _, c := range p.caches {
		c.Wait()
	}
}

// Stats adds up every pool's.
func (p *pools) Stats() l1.Stats {
	var t l1.Stats
	for _, c := range p.caches {
		s := c.Stats()
		t.Entries += s.Entries
		t.Bytes += s.Bytes
		t.Stored += s.Stored
		t.DroppedStale += s.DroppedStale
		t.DroppedReject += s.DroppedReject
		t.DroppedTooLarge += s.DroppedTooLarge
		t.Declined += s.Declined
		t.Evictions += s.Evictions
		t.Invalidations += s.Invalidations
		t.Flushes += s.Flushes
	}
	return t
}

// policyState pairs a policy set with what each policy reads and counts
// through, so that a reload swaps all of it at once and the hit path looks up
// nothing but the policy.
type policyState struct {
	set   *policy.Set
	rules []rule // by Policy.Index
}

// rule is one policy's view of its pool. The view's tag identifies the
// policy's definition: a reload that keeps a policy as it was keeps its tag,
// and with it the entries stored under it; one that changes or drops it, or a
// CACHEPROXY FLUSH of it, gives it a new tag, which hides every entry stored
// under the old one at once.
type rule struct {
	view         l1.View
	pool         int
	hits, misses *shardedCounter
}

// SetPolicies replaces the policy set; commands already in progress finish
// under the old one. Entries stored under a policy that set changes or drops
// are dropped; those of policies it keeps as they were stay. It returns the
// prefixes whose entries were dropped, and fails, changing nothing, when a
// policy names a pool the server does not have.
func (s *Server) SetPolicies(set *policy.Set) (dropped []string, err error) {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	old := s.policies.Load()
	st := &policyState{set: set, rules: make([]rule, len(set.All()))}
	kept := map[string]bool{}
	for _, p := range set.All() {
		pool, ok := s.cache.index(p.Pool)
		if !ok {
			return nil, fmt.Errorf("proxy: policy %q: pool %q is not one of %q", p.Prefix, p.Pool, s.cache.names)
		}
		var tag uint64
		if o := old.find(p.Prefix); o != nil && samePolicy(*o, *p) {
			tag = old.rules[o.Index].view.Tag()
			kept[p.Prefix] = true
		} else {
			tag = s.nextTag.Add(1)
		}
		st.rules[p.Index] = rule{
			view:   s.cache.caches[pool].View(tag, int(min(p.MaxValueBytes, math.MaxInt))),
			pool:   pool,
			hits:   s.metrics.hits.child(p.Prefix),
			misses: s.metrics.misses.child(p.Prefix),
		}
	}
	if old != nil {
		for _, p := range old.set.All() {
			if p.Cache && !kept[p.Prefix] {
				dropped = append(dropped, p.Prefix)
				s.metrics.inv.reload.Inc()
			}
		}
	}
	s.policies.Store(st)
	return dropped, nil
}

// find returns the policy of st with prefix, or nil.
func (st *policyState) find(prefix string) *policy.Policy {
	if st == nil {
		return nil
	}
	for _, p := range st.set.All() {
		if p.Prefix == prefix {
			return p
		}
	}
	return nil
}

func samePolicy(a, b policy.Policy) bool {
	a.Index, b.Index = 0, 0
	return a == b
}

// FlushPrefix drops the L1 entries of every key that starts with prefix, from
// every pool, by giving new tags to the policies such keys can fall under: the
// policy of prefix itself, and those of longer prefixes that start with it.
// Keys of those policies that do not start with prefix are dropped too: a
// flush may take more than asked, never less. It returns the prefixes of the
// policies flushed; an empty prefix flushes every pool whole.
func (s *Server) FlushPrefix(prefix []byte) []string {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	old := s.policies.Load()
	var flushed []string
	if len(prefix) == 0 {
		s.cache.FlushAll()
		for _, p := range old.set.All() {
			if p.Cache {
				flushed = append(flushed, p.Prefix)
			}
		}
		s.metrics.inv.admin.Inc()
		return flushed
	}
	st := &policyState{set: old.set, rules: append([]rule(nil), old.rules...)}
	owner := old.set.Lookup(prefix)
	for _, p := range old.set.All() {
		if !p.Cache || p != owner && (len(p.Prefix) < len(prefix) || p.Prefix[:len(prefix)] != string(prefix)) {
			continue
		}
		r := &st.rules[p.Index]
		r.view = s.cache.caches[r.pool].View(s.nextTag.Add(1), r.view.MaxReply())
		flushed = append(flushed, p.Prefix)
		s.metrics.inv.admin.Inc()
	}
	s.policies.Store(st)
	return flushed
}

// lookup answers a cacheable read of key under policy p from p's pool, as of
// now on that pool's clock (0: read it), counting the hit or miss.
func (c *client) lookup(ps *policyState, p *policy.Policy, key, variant []byte, now int64) ([]byte, bool) {
	r := &ps.rules[p.Index]
	reply, ok := r.view.GetAt(c.db, key, variant, now)
	if ok {
		r.hits.add(c.id)
	} else {
		r.misses.add(c.id)
	}
	if c.s.cache.tracing() {
		what := "MISS"
		if ok {
			what = "HIT"
		}
		c.s.log.Debug(what, "db", c.db, "key", string(key), "policy", p.Prefix, "client", c.id)
	}
	return reply, ok
}

// begin starts or joins the fill of key under policy p, in p's pool.
func (c *client) begin(ps *policyState, p *policy.Policy, key, variant []byte) (*l1.Fill, bool) {
	return ps.rules[p.Index].view.Begin(c.db, key, variant)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
