package proxy

import (
	"github.com/cacheproxy/cacheproxy/invalidation"
)

// KeyspaceTarget is what the invalidation stream acts on: the proxy's L1 and
// its clients' CLIENT TRACKING, with the proxy's metrics counting what it does.
func (s *Server) KeyspaceTarget() invalidation.Target { return keyspaceTarget{s} }

// CachedPrefixes are the prefixes of the policies that cache, "" included
// when the default one does: every key the L1 may hold starts with one of
// them. Tracking mode is told of writes under these prefixes only.
func (s *Server) CachedPrefixes() []string {
	prefixes := []string{}
	for _, p := range s.policies.Load().set.All() {
		if p.Cache {
			prefixes = append(prefixes, p.Prefix)
		}
	}
	return prefixes
}

type keyspaceTarget struct{ s *Server }

func (t keyspaceTarget) Invalidate(db int, key []byte) {
	t.s.cache.Invalidate(db, key)
	t.s.track.Invalidate(key, 0)
	t.s.metrics.inv.keyspace.Inc()
}

func (t keyspaceTarget) InvalidateEveryDB(key []byte) {
	t.s.cache.InvalidateEveryDB(key)
	t.s.track.Invalidate(key, 0)
	t.s.metrics.inv.keyspace.Inc()
}

func (t keyspaceTarget) FlushAll() {
	t.s.cache.FlushAll()
	t.s.track.FlushAll()
	t.s.metrics.inv.flush.Inc()
}

// Suspend and Resume also tell tracking clients to drop everything: what
// changed while the stream was down is unknown, and a client that read
// meanwhile may hold what changed.
func (t keyspaceTarget) Suspend() {
	t.s.cache.Suspend()
	t.s.track.FlushAll()
	t.s.metrics.caching.Set(0)
	t.s.metrics.inv.flush.Inc()
}

func (t keyspaceTarget) Resume() {
	t.s.cache.Resume()
	t.s.track.FlushAll()
	t.s.metrics.caching.Set(1)
}
