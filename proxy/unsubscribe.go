package proxy

import "github.com/tidwall/redcon"

// unsubscribed answers (P|S)UNSUBSCRIBE for a client that is not subscribed,
// as Redis does: a confirmation for each channel named, or one with a nil
// channel when none is, each counting 0 subscriptions left. Redis answers one
// such request with several replies, which would throw a shared connection's
// replies out of step with its requests: the proxy must not forward it.
func (c *client) unsubscribed(kind string, channels [][]byte) {
	start := len(c.arena)
	b := c.arena
	if len(channels) == 0 {
		b = redcon.AppendArray(b, 3)
		b = redcon.AppendBulkString(b, kind)
		b = redcon.AppendNull(b)
		b = redcon.AppendInt(b, 0)
	}
	for _, ch := range channels {
		b = redcon.AppendArray(b, 3)
		b = redcon.AppendBulkString(b, kind)
		b = redcon.AppendBulk(b, ch)
		b = redcon.AppendInt(b, 0)
	}
	c.arena = b
	c.emit(c.arena[start:len(c.arena):len(c.arena)])
}
