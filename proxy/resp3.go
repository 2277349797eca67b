package proxy

import "github.com/cacheproxy/cacheproxy/resp"

// appendNull is the null reply in the client's protocol.
func (c *client) appendNull() []byte {
	start := len(c.arena)
	c.arena = resp.AppendNull(c.arena, c.proto)
	return c.arena[start:len(c.arena):len(c.arena)]
}

// appendVerbatim appends text as Redis sends CLIENT INFO, CLIENT LIST and
// INFO: a verbatim string of format txt in RESP3, a bulk string in RESP2.
func (c *client) appendVerbatim(text []byte) []byte {
	start := len(c.arena)
	c.arena = resp.AppendVerbatim(c.arena, "txt", text, c.proto)
	return c.arena[start:len(c.arena):len(c.arena)]
}
