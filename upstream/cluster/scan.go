package cluster

import (
	"strconv"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/resp"
)

// SCAN walks the masters in turn, each from cursor 0 to its end. The cursor
// the client sees carries both: the node's own cursor shifted left by
// scanNodeBits, and the master's index (in Topology.Masters order) in the low
// bits. A node's cursor is below its hash table's size, far below the 2^54
// this leaves it. A resharding during a walk may, as on one Redis during a
// rehash, return a key twice; it never skips one that stayed put.
const scanNodeBits = 10

// scan plans SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
func (w *work) scan(args [][]byte) {
	if len(args) < 2 {
		w.one(buildArgs(w, args), -1, w.anyNode()) // the node's arity error
		return
	}
	cur, err := strconv.ParseUint(string(args[1]), 10, 64)
	node := int(cur & (1<<scanNodeBits - 1))
	if err != nil || node >= len(w.top.masters) {
		w.local(replyBadCursor)
		return
	}
	start := len(w.arena)
	w.arena = redcon.AppendArray(w.arena, len(args))
	w.arena = redcon.AppendBulk(w.arena, args[0])
	w.arena = redcon.AppendBulkString(w.arena, strconv.FormatUint(cur>>scanNodeBits, 10))
	for _, a := range args[2:] {
		w.arena = redcon.AppendBulk(w.arena, a)
	}
	req := w.arena[start:len(w.arena):len(w.arena)]
	w.calls = append(w.calls, call{how: scan, first: len(w.parts), n: 1, node: node})
	w.parts = append(w.parts, part{req: req, addr: w.top.masters[node], slot: -1})
}

// buildArgs encodes args as a command in the arena.
func buildArgs(w *work, args [][]byte) []byte {
	start := len(w.arena)
	w.arena = redcon.AppendArray(w.arena, len(args))
	for _, a := range args {
		w.arena = redcon.AppendBulk(w.arena, a)
	}
	return w.arena[start:len(w.arena):len(w.arena)]
}

// scanReply rewrites a node's SCAN reply, [cursor, keys], with the cursor the
// client continues from.
func (w *work) scanReply(c *call, reply []byte) []byte {
	if len(reply) == 0 || reply[0] != '*' {
		return reply
	}
	n, body, ok := resp.ArrayBody(reply)
	if !ok || n != 2 {
		return reply
	}
	l, ok := resp.BulkLen(body)
	if !ok {
		return reply
	}
	hdr := len(strconv.Itoa(l)) + 3 // "$<l>\r\n"
	if len(body) < hdr+l+2 {
		return reply
	}
	cur, err := strconv.ParseUint(string(body[hdr:hdr+l]), 10, 64)
	if err != nil || cur >= 1<<(64-scanNodeBits) {
		return []byte("-ERR cacheproxy: a node's SCAN cursor is too large to carry\r\n")
	}
	rest := body[hdr+l+2:]
	var next uint64
	switch {
	case cur != 0:
		next = cur<<scanNodeBits | uint64(c.node)
	case c.node+1 < len(w.top.masters):
		next = uint64(c.node + 1)
	}
	start := len(w.arena)
	w.arena = redcon.AppendArray(w.arena, 2)
	w.arena = redcon.AppendBulkString(w.arena, strconv.FormatUint(next, 10))
	w.arena = append(w.arena, rest...)
	return w.arena[start:len(w.arena):len(w.arena)]
}
