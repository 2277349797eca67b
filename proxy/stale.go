package proxy

import (
	"errors"

	"github.com/cacheproxy/cacheproxy/l1"
	"github.com/cacheproxy/cacheproxy/policy"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// staleIfError returns the reply to answer f's read with instead of the
// upstream's error, when p allows it (StaleIfError) and the batch failed for
// want of a connection, not because Redis refused it (a *upstream.ReplyError:
// Redis is there and answers, busy or loading, and a client connected
// directly would get that error). The reply is the key's last one the L1
// stored, no older than p.StaleIfError: see l1.Last for what it may have
// missed.
func (c *client) staleIfError(f *l1.Fill, p *policy.Policy) ([]byte, bool) {
	var re *upstream.ReplyError
	if err := c.batch.Err(); err == nil || errors.As(err, &re) {
		return nil, false
	}
	last := f.Cache().Last()
	if last == nil {
		return nil, false
	}
	reply, age, ok := last.Get(f, p.StaleIfError)
	if !ok {
		return nil, false
	}
	c.s.metrics.staleServed.WithLabelValues(p.Prefix).Inc()
	if c.s.cache.tracing() {
		db, key := f.Key()
		c.s.log.Debug("STALE", "db", db, "key", string(key), "age", age, "policy", p.Prefix, "err", c.batch.Err())
	}
	return reply, true
}
