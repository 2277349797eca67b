package proxy

import (
	"github.com/cacheproxy/cacheproxy/invalidation"
)

// KeyspaceTarget is what the invalidation stream acts on: the proxy's L1, with
// the proxy's metrics counting what it does.
func (s *Server) KeyspaceTarget() invalidation.Target { return keyspaceTarget{s} }

type keyspaceTarget struct{ s *Server }

func (t keyspaceTarget) Invalidate(db int, key []byte) {
	t.s.cache.Invalidate(db, key)
	t.s.metrics.inv.keyspace.Inc()
}

func (t keyspaceTarget) FlushAll() {
	t.s.cache.FlushAll()
	t.s.metrics.inv.flush.Inc()
}

func (t keyspaceTarget) Suspend() {
	t.s.cache.Suspend()
	t.s.metrics.caching.Set(0)
	t.s.metrics.inv.flush.Inc()
}

func (t keyspaceTarget) Resume() {
	t.s.cache.Resume()
	t.s.metrics.caching.Set(1)
}
