package proxy

import (
	"time"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/l1"
	"github.com/cacheproxy/cacheproxy/resp"
)

// variantMGet names MGET's per-key element. It is kept apart from GET's reply
// because the two differ: MGET answers nil for a key holding a hash, where GET
// answers WRONGTYPE.
// RESP3's is apart from RESP2's: a missing key is "_" in one, "$-1" in the other.
var variantMGet, variantMGet3 = []byte("mget"), []byte("3mget")

// mget answers what it can of an MGET from the L1 and fetches the rest in one
// upstream MGET, with each missing key's PTTL in the same round trip.
func (c *client) mget(cmd redcon.Command) {
	keys := cmd.Args[1:]
	ps := c.s.policies.Load()
	if c.writes {
		c.forward(cmd.Raw)
		return
	}
	variant := variantMGet
	if c.proto == 3 {
		variant = variantMGet3
	}
	start := len(c.elems)
	misses := 0
	// The clock is read once per pool, not once per key: the keys of one
	// MGET are all read at the same moment.
	var clock *l1.Cache
	var now int64
	for _, key := range keys {
		p := ps.set.Lookup(key)
		e := elem{pol: p}
		switch {
		case !p.Cache:
			e.lead = true // fetched, never stored
		default:
			if cache := ps.rules[p.Index].view.Cache(); cache != clock {
				clock, now = cache, cache.Now()
			}
			if reply, ok := c.lookup(ps, p, key, variant, now); ok {
				e.data = reply
				break
			}
			f, leader := c.begin(ps, p, key, variant)
			e.fill, e.lead = f, leader
		}
		if e.lead {
			e.pos = misses
			misses++
		}
		c.elems = append(c.elems, e)
	}
	s := slot{kind: slotMGet, aux: start, n: len(keys), idx: -1}
	if misses > 0 {
		// MGET of the misses, then a PTTL for each one being filled.
		reqStart := len(c.arena)
		c.arena = redcon.AppendArray(c.arena, misses+1)
		c.arena = redcon.AppendBulkString(c.arena, "MGET")
		for i, key := range keys {
			if c.elems[start+i].lead {
				c.arena = redcon.AppendBulk(c.arena, key)
			}
		}
		s.idx = c.batch.Add(c.arena[reqStart:len(c.arena):len(c.arena)])
		for i, key := range keys {
			if e := &c.elems[start+i]; e.lead && e.fill != nil {
				e.pttl = c.batch.Add(c.appendCommand("PTTL", key))
			}
		}
	}
	if misses == 0 && len(c.slots) == 0 {
		c.replyMGet(&s)
		return
	}
	c.slots = append(c.slots, s)
}

func (c *client) settleMGet(s *slot) {
	if s.idx < 0 {
		return
	}
	reply := c.upReply(s.idx)
	got, ok := resp.ArrayElems(reply, c.keys[:0])
	c.keys = got[:0]
	if !ok || len(got) != c.countLeaders(s) {
		got = nil // an error (or a broken upstream): every element gets it
	}
	for i := s.aux; i < s.aux+s.n; i++ {
		e := &c.elems[i]
		if !e.lead {
			continue
		}
		switch {
		case got == nil && e.fill != nil:
			e.data = append([]byte(nil), reply...) // followers may read it after this batch
		case got == nil:
			e.data = reply
		case e.fill != nil:
			e.data = append([]byte(nil), got[e.pos]...) // the L1 keeps it
		default:
			e.data = got[e.pos]
		}
		if e.fill != nil {
			ttl, store := fillTTL(e.pol, e.data, c.upReply(e.pttl), time.Since(c.sent))
			c.resolve(e.fill, e.data, ttl, store && got != nil)
		}
	}
	if got == nil {
		s.data = reply
	}
}

func (c *client) countLeaders(s *slot) int {
	n := 0
	for i := s.aux; i < s.aux+s.n; i++ {
		if c.elems[i].lead {
			n++
		}
	}
	return n
}

func (c *client) replyMGet(s *slot) {
	if s.data != nil {
		c.conn.WriteRaw(s.data) // the upstream MGET failed: its error is the reply
		return
	}
	// An element another client's MGET was fetching is an error when that
	// MGET failed: the error answers this MGET whole, as Redis never puts
	// one inside MGET's array.
	for i := s.aux; i < s.aux+s.n; i++ {
		e := &c.elems[i]
		if e.data == nil {
			e.data = e.fill.Wait()
		}
		if len(e.data) > 0 && e.data[0] == '-' {
			c.conn.WriteRaw(e.data)
			return
		}
	}
	start := len(c.arena)
	c.arena = redcon.AppendArray(c.arena, s.n)
	c.conn.WriteRaw(c.arena[start:])
	for i := s.aux; i < s.aux+s.n; i++ {
		c.conn.WriteRaw(c.elems[i].data)
	}
}
