package proxy

import (
	"strconv"
	"strings"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// txState is a client's hold on a dedicated upstream connection for MULTI or
// WATCH: both leave state on the connection, which must not be shared.
type txState struct {
	conn  *upstream.Conn
	multi bool
	// db is the database the connection will be in after the queued commands
	// run: SELECT inside MULTI takes effect at EXEC.
	db int
	// queued are the writes queued since MULTI, copied, invalidated at EXEC.
	queued []queuedWrite
}

type queuedWrite struct {
	db   int
	info *commands.Info
	args [][]byte
}

// beginTx moves the client onto a dedicated connection and sends MULTI or
// WATCH there.
func (c *client) beginTx(cmd redcon.Command) {
	c.flush()
	conn, err := c.s.up.Dedicated(c.s.ctx, c.db)
	if err != nil {
		c.emitError("ERR cacheproxy: upstream unavailable (" + sanitize(err.Error()) + ")")
		return
	}
	c.tx = &txState{conn: conn, db: c.db}
	c.txCommand(cmd)
}

// txCommand runs a command while the client holds a dedicated connection.
// Nothing is answered from the L1 here: reads inside MULTI are queued by Redis.
func (c *client) txCommand(cmd redcon.Command) {
	args := cmd.Args
	name := strings.ToLower(string(args[0]))
	switch name {
	case "quit", "reset":
		c.local(route(args[0]), cmd)
		return
	case "subscribe", "psubscribe", "ssubscribe", "monitor", "sync", "psync":
		c.local(route(args[0]), cmd)
		return
	}
	tx := c.tx
	info := c.s.cmds.Lookup(args)
	idx := c.batch.Add(cmd.Raw)
	switch {
	case name == "multi":
		tx.multi = true
		c.slots = append(c.slots, slot{kind: slotTx, idx: idx, aux: txMulti})
	case name == "exec":
		c.slots = append(c.slots, slot{kind: slotTx, idx: idx, aux: txExec})
		c.endTx()
	case name == "discard":
		c.slots = append(c.slots, slot{kind: slotTx, idx: idx, aux: txDiscard})
		c.endTx()
	case name == "unwatch" && !tx.multi:
		c.slots = append(c.slots, slot{kind: slotTx, idx: idx, aux: txDiscard})
		c.endTx()
	case name == "select" && len(args) == 2:
		c.slots = append(c.slots, slot{kind: slotTx, idx: idx, aux: txSelect, args: args})
	case info != nil && writes(info):
		if tx.multi {
			tx.queued = append(tx.queued, queuedWrite{db: tx.db, info: info, args: copyArgs(args)})
			c.slots = append(c.slots, slot{kind: slotUp, idx: idx})
		} else {
			c.slots = append(c.slots, slot{kind: slotWrite, idx: idx, info: info, args: args})
		}
	default:
		c.slots = append(c.slots, slot{kind: slotUp, idx: idx})
	}
}

const (
	txMulti = iota
	txExec
	txDiscard
	txSelect
)

// settleTx runs when the reply to a transaction-control command is known.
func (c *client) settleTx(s *slot) {
	reply := c.upReply(s.idx)
	tx := c.tx
	if tx == nil {
		return
	}
	switch s.aux {
	case txExec:
		// Whether EXEC ran or aborted, drop what it may have written.
		for _, w := range tx.queued {
			c.invalidateWrite(w.db, w.info, w.args)
		}
		if len(reply) > 0 && reply[0] == '*' && !isNil(reply) {
			c.db = tx.db
		}
	case txSelect:
		db, err := strconv.Atoi(string(s.args[1]))
		if err == nil && len(reply) > 0 && reply[0] == '+' {
			tx.db = db
			if !tx.multi {
				c.db = db
			}
		}
	}
}

// endTx runs the segment on the dedicated connection now and hands the
// connection back, so that what the client pipelined after EXEC or DISCARD
// takes the shared path.
func (c *client) endTx() {
	c.flush()
	c.release()
}

func copyArgs(args [][]byte) [][]byte {
	n := 0
	for _, a := range args {
		n += len(a)
	}
	buf := make([]byte, 0, n)
	out := make([][]byte, len(args))
	for i, a := range args {
		buf = append(buf, a...)
		out[i] = buf[len(buf)-len(a):]
	}
	return out
}

// blocking runs a command that may block (BLPOP, XREAD BLOCK, WAIT) on a
// connection of its own, so that it never holds up other clients' commands.
func (c *client) blocking(cmd redcon.Command) {
	conn, err := c.s.up.Dedicated(c.s.ctx, c.db)
	if err != nil {
		c.emitError("ERR cacheproxy: upstream unavailable (" + sanitize(err.Error()) + ")")
		return
	}
	c.tx = &txState{conn: conn, db: c.db}
	info := c.s.cmds.Lookup(cmd.Args)
	idx := c.batch.Add(cmd.Raw)
	if info != nil && writes(info) {
		c.slots = append(c.slots, slot{kind: slotWrite, idx: idx, info: info, args: cmd.Args})
	} else {
		c.slots = append(c.slots, slot{kind: slotUp, idx: idx})
	}
	c.endTx()
}

// invalidateWrite drops from the L1 what a write may have changed. Commands
// that change many keys at once, or keys in another database, are handled by
// name; for the rest the upstream's key specifications say which keys, and a
// command whose keys cannot all be found flushes its database.
func (c *client) invalidateWrite(db int, info *commands.Info, args [][]byte) {
	m := c.s.metrics
	switch info.Name {
	case "flushdb":
		c.s.cache.FlushDB(db)
		m.inv.flush.Inc()
		return
	case "flushall":
		c.s.cache.FlushAll()
		m.inv.flush.Inc()
		return
	case "swapdb":
		for _, a := range args[1:] {
			if n, err := strconv.Atoi(string(a)); err == nil {
				c.s.cache.FlushDB(n)
			}
		}
		m.inv.flush.Inc()
		return
	case "move":
		if len(args) == 3 {
			if n, err := strconv.Atoi(string(args[2])); err == nil {
				c.s.cache.Invalidate(n, args[1])
			}
		}
	case "copy":
		// COPY src dst DB n writes dst in database n.
		for i := 3; i+1 < len(args); i++ {
			if strings.EqualFold(string(args[i]), "db") {
				if n, err := strconv.Atoi(string(args[i+1])); err == nil {
					c.s.cache.Invalidate(n, args[2])
				}
			}
		}
	}
	keys, complete := info.Keys(args, c.keys[:0])
	for _, k := range keys {
		c.s.cache.Invalidate(db, k)
		m.inv.write.Inc()
	}
	clear(keys)
	c.keys = keys[:0]
	if !complete {
		c.s.cache.FlushDB(db)
		m.inv.flush.Inc()
	}
}
