package proxy

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/policy"
	"github.com/cacheproxy/cacheproxy/resp"
)

// adminHelp is CACHEPROXY HELP's reply, one line per element as Redis's HELP
// subcommands give it.
var adminHelp = []string{
	"CACHEPROXY <subcommand> [<arg> ...]. Subcommands are:",
	"POLICY <key>",
	"    Which caching policy applies to <key>, and why.",
	"STATS",
	"    Hits, misses and hit ratio per policy; memory and entries per L1 pool;",
	"    invalidations by source.",
	"FLUSH [<prefix>]",
	"    Drop the L1 entries of keys starting with <prefix> (every entry without",
	"    one). Redis is not touched.",
	"HELP",
	"    Print this help.",
}

// admin answers CACHEPROXY, the operator's commands. They concern the proxy
// itself and never reach the upstream. Replies are maps of names to values:
// RESP3 maps, and in RESP2 arrays of name and value pairs, which redis-cli
// prints one per line and clients read as maps.
func (c *client) admin(args [][]byte) {
	if len(args) < 2 {
		c.emitError(arityError("cacheproxy"))
		return
	}
	sub := strings.ToLower(string(args[1]))
	switch {
	case sub == "policy" && len(args) == 3:
		c.emitBuilt(c.s.appendPolicy(c.arena, args[2], c.proto))
	case sub == "stats" && len(args) == 2:
		c.emitBuilt(c.s.appendStats(c.arena, c.proto))
	case sub == "flush" && len(args) <= 3:
		var prefix []byte
		if len(args) == 3 {
			prefix = args[2]
		}
		c.emitBuilt(c.s.appendFlush(c.arena, prefix))
	case sub == "help" && len(args) == 2:
		b := redcon.AppendArray(c.arena, len(adminHelp))
		for _, line := range adminHelp {
			b = redcon.AppendString(b, line)
		}
		c.emitBuilt(b)
	case sub == "policy" || sub == "stats" || sub == "flush" || sub == "help":
		c.emitError(arityError("cacheproxy|" + sub))
	default:
		c.emitError("ERR unknown subcommand '" + sanitize(truncate(args[1], 128)) + "'. Try CACHEPROXY HELP.")
	}
}

// emitBuilt emits what was appended to c.arena since its current end.
func (c *client) emitBuilt(b []byte) {
	start := len(c.arena)
	c.arena = b
	c.emit(c.arena[start:len(c.arena):len(c.arena)])
}

// appendPolicy appends CACHEPROXY POLICY's reply for key.
func (s *Server) appendPolicy(b []byte, key []byte, proto int) []byte {
	ps := s.policies.Load()
	p := ps.set.Lookup(key)
	var matches []string
	for _, m := range ps.set.Matches(key) {
		if !ps.set.Implicit(m) {
			matches = append(matches, m.Prefix)
		}
	}
	var source, why string
	switch {
	case ps.set.Implicit(p):
		source = "implicit default"
		why = `no policy prefix matches and the list has no "" policy: not cached`
	default:
		source = "policies[" + strconv.Itoa(p.Index) + "]"
		why = "longest of the matching prefixes " + quoteAll(matches)
		if len(matches) == 1 {
			why = "the only matching prefix"
		}
	}
	b = resp.AppendMapOrArray(b, 9, proto)
	b = appendPair(b, "key", string(key))
	b = appendPair(b, "policy", p.Prefix)
	b = appendPair(b, "source", source)
	b = appendPair(b, "why", why)
	b = appendPair(b, "cache", yesNo(p.Cache))
	b = appendPair(b, "ttl", p.TTL.String())
	b = appendPair(b, "cache_nil", yesNo(p.CacheNil))
	b = redcon.AppendBulkString(b, "max_value_bytes")
	b = redcon.AppendInt(b, p.MaxValueBytes)
	pool := "-"
	if p.Cache {
		pool = s.cache.names[ps.rules[p.Index].pool]
	}
	return appendPair(b, "pool", pool)
}

// appendStats appends CACHEPROXY STATS's reply.
func (s *Server) appendStats(b []byte, proto int) []byte {
	ps := s.policies.Load()
	m := s.metrics
	var cached []*policy.Policy
	for _, p := range ps.set.All() {
		if p.Cache {
			cached = append(cached, p)
		}
	}
	b = resp.AppendMapOrArray(b, 4, proto)

	b = redcon.AppendBulkString(b, "policies")
	b = redcon.AppendArray(b, len(cached))
	for _, p := range cached {
		r := &ps.rules[p.Index]
		hits, misses := r.hits.value(), r.misses.value()
		ratio := "-"
		if hits+misses > 0 {
			ratio = strconv.FormatFloat(float64(hits)/float64(hits+misses), 'f', 4, 64)
		}
		b = resp.AppendMapOrArray(b, 5, proto)
		b = appendPair(b, "policy", p.Prefix)
		b = appendPair(b, "pool", s.cache.names[r.pool])
		b = appendCount(b, "hits", int64(hits))
		b = appendCount(b, "misses", int64(misses))
		b = appendPair(b, "hit_ratio", ratio)
	}

	b = redcon.AppendBulkString(b, "pools")
	b = redcon.AppendArray(b, len(s.cache.caches))
	for i, c := range s.cache.caches {
		st := c.Stats()
		b = resp.AppendMapOrArray(b, 9, proto)
		b = appendPair(b, "pool", s.cache.names[i])
		b = appendCount(b, "max_bytes", c.MaxBytes())
		b = appendCount(b, "bytes", st.Bytes)
		b = appendCount(b, "entries", st.Entries)
		b = appendCount(b, "evictions", st.Evictions)
		b = appendCount(b, "fills_stored", st.Stored)
		b = appendCount(b, "fills_dropped_stale", st.DroppedStale)
		b = appendCount(b, "fills_dropped_rejected", st.DroppedReject)
		b = appendCount(b, "fills_dropped_too_large", st.DroppedTooLarge)
	}

	b = redcon.AppendBulkString(b, "invalidations")
	b = resp.AppendMapOrArray(b, 5, proto)
	b = appendCount(b, "write", counterValue(m.inv.write))
	b = appendCount(b, "keyspace", counterValue(m.inv.keyspace))
	b = appendCount(b, "flush", counterValue(m.inv.flush))
	b = appendCount(b, "admin", counterValue(m.inv.admin))
	b = appendCount(b, "reload", counterValue(m.inv.reload))

	var g dto.Metric
	_ = m.caching.Write(&g)
	return appendCount(b, "caching_enabled", int64(g.GetGauge().GetValue()))
}

// appendFlush flushes the L1 under prefix and appends a status line saying
// which policies' entries went.
func (s *Server) appendFlush(b []byte, prefix []byte) []byte {
	flushed := s.FlushPrefix(prefix)
	switch {
	case len(prefix) == 0:
		return redcon.AppendString(b, "OK flushed every L1 pool")
	case len(flushed) == 0:
		return redcon.AppendString(b, "OK no policy that caches covers that prefix: nothing to flush")
	}
	return redcon.AppendString(b, "OK flushed the L1 entries of policies "+quoteAll(flushed))
}

func appendPair(b []byte, name, value string) []byte {
	b = redcon.AppendBulkString(b, name)
	return redcon.AppendBulkString(b, value)
}

func appendCount(b []byte, name string, n int64) []byte {
	b = redcon.AppendBulkString(b, name)
	return redcon.AppendInt(b, n)
}

func counterValue(c prometheus.Counter) int64 {
	var d dto.Metric
	_ = c.Write(&d)
	return int64(d.GetCounter().GetValue())
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

// quoteAll lists prefixes as Go-quoted strings, so that "" and binary bytes
// show; status replies cannot hold a line break, which quoting escapes.
func quoteAll(prefixes []string) string {
	out := make([]string, len(prefixes))
	for i, p := range prefixes {
		out[i] = strconv.Quote(p)
	}
	return strings.Join(out, ", ")
}
