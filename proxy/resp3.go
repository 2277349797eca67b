package proxy

import (
	"strings"

	"github.com/cacheproxy/cacheproxy/resp"
)

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

// debugPush reports DEBUG PROTOCOL push. In RESP3 Redis answers it with a
// push and then a reply, two frames for one command, where an upstream
// connection expects one reply a request: the push would be taken for the
// reply, and every later reply on that connection, other clients' included,
// for the reply of the request before it. Inside MULTI the push lands within
// EXEC's array. The proxy refuses it in RESP3; in RESP2 Redis refuses it.
func debugPush(args [][]byte) bool {
	return len(args) == 3 && strings.EqualFold(string(args[1]), "protocol") && strings.EqualFold(string(args[2]), "push")
}

func (c *client) refuseDebugPush() {
	if c.tx != nil && c.tx.multi {
		c.tx.aborted = true // as Redis aborts after an error while queueing
	}
	c.emitError("ERR cacheproxy: DEBUG PROTOCOL push is not supported through the proxy: its push and its reply would be taken for two replies")
}
