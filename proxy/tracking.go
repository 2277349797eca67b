package proxy

import (
	"strconv"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/tracking"
)

// Client-side caching (CLIENT TRACKING) is served by the proxy itself, from
// what it already knows: the keys its own clients write (invalidateWrite) and
// the invalidation stream (KeyspaceTarget). The upstream never sees CLIENT
// TRACKING, so it works where the upstream refuses it. The tracking package
// keeps the table of who read what; this file feeds it the keys of a
// tracking client's reads and delivers what it sends: RESP3 invalidate
// pushes on the client's own connection, or __redis__:invalidate messages
// to a RESP2 REDIRECT target that is subscribed.

// trackCommand runs before each command of a client with tracking on: it
// remembers the keys of a read, when the client's OPTIN/OPTOUT settings say
// so, before the read is answered from the L1 or sent upstream, and then
// consumes CLIENT CACHING as Redis does (kept through MULTI until EXEC, and
// across CLIENT subcommands). A write's keys are invalidated before it is
// sent, as well as after.
func (c *client) trackCommand(rt *routeInfo, info *commands.Info, args [][]byte) {
	t := c.s.track
	if info != nil && writes(info) {
		// Invalidated as the client's own write now, and again once it has
		// run: the keyspace event of the write may reach the table first,
		// naming no writer, and NOLOOP must spare the client that one too.
		keys, _ := info.Keys(args, c.keys[:0])
		for _, k := range keys {
			t.Invalidate(k, c.id)
		}
		clear(keys)
		c.keys = keys[:0]
	}
	if t.ShouldTrack(c.id) {
		switch {
		case rt.kind == routeRead:
			t.Remember(c.id, args[1:2])
		case rt.kind == routeMGet:
			t.Remember(c.id, args[1:])
		case info != nil && info.Flags.Has(commands.ReadOnly):
			keys, _ := info.Keys(args, c.keys[:0])
			t.Remember(c.id, keys)
			clear(keys)
			c.keys = keys[:0]
		}
	}
	inMulti := c.tx != nil && c.tx.multi
	keep := rt.name == "client" || rt.name == "multi" ||
		inMulti && (info == nil || info.Name != "exec" && info.Name != "discard")
	t.CommandDone(c.id, keep)
}

// clientTracking answers CLIENT TRACKING, CACHING, GETREDIR and TRACKINGINFO.
func (c *client) clientTracking(sub string, args [][]byte) {
	t := c.s.track
	switch sub {
	case "tracking":
		exists := func(id int64) bool { return c.s.reg.get(id) != nil }
		if err := t.Tracking(c.id, args[2:], exists); err != nil {
			c.emitError(err.Error())
			return
		}
		c.tracking = t.Info(c.id).On
		c.emit(replyOK)
	case "caching":
		if err := t.Caching(c.id, args[2:]); err != nil {
			c.emitError(err.Error())
			return
		}
		c.emit(replyOK)
	case "getredir":
		c.emitInt(t.Info(c.id).Redirect)
	case "trackinginfo":
		in := t.Info(c.id)
		flags := in.Flags()
		start := len(c.arena)
		b := resp.AppendMapOrArray(c.arena, 3, c.proto)
		b = redcon.AppendBulkString(b, "flags")
		if c.proto == 3 {
			b = resp.AppendSet(b, len(flags))
		} else {
			b = redcon.AppendArray(b, len(flags))
		}
		for _, f := range flags {
			b = redcon.AppendBulkString(b, f)
		}
		b = redcon.AppendBulkString(b, "redirect")
		b = redcon.AppendInt(b, in.Redirect)
		b = redcon.AppendBulkString(b, "prefixes")
		b = redcon.AppendArray(b, len(in.Prefixes))
		for _, p := range in.Prefixes {
			b = redcon.AppendBulkString(b, p)
		}
		c.arena = b
		c.emit(c.arena[start:len(c.arena):len(c.arena)])
	}
}

// stopTracking turns the client's tracking off (RESET).
func (c *client) stopTracking() {
	if c.tracking {
		c.s.track.Forget(c.id)
		c.tracking = false
	}
}

// trackingSink delivers the table's messages to the proxy's clients.
type trackingSink struct{ s *Server }

var _ tracking.Sink = trackingSink{}

const (
	pushInvalidate = ">2\r\n$10\r\ninvalidate\r\n"
	// A RESP2 client receives them as messages of this channel on a
	// connection subscribed to it.
	messageInvalidate = "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n"
)

func (k trackingSink) Invalidate(target int64, key []byte) bool {
	c := k.s.reg.get(target)
	if c == nil {
		return false
	}
	b, ok := invalidationHeader(c)
	if ok {
		b = redcon.AppendArray(b, 1)
		c.cc.push(redcon.AppendBulk(b, key))
	}
	return true
}

func (k trackingSink) InvalidateAll(target int64) bool {
	c := k.s.reg.get(target)
	if c == nil {
		return false
	}
	if b, ok := invalidationHeader(c); ok {
		c.cc.push(resp.AppendNull(b, c.published().proto))
	}
	return true
}

func (k trackingSink) RedirectBroken(client, redirect int64) {
	c := k.s.reg.get(client)
	if c == nil || c.published().proto != 3 {
		return // RESP2 has no way to say it
	}
	b := []byte(">2\r\n$21\r\ntracking-redir-broken\r\n:")
	b = strconv.AppendInt(b, redirect, 10)
	c.cc.push(append(b, '\r', '\n'))
}

// invalidationHeader starts an invalidation message for c in its protocol:
// a push in RESP3; in RESP2 a pub/sub message, which only a subscribed
// connection can receive (Redis sends nothing otherwise).
func invalidationHeader(c *client) ([]byte, bool) {
	if c.published().proto == 3 {
		return []byte(pushInvalidate), true
	}
	if c.flags.Load()&clientPubSub == 0 {
		return nil, false
	}
	return []byte(messageInvalidate), true
}
