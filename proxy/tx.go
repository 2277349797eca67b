package proxy

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// txState is a client's hold on a dedicated upstream connection for MULTI or
// WATCH, or for one blocking command: each leaves state on the connection, or
// holds it, so it must not be shared.
type txState struct {
	conn  upstream.Session
	multi bool
	// db is the database the connection will be in after the queued commands
	// run: SELECT inside MULTI takes effect at EXEC. connDB is the one it is in
	// now.
	db, connDB int
	proto      int // the connection's RESP version, the client's when it began
	// queued are the writes queued since MULTI, copied, invalidated at EXEC.
	queued []queuedWrite
	// aborted: the proxy refused a command inside MULTI, so EXEC must discard
	// the transaction, as Redis does after an error while queueing.
	aborted bool
	// clean: the reply that ended the session proves the connection holds no
	// MULTI or WATCH state; dirty: it may hold other state (a SELECT inside
	// MULTI, whose effect depends on EXEC). Only a clean connection that is not
	// dirty is used again.
	clean, dirty bool
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
	conn, err := c.s.dedicated(c.db, c.proto)
	if err != nil {
		c.emitUpstreamError(err)
		return
	}
	c.tx = &txState{conn: conn, db: c.db, connDB: c.db, proto: c.proto}
	c.txCommand(cmd)
}

// txCommand runs a command while the client holds a dedicated connection.
// Nothing is answered from the L1 here: reads inside MULTI are queued by Redis,
// and under WATCH they go to the watching connection.
func (c *client) txCommand(cmd redcon.Command) {
	args := cmd.Args
	tx := c.tx
	if rt := route(args[0]); rt.kind == routeLocal {
		switch {
		case rt.name == "quit" || rt.name == "reset":
			c.local(rt, cmd)
			return
		case !tx.multi && rt.name != "multi" && rt.name != "watch" && rt.name != "select":
			// Under WATCH alone the connection's own commands are the
			// proxy's, as outside a transaction.
			c.local(rt, cmd)
			return
		case tx.multi && queueRefused(rt.name, args):
			// Redis would queue these and run them at EXEC on the upstream
			// connection, not on the client's: refuse them, and abort the
			// transaction as Redis does after an error while queueing.
			if msg := c.commandError(args); msg != "" {
				c.emitError(msg)
			} else {
				c.emitError("ERR cacheproxy: " + strings.ToUpper(string(args[0])) + " inside MULTI is not supported through the proxy")
			}
			tx.aborted = true
			return
		}
	}
	name := strings.ToLower(string(args[0]))
	info := c.s.cmds.Lookup(args)
	switch {
	case name == "exec" && tx.multi && tx.aborted:
		c.batch.Add(cmdDiscard) // ends the upstream's MULTI; its reply is not the client's
		c.slots = append(c.slots, slot{kind: slotData, data: replyExecAbort})
		tx.queued = nil
		tx.clean = false
		c.endTx()
		return
	case name == "exec" && tx.multi:
		c.slots = append(c.slots, slot{kind: slotTx, idx: c.batch.Add(cmd.Raw), aux: txExec})
		c.endTx()
		return
	case name == "discard" && tx.multi, name == "unwatch" && !tx.multi:
		c.slots = append(c.slots, slot{kind: slotTx, idx: c.batch.Add(cmd.Raw), aux: txEnd})
		c.endTx()
		return
	}
	idx := c.batch.Add(cmd.Raw)
	switch {
	case name == "multi":
		c.slots = append(c.slots, slot{kind: slotUp, idx: idx})
		if len(args) == 1 && !tx.multi {
			// Later commands of this pipeline are queued: they must be known
			// as such before MULTI's reply is.
			tx.multi = true
			c.multi.Store(0)
			c.setFlag(clientMulti, true)
			return
		}
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
	if tx.multi {
		c.multi.Add(1)
	} else if info != nil && info.Flags.Has(commands.Blocking) {
		// A blocking command under WATCH blocks the watching connection.
		c.flushWatched(tx.conn)
	}
}

// queueRefused lists what the proxy will not queue inside MULTI: commands
// that would change the upstream connection's own state (its subscriptions,
// user, name, protocol) where Redis would change the client's,
// notify-keyspace-events changes the cache cannot live with, and the
// UNSUBSCRIBE family naming several channels: Redis 7.0 puts a reply per
// channel in EXEC's array without counting them, and the extra ones would
// answer the connection's next commands, another client's perhaps.
func queueRefused(name string, args [][]byte) bool {
	switch name {
	case "subscribe", "psubscribe", "ssubscribe", "auth", "hello", "client",
		"monitor", "sync", "psync", "replconf":
		return true
	case "unsubscribe", "punsubscribe", "sunsubscribe":
		return len(args) > 2
	case "config":
		for i := 2; i+1 < len(args); i += 2 {
			if strings.EqualFold(string(args[i]), "notify-keyspace-events") && !invalidation.KeyspaceEventsSufficient(string(args[i+1])) {
				return true
			}
		}
	}
	return false
}

var (
	cmdDiscard     = []byte("*1\r\n$7\r\nDISCARD\r\n")
	replyExecAbort = []byte("-EXECABORT Transaction discarded because of previous errors.\r\n")
)

const (
	txExec = iota
	txEnd  // DISCARD, or UNWATCH outside MULTI
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
		ran := len(reply) > 0 && reply[0] == '*' && !isNil(reply)
		if ran {
			c.db = tx.db
			c.publish()
		}
		// An array (nil when a watched key changed) or EXECABORT: either way
		// Redis has ended the transaction and dropped every WATCH.
		tx.clean = (len(reply) > 0 && reply[0] == '*') || strings.HasPrefix(string(reply), "-EXECABORT")
	case txEnd:
		tx.clean = string(reply) == "+OK\r\n"
	case txSelect:
		db, err := strconv.Atoi(string(s.args[1]))
		// A cluster queues SELECT of another database and refuses it at EXEC.
		if err == nil && len(reply) > 0 && reply[0] == '+' && !(c.s.cluster && db != 0) {
			tx.db = db
			if tx.multi {
				tx.dirty = true
			} else {
				c.db, tx.connDB = db, db
				c.publish()
			}
		}
	}
}

// endTx runs the segment on the dedicated connection now and hands the
// connection back, so that what the client pipelined after EXEC or DISCARD
// takes the shared path.
func (c *client) endTx() {
	c.flush()
	tx := c.tx
	c.tx = nil
	c.multi.Store(-1)
	c.setFlag(clientMulti, false)
	c.s.idle.put(tx)
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

// blocking runs a command that may block (BLPOP, XREAD BLOCK, WAIT) or run
// long (a script) on a connection of its own, so that it never holds up other
// clients' commands. The client's later commands wait behind it, as on Redis.
// While a blocking command waits, the client is watched (flushWatched): one
// that leaves frees the connection. A script is not: closing its connection
// would not stop it.
func (c *client) blocking(cmd redcon.Command, info *commands.Info, watch bool) {
	conn, err := c.s.dedicated(c.db, c.proto)
	if err != nil {
		c.emitUpstreamError(err)
		return
	}
	c.tx = &txState{conn: conn, db: c.db, connDB: c.db, proto: c.proto}
	idx := c.batch.Add(cmd.Raw)
	if writes(info) {
		c.slots = append(c.slots, slot{kind: slotWrite, idx: idx, info: info, args: cmd.Args})
	} else {
		c.slots = append(c.slots, slot{kind: slotUp, idx: idx})
	}
	if watch {
		c.flushWatched(conn)
	} else {
		c.flush()
	}
	tx := c.tx
	c.tx = nil
	tx.clean = true // a blocking command leaves no state once answered
	c.s.idle.put(tx)
}

// flushWatched flushes a segment that may block upstream for long, watching
// the client meanwhile: if it disconnects, conn is closed, which ends the
// wait and frees the upstream of the blocked command.
func (c *client) flushWatched(conn upstream.Session) {
	// The replies before the blocking command wait in redcon's buffer until
	// it returns: store their fills now, not after the wait.
	c.storeFills()
	c.setFlag(clientBlocked, true)
	stop := c.cc.raw.watch(conn.Close)
	c.flush()
	stop()
	c.setFlag(clientBlocked, false)
}

// idleConns keeps dedicated connections whose session ended cleanly, a few
// per database, so that a client running a transaction per request (a rate
// limiter, say) does not pay a connect and handshake each time. A connection
// idle for longer than idleFor is closed instead of used: the upstream may
// have dropped it meanwhile (its timeout), and nothing is ever retried.
type idleConns struct {
	mu     sync.Mutex // guards byDB, closed
	byDB   map[idleKey][]idleConn
	closed bool
}

// idleKey: a connection serves only clients of its database and protocol.
type idleKey struct{ db, proto int }

type idleConn struct {
	conn  upstream.Session
	since time.Time
}

const (
	maxIdlePerDB = 16
	idleFor      = 10 * time.Second
)

// dedicated returns an idle connection to db in protocol proto, or a new one.
func (s *Server) dedicated(db, proto int) (upstream.Session, error) {
	if conn := s.idle.take(idleKey{db, proto}); conn != nil {
		return conn, nil
	}
	if proto == 3 {
		return s.up3.Dedicated(s.ctx, db)
	}
	return s.up.Dedicated(s.ctx, db)
}

func (p *idleConns) take(k idleKey) upstream.Session {
	p.mu.Lock()
	var stale []upstream.Session
	var got upstream.Session
	for l := p.byDB[k]; len(l) > 0 && got == nil; l = p.byDB[k] {
		ic := l[len(l)-1]
		l[len(l)-1] = idleConn{}
		p.byDB[k] = l[:len(l)-1]
		if time.Since(ic.since) < idleFor && ic.conn.Usable() {
			got = ic.conn
		} else {
			stale = append(stale, ic.conn)
		}
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.Close()
	}
	return got
}

// put keeps tx's connection for reuse if its session left it clean, and
// closes it otherwise.
func (p *idleConns) put(tx *txState) {
	if tx == nil {
		return
	}
	if tx.clean && !tx.dirty && tx.conn.Err() == nil {
		p.mu.Lock()
		k := idleKey{tx.connDB, tx.proto}
		if !p.closed && len(p.byDB[k]) < maxIdlePerDB {
			if p.byDB == nil {
				p.byDB = make(map[idleKey][]idleConn)
			}
			p.byDB[k] = append(p.byDB[k], idleConn{conn: tx.conn, since: time.Now()})
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
	tx.conn.Close()
}

func (p *idleConns) close() {
	p.mu.Lock()
	p.closed = true
	all := p.byDB
	p.byDB = nil
	p.mu.Unlock()
	for _, l := range all {
		for _, ic := range l {
			ic.conn.Close()
		}
	}
}

// invalidateWrite drops from the L1 what a write may have changed. Commands
// that change many keys at once, or keys in another database, are handled by
// name; for the rest the upstream's key specifications say which keys, and a
// command whose keys cannot all be found flushes its database.
func (c *client) invalidateWrite(db int, info *commands.Info, args [][]byte) {
	m := c.s.metrics
	// Tracking clients are told by key name alone, in no database, as
	// Redis tells them.
	track := c.s.track
	switch info.Name {
	case "flushdb":
		c.s.cache.FlushDB(db)
		track.FlushAll()
		m.inv.flush.Inc()
		return
	case "flushall":
		c.s.cache.FlushAll()
		track.FlushAll()
		m.inv.flush.Inc()
		return
	case "swapdb":
		for _, a := range args[1:] {
			if n, err := strconv.Atoi(string(a)); err == nil {
				c.s.cache.FlushDB(n)
			}
		}
		track.FlushAll()
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
		track.Invalidate(k, c.id)
		m.inv.write.Inc()
	}
	clear(keys)
	c.keys = keys[:0]
	if !complete {
		c.s.cache.FlushDB(db)
		track.FlushAll()
		m.inv.flush.Inc()
	}
}
