package proxy

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync/atomic"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/resp"
)

// A client that sends MONITOR gets an upstream connection of its own on which
// the proxy sends MONITOR, and leaves redcon's loop as a subscriber does
// (pubsub.go): a pump copies what Redis streams on that connection to the
// client as it came. The stream is Redis's, so it shows the proxy's upstream
// connections and the commands the proxy sends of its own accord, not the
// proxy's clients.
//
// Redis 7.0 goes on answering a monitoring client's commands: it refuses
// those that touch the keyspace ("Replica can't interact with the keyspace")
// and runs the others, which then show in the stream too. So the client's
// commands go to the monitor connection, where Redis answers them in its own
// words and in stream order, except:
//   - those the proxy answers itself because they concern the client, not the
//     upstream connection (AUTH, CLIENT, HELLO, INFO, CONFIG...): they take
//     the proxy's usual paths once the replies to the commands sent before
//     them have been copied (settled);
//   - SUBSCRIBE, refused: the pump could not tell its confirmations and
//     messages from replies;
//   - MULTI, refused: the commands the proxy answers itself would not be
//     queued in the transaction;
//   - MONITOR, which Redis ignores from a monitor;
//   - RESET, sent too: Redis's +RESET ends the stream, the connection is
//     closed and the client carries on as any detached client;
//   - QUIT, sent too: Redis answers and closes, which ends the client.

// monitorSession is a monitoring client's upstream connection and its pump.
type monitorSession struct {
	up net.Conn
	rs replyStream // up's replies; the pump's once MONITOR is answered

	// pending counts the commands sent on up whose replies the pump has not
	// copied yet. A command the proxy answers itself waits until it is 0:
	// waiting asks the pump to say so on idle.
	pending atomic.Int64
	waiting atomic.Bool
	idle    chan struct{}

	resetting atomic.Bool   // RESET was sent: its +RESET ends the stream
	reset     bool          // the pump's: it copied +RESET (read after done)
	done      chan struct{} // closed when the pump returns
}

// startMonitor puts the client in monitor mode. Redis's reply to MONITOR is
// read here, before anything else is sent on the connection: a connection
// that refused it (for want of the ACL permission, say) is no monitor, and
// the commands after it must not run there.
func (c *client) startMonitor(cmd redcon.Command) {
	c.flush() // earlier replies first
	up, err := c.pool().Raw(c.s.ctx, c.db)
	if err != nil {
		c.emitUpstreamError(err)
		return
	}
	m := &monitorSession{
		up:   up,
		rs:   replyStream{r: up, buf: make([]byte, 0, 16<<10)},
		idle: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	var reply []byte
	if _, err = up.Write(cmd.Raw); err == nil {
		reply, err = m.rs.next(nil)
	}
	if err != nil {
		up.Close()
		c.emitError("ERR cacheproxy: upstream unavailable (" + sanitize(err.Error()) + ")")
		return
	}
	c.emit(reply) // written at once: the segment was flushed
	if string(reply) != "+OK\r\n" {
		up.Close()
		return
	}
	c.mon = m
	c.setFlag(clientMonitor, true)
	if c.dconn != nil {
		go m.pump(c) // waited for by serveDetached
		return
	}
	c.detach(cmd)
}

// monitorCommand runs a command of a monitoring client. It returns false for
// a command that takes the proxy's usual paths, once every earlier reply has
// been copied.
func (c *client) monitorCommand(cmd redcon.Command) bool {
	m := c.mon
	rt := route(cmd.Args[0])
	if rt.kind != routeLocal || (rt.name != "cacheproxy" && c.commandError(cmd.Args) != "") {
		m.send(cmd.Raw) // what Redis refuses, it refuses in its own words
		return true
	}
	switch rt.name {
	case "ping", "echo", "select", "watch":
		m.send(cmd.Raw)
	case "monitor": // Redis ignores it from a monitor: no reply
	case "quit":
		// Redis answers and closes; the pump copies both and closes the
		// client.
		m.send(cmd.Raw)
		c.awaitMonitor(m.done)
		c.conn = nil
	case "reset":
		m.resetting.Store(true)
		m.send(cmd.Raw)
		c.awaitMonitor(m.done)
		if !m.reset {
			c.conn = nil
			return true
		}
		m.up.Close()
		c.mon = nil
		c.setFlag(clientMonitor, false)
		c.resetState()
	case "subscribe", "psubscribe", "ssubscribe", "multi":
		if !c.settled() {
			return true
		}
		c.wmu.Lock()
		defer c.wmu.Unlock()
		c.emitError("ERR cacheproxy: " + strings.ToUpper(string(cmd.Args[0])) + " in monitor mode is not supported through the proxy")
		c.flush()
		_ = c.dconn.Flush()
	default:
		return !c.settled()
	}
	return true
}

// send writes a request to the monitor connection, whose reply the pump
// counts. A failed write breaks the connection, which the pump sees.
func (m *monitorSession) send(req []byte) {
	m.pending.Add(1)
	if _, err := m.up.Write(req); err != nil {
		m.up.Close()
	}
}

// settled waits until the replies to every command sent on the monitor
// connection have been copied, so that a reply written now comes after them.
// False means the connection is gone, and with it the client.
func (c *client) settled() bool {
	m := c.mon
	m.waiting.Store(true)
	if m.pending.Load() == 0 && m.waiting.CompareAndSwap(true, false) {
		return true
	}
	if !c.awaitMonitor(m.idle) {
		c.conn = nil
		return false
	}
	return true
}

// awaitMonitor waits for ch, or for the pump's end, while watching the
// client's socket: a client that leaves meanwhile closes the monitor
// connection, which ends the wait. It reports whether ch came first.
func (c *client) awaitMonitor(ch <-chan struct{}) bool {
	m := c.mon
	stop := c.cc.raw.watch(func() { m.up.Close() })
	defer stop()
	select {
	case <-ch:
		return true
	case <-m.done:
		return false
	}
}

// stop closes the monitor connection and waits for the pump.
func (m *monitorSession) stop() {
	m.up.Close()
	<-m.done
}

// pump copies the monitor connection's stream to the client until the
// connection ends or Redis answers RESET. Unless RESET ended it, it then
// closes the client: Redis closing a monitor's connection (QUIT, a kill, a
// restart) ends it. A client that cannot be written to has gone: its monitor
// connection is closed at once.
func (m *monitorSession) pump(c *client) {
	defer close(m.done)
	defer func() {
		if !m.reset {
			c.cc.Close()
		}
	}()
	wrote := true // MONITOR's +OK waits in the client's buffer
	flush := func() {
		if !wrote {
			return
		}
		wrote = false
		c.wmu.Lock()
		err := c.dconn.Flush()
		c.wmu.Unlock()
		if err != nil {
			m.up.Close()
		}
	}
	defer flush()
	for {
		r, err := m.rs.next(flush)
		if err != nil {
			return
		}
		if c.s.cluster && bytes.HasPrefix(r, replyMoved) {
			// The monitoring node checks where a command's keys live
			// before whether a monitor may touch keys at all.
			r = replyMonitorKeyspace
		}
		c.wmu.Lock()
		c.dconn.WriteRaw(r)
		c.wmu.Unlock()
		wrote = true
		if monitorLine(r) {
			continue
		}
		if m.resetting.Load() && string(r) == string(replyReset) {
			m.reset = true
			return
		}
		if m.pending.Add(-1) == 0 && m.waiting.CompareAndSwap(true, false) {
			m.idle <- struct{}{}
		}
	}
}

var replyMonitorKeyspace = []byte("-ERR Replica can't interact with the keyspace\r\n")

// monitorLine reports whether r is a line of the stream rather than a reply:
// a status that starts with the command's time ("+1700000000.123456 [0
// 127.0.0.1:5000] ..."). No command a monitor may run answers a status that
// starts with a digit.
func monitorLine(r []byte) bool {
	return len(r) > 1 && r[0] == '+' && '0' <= r[1] && r[1] <= '9'
}

// replyStream reads whole replies off a connection that sends them
// unasked.
type replyStream struct {
	r     io.Reader
	buf   []byte
	start int // first byte not yet returned
	sc    resp.ReplyScanner
}

// next returns the next reply, valid until the following call. Before it
// waits for the connection it calls idle, if not nil: the moment to flush
// what was copied.
func (s *replyStream) next(idle func()) ([]byte, error) {
	for {
		if s.start < len(s.buf) {
			n, err := s.sc.Scan(s.buf[s.start:])
			if err != nil {
				return nil, err
			}
			if n > 0 {
				s.sc = resp.ReplyScanner{}
				r := s.buf[s.start : s.start+n]
				s.start += n
				return r, nil
			}
		}
		if s.start == len(s.buf) {
			s.buf, s.start = s.buf[:0], 0
			if cap(s.buf) > 1<<20 {
				s.buf = make([]byte, 0, 16<<10) // let a big reply's room go
			}
		}
		if len(s.buf) == cap(s.buf) {
			if s.start > 0 {
				n := copy(s.buf, s.buf[s.start:])
				s.buf, s.start = s.buf[:n], 0
			} else {
				s.buf = append(s.buf, 0)[:len(s.buf)]
			}
		}
		if idle != nil {
			idle()
		}
		n, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		if n == 0 && err != nil {
			return nil, err
		}
	}
}
