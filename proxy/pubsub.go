package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net"
	"strings"
	"sync/atomic"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/resp"
)

// A client that subscribes gets an upstream connection of its own, in
// subscribed mode, and leaves redcon's loop (Detach): from then on one
// goroutine of the client's reads its commands and another, the pump, copies
// everything that arrives on the upstream connection to the client as it
// came, so replies and messages keep Redis's order and bytes.
//
// While the client may be subscribed, the commands Redis allows in RESP2
// subscribed mode ((P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, PING, QUIT, RESET) go
// straight to that connection, and Redis answers them there. Any other command
// first needs to know whether the client is still subscribed, which only the
// upstream knows once the earlier commands have run: the proxy sends a barrier,
// a PING with a token of its own, whose reply says it (a subscribed connection
// answers ["pong", token], another the bulk token) after every earlier reply. A
// subscribed client's command is then sent to the connection too, where Redis
// refuses it in its own words. A client no longer subscribed gives its
// upstream connection up, and its commands take the proxy's ordinary paths
// again; it stays detached, and a later SUBSCRIBE opens a new connection.
//
// RESP3 lets a subscribed client run any command, and Redis then interleaves
// replies and pushes. A RESP3 client's subscription commands go to its
// subscribed connection as above (so their confirmations and the messages keep
// Redis's order); its other commands, once a barrier has shown every earlier
// confirmation copied, take the proxy's ordinary paths, L1 included, while the
// pump goes on copying pushes between their replies.

// pubsub is a subscribed client's upstream connection and its pump.
type pubsub struct {
	up net.Conn
	// state is the client goroutine's knowledge of subscribed mode.
	state psState

	ping               []byte // the barrier request
	pongSub, pongPlain []byte // its replies in and out of subscribed mode
	barriers           atomic.Int32
	barrier            chan bool     // the pump's answer to a barrier: still subscribed?
	retired            atomic.Bool   // the client closed up on purpose: the pump leaves the client be
	done               chan struct{} // closed when the pump returns

	total int64 // the pump's: channels plus patterns, as Redis counts them
	resp3 bool  // the connection, and so its client, speaks RESP3
}

type psState uint8

const (
	psUnknown    psState = iota // commands sent since the last barrier may have changed it
	psSubscribed                // in RESP2 subscribed mode
)

func newPubSub(up net.Conn, proto int) *pubsub {
	var b [12]byte
	_, _ = rand.Read(b[:])
	token := "cacheproxy-barrier-" + hex.EncodeToString(b[:])
	ps := &pubsub{
		up:      up,
		barrier: make(chan bool, 1),
		done:    make(chan struct{}),
		resp3:   proto == 3,
	}
	ps.ping = redcon.AppendBulkString(redcon.AppendBulkString(redcon.AppendArray(nil, 2), "PING"), token)
	ps.pongPlain = redcon.AppendBulkString(nil, token)
	ps.pongSub = append(redcon.AppendBulkString(redcon.AppendArray(nil, 2), "pong"), ps.pongPlain...)
	return ps
}

// pubsubAllowed is whether Redis runs a command in RESP2 subscribed mode.
func pubsubAllowed(name string) bool {
	switch name {
	case "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
		"ping", "quit", "reset":
		return true
	}
	return false
}

// subscribe handles the (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE family outside
// MULTI. An UNSUBSCRIBE of a client that is not subscribed changes nothing and
// is answered here (unsubscribed).
func (c *client) subscribe(rt *routeInfo, cmd redcon.Command) {
	if c.ps == nil && strings.HasSuffix(rt.name, "unsubscribe") {
		c.unsubscribed(rt.name, cmd.Args[1:])
		return
	}
	c.flush() // earlier replies first
	if c.ps == nil {
		up, err := c.pool().Raw(c.s.ctx, c.db)
		if err != nil {
			c.emitUpstreamError(err)
			return
		}
		c.ps = newPubSub(up, c.proto)
		c.cc.pubsub.Store(true) // the pubsub output limit applies
		if c.dconn != nil {
			go c.ps.pump(c) // waited for by serveDetached
		}
	}
	c.ps.send(cmd.Raw)
	c.ps.state = psUnknown
	if c.dconn == nil {
		c.detach(cmd)
	}
}

// send writes a request to the subscribed connection. A failed write breaks
// the connection, which the pump sees.
func (ps *pubsub) send(req []byte) {
	if _, err := ps.up.Write(req); err != nil {
		ps.up.Close()
	}
}

// retire closes the upstream connection of a client that is no longer
// subscribed, and waits for its pump.
func (ps *pubsub) retire() {
	ps.retired.Store(true)
	ps.up.Close()
	<-ps.done
}

// detach takes the client out of redcon's loop, keeping a copy of what it
// pipelined after cmd (redcon reuses the buffer those commands live in). The
// client's goroutines start once redcon has let go of it (Server.closed).
func (c *client) detach(cmd redcon.Command) {
	for i := range c.cmds {
		if &c.cmds[i].Raw[0] == &cmd.Raw[0] {
			for _, r := range c.cmds[i+1:] {
				cp, err := redcon.Parse(append([]byte(nil), r.Raw...))
				if err == nil {
					c.rest = append(c.rest, cp)
				}
			}
			break
		}
	}
	c.dconn = c.conn.Detach()
	c.conn = nil // ends run() for this pipeline
}

// serveDetached is the detached client's goroutine: it reads and runs the
// client's commands until either side closes, then releases everything.
func (c *client) serveDetached() {
	c.conn = c.dconn
	if c.ps != nil {
		go c.ps.pump(c) // waited for below
	}
	if c.mon != nil {
		go c.mon.pump(c) // waited for below
	}
	for c.conn != nil {
		cmd, err := c.next()
		if err != nil {
			if strings.HasPrefix(err.Error(), "Protocol error") {
				c.wmu.Lock()
				c.conn.WriteError("ERR " + err.Error())
				_ = c.dconn.Flush()
				c.wmu.Unlock()
			}
			break
		}
		c.detachedCommand(cmd)
	}
	if c.ps != nil {
		c.ps.up.Close()
		<-c.ps.done
	}
	if c.mon != nil {
		c.mon.stop()
	}
	c.cc.Close()
	c.s.forget(c)
}

func (c *client) next() (redcon.Command, error) {
	if len(c.rest) > 0 {
		cmd := c.rest[0]
		c.rest[0] = redcon.Command{}
		c.rest = c.rest[1:]
		return cmd, nil
	}
	c.rest = nil
	return c.dconn.ReadCommand()
}

// detachedCommand runs one command of a detached client.
func (c *client) detachedCommand(cmd redcon.Command) {
	if c.mon != nil && c.monitorCommand(cmd) {
		return
	}
	if ps := c.ps; ps != nil {
		name := strings.ToLower(string(cmd.Args[0]))
		// In RESP3, PING is an ordinary command (orderedCommand): sent to the
		// subscribed connection, it could run after a later command.
		if pubsubAllowed(name) && (name != "ping" || c.proto != 3) {
			ps.send(cmd.Raw)
			switch name {
			case "ping":
			case "quit":
				// Redis answers and closes; the pump copies both.
				<-ps.done
				c.conn = nil
				return
			case "reset":
				c.resetState()
				ps.state = psUnknown
			default:
				ps.state = psUnknown
			}
			return
		}
		if ps.state == psUnknown {
			subscribed, ok := ps.sync()
			switch {
			case !ok:
				c.conn = nil
				return
			case subscribed:
				ps.state = psSubscribed
			default:
				ps.retire()
				c.ps = nil
				c.cc.pubsub.Store(false)
			}
		}
		// c.proto, not ps.resp3: a RESET sent to the subscribed connection
		// took it back to RESP2.
		if c.ps != nil && c.proto != 3 {
			if c.s.cluster {
				c.refuseSubscribed(cmd)
				return
			}
			ps.send(cmd.Raw) // refused by Redis, with its own error
			return
		}
		if c.ps != nil {
			c.orderedCommand(cmd) // RESP3: among the pushes, as Redis orders them
			return
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.cc.busy.Store(true)
	c.command(cmd)
	if c.conn != nil {
		c.flush()
		_ = c.dconn.Flush()
	}
}

// refuseSubscribed answers a command that RESP2's subscribed mode refuses,
// in front of a cluster: there a node checks where a command's keys live
// before whether the connection may run it, and would answer MOVED. Unknown
// commands and wrong arities, which a node judges first, still go to it.
func (c *client) refuseSubscribed(cmd redcon.Command) {
	info := c.s.cmds.Lookup(cmd.Args)
	if info == nil || !info.ArityOK(len(cmd.Args)) {
		c.ps.send(cmd.Raw)
		return
	}
	// Replies to what was sent before come first.
	if _, ok := c.ps.sync(); !ok {
		c.conn = nil
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.WriteError("ERR Can't execute '" + info.Name + "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
	_ = c.dconn.Flush()
}

// sync sends a barrier and waits for its answer; false means the upstream
// connection is gone.
func (ps *pubsub) sync() (subscribed, ok bool) {
	ps.barriers.Add(1)
	ps.send(ps.ping)
	select {
	case subscribed = <-ps.barrier:
		return subscribed, true
	case <-ps.done:
		return false, false
	}
}

// pump copies the subscribed connection's replies and messages to the client
// until that connection ends. Unless the client retired it, it then closes the
// client: Redis closing a subscriber's connection (QUIT, a kill, an output
// buffer limit, a restart) ends it.
func (ps *pubsub) pump(c *client) {
	defer close(ps.done)
	defer func() {
		if !ps.retired.Load() {
			c.cc.Close()
		}
	}()
	buf := make([]byte, 0, 16<<10)
	start := 0 // first byte not yet copied
	var sc resp.ReplyScanner
	for {
		if start == len(buf) {
			buf, start = buf[:0], 0
			if cap(buf) > 1<<20 {
				buf = make([]byte, 0, 16<<10)
			}
		}
		if len(buf) == cap(buf) {
			if start > 0 {
				n := copy(buf, buf[start:])
				buf, start = buf[:n], 0
			} else {
				buf = append(buf, 0)[:len(buf)]
			}
		}
		n, err := ps.up.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		wrote := false
		for start < len(buf) {
			l, serr := sc.Scan(buf[start:])
			if serr != nil {
				return
			}
			if l == 0 {
				break
			}
			sc = resp.ReplyScanner{}
			r := buf[start : start+l]
			start += l
			if ps.barriers.Load() > 0 && (bytes.Equal(r, ps.pongSub) || bytes.Equal(r, ps.pongPlain)) {
				if wrote {
					c.wmu.Lock()
					_ = c.dconn.Flush()
					c.wmu.Unlock()
					wrote = false
				}
				ps.barriers.Add(-1)
				// RESP3 answers PING alike in and out of subscribed mode:
				// the counts the confirmations left tell instead.
				ps.barrier <- r[0] == '*' || ps.resp3 && (ps.total > 0 || c.ssub.Load() > 0)
				continue
			}
			if c.s.cluster && (bytes.HasPrefix(r, replyMoved) || bytes.HasPrefix(r, replyAsk)) {
				// A cluster node refuses a shard channel of another
				// master's slot: a connection's shard channels must share
				// a slot, as in Redis Cluster, whose clients never see
				// where the others live.
				r = replyCrossSlot
			}
			ps.track(c, r)
			c.wmu.Lock()
			c.dconn.WriteRaw(r)
			c.wmu.Unlock()
			wrote = true
		}
		if wrote {
			c.wmu.Lock()
			_ = c.dconn.Flush()
			c.wmu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

var (
	replyMoved     = []byte("-MOVED ")
	replyAsk       = []byte("-ASK ")
	replyCrossSlot = []byte("-CROSSSLOT Keys in request don't hash to the same slot\r\n")
)

// track follows subscription confirmations to keep the client's counts for
// CLIENT LIST. Redis counts channels and patterns together and shard channels
// apart; each confirmation carries the count after it.
func (ps *pubsub) track(c *client, r []byte) {
	if string(r) == "+RESET\r\n" { // RESET unsubscribes from everything, silently
		ps.total = 0
		c.sub.Store(0)
		c.psub.Store(0)
		c.ssub.Store(0)
		c.setFlag(clientPubSub, false)
		return
	}
	if len(r) == 0 || r[0] != '*' && r[0] != '>' ||
		!bytes.HasPrefix(r[1:], []byte("3\r\n$")) || bytes.HasPrefix(r[1:], []byte("3\r\n$7\r\nmessage\r\n")) {
		return
	}
	if r[0] == '>' { // RESP3 confirms as a push: read it as the array it holds
		r = append([]byte{'*'}, r[1:]...)
	}
	var elems [3][]byte
	got, ok := resp.ArrayElems(r, elems[:0])
	if !ok || len(got) != 3 {
		return
	}
	kind := got[0]
	if i := bytes.IndexByte(kind, '\n'); i >= 0 {
		kind = bytes.TrimSuffix(kind[i+1:], []byte("\r\n"))
	}
	n, ok := parseInteger(got[2])
	if !ok {
		return
	}
	var count *atomic.Int32 // the kind's, which moves with the session's total
	switch string(kind) {
	case "subscribe", "unsubscribe":
		count = &c.sub
	case "psubscribe", "punsubscribe":
		count = &c.psub
	case "ssubscribe", "sunsubscribe":
		c.ssub.Store(int32(n))
	default:
		return
	}
	if count != nil {
		switch {
		case n > ps.total:
			count.Add(1)
		case n < ps.total:
			count.Add(-1)
		}
		ps.total = n
	}
	c.setFlag(clientPubSub, c.sub.Load()+c.psub.Load()+c.ssub.Load() > 0)
}
