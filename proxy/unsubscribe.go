package proxy

import (
	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/resp"
)

// unsubscribed answers (P|S)UNSUBSCRIBE for a client that is not subscribed,
// as Redis does: a confirmation for each channel named, or one with a nil
// channel when none is, each counting 0 subscriptions left (pushes in RESP3).
// Redis answers one such request with several replies, which would throw a
// shared connection's replies out of step with its requests: the proxy must
// not forward it.
func (c *client) unsubscribed(kind string, channels [][]byte) {
	start := len(c.arena)
	b := c.arena
	confirm := func(b []byte) []byte {
		if c.proto == 3 {
			b = resp.AppendPush(b, 3)
		} else {
			b = redcon.AppendArray(b, 3)
		}
		return redcon.AppendBulkString(b, kind)
	}
	if len(channels) == 0 {
		b = resp.AppendNull(confirm(b), c.proto)
		b = redcon.AppendInt(b, 0)
	}
	for _, ch := range channels {
		b = redcon.AppendBulk(confirm(b), ch)
		b = redcon.AppendInt(b, 0)
	}
	c.arena = b
	c.emit(c.arena[start:len(c.arena):len(c.arena)])
}
