package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/resp"
)

// listener runs the accept loop and each client's read loop, in place of
// redcon's server. redcon's reader copies every command it parses and
// allocates its list of arguments, and reads through a buffer of its own
// behind the guard's: a pipelined L1 hit spent more on that than on its
// lookup. Here the guard's checked input is parsed in place
// (resp.CommandReader); replies are still built with redcon's Writer, and
// the connection is still a redcon.Conn to the rest of the proxy.
type listener struct {
	ln      net.Listener
	s       *Server
	timeout time.Duration // a client's read deadline while it waits for a command; 0: none

	mu    sync.Mutex // guards conns, done
	conns map[*loopConn]struct{}
	done  bool
}

func newListener(s *Server, ln net.Listener) *listener {
	return &listener{ln: ln, s: s, timeout: s.lim.Timeout, conns: map[*loopConn]struct{}{}}
}

// serve accepts clients until Close, riding out failed accepts; it then
// closes every connection it still serves.
func (l *listener) serve() {
	defer func() {
		l.ln.Close()
		l.mu.Lock()
		defer l.mu.Unlock()
		for c := range l.conns {
			c.nc.Close()
		}
		l.conns = nil
	}()
	var pause time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			l.mu.Lock()
			done := l.done
			l.mu.Unlock()
			if done || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, or a connection reset before it was
			// accepted: serving the clients already here matters more, and
			// the next accept may succeed. Pause, so as not to spin.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			l.s.log.Warn("accepting a client failed; retrying", "addr", l.ln.Addr().String(), "err", err, "retry_in", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		c := &loopConn{nc: nc, addr: nc.RemoteAddr().String(), wr: redcon.NewWriter(nc), rd: resp.NewCommandReader(nc)}
		l.mu.Lock()
		if l.conns == nil {
			l.mu.Unlock()
			nc.Close()
			return
		}
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		if !l.s.accept(c) {
			l.forget(c)
			c.Close() // flushes the refusal accept wrote
			continue
		}
		go l.handle(c)
	}
}

// Close stops accepting; serve then closes every connection.
func (l *listener) Close() error {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
	return l.ln.Close()
}

func (l *listener) forget(c *loopConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// handle reads the client's commands, a batch per read, until it leaves,
// detaches or fails.
func (l *listener) handle(c *loopConn) {
	err := l.loop(c)
	if !c.detached {
		c.nc.Close()
	}
	l.forget(c)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	l.s.closed(c, err)
}

func (l *listener) loop(c *loopConn) error {
	for {
		if l.timeout > 0 {
			_ = c.nc.SetReadDeadline(time.Now().Add(l.timeout))
		}
		cmds, err := c.rd.Read()
		if err != nil {
			if errors.Is(err, resp.ErrProtocol) {
				c.wr.WriteError("ERR " + err.Error())
				_ = c.wr.Flush()
			}
			return err
		}
		c.cmds = c.cmds[:0]
		for _, cmd := range cmds {
			c.cmds = append(c.cmds, redcon.Command(cmd))
		}
		l.s.handle(c, c.cmds)
		if c.detached {
			return errDetached
		}
		if c.closed {
			return nil
		}
		if err := c.wr.Flush(); err != nil {
			return err
		}
	}
}

// errDetached is what closed is told about a client that detached.
var errDetached = errors.New("proxy: connection detached")

// loopConn is a client connection as the proxy's handlers see it: a redcon.Conn
// whose replies collect in wr until its batch is answered.
type loopConn struct {
	nc       net.Conn // the clientConn
	addr     string
	wr       *redcon.Writer
	rd       *resp.CommandReader
	ctx      any
	cmds     []redcon.Command // the batch being handled
	detached bool
	closed   bool
}

var _ redcon.Conn = (*loopConn)(nil)

func (c *loopConn) RemoteAddr() string          { return c.addr }
func (c *loopConn) NetConn() net.Conn           { return c.nc }
func (c *loopConn) Context() any                { return c.ctx }
func (c *loopConn) SetContext(v any)            { c.ctx = v }
func (c *loopConn) SetReadBuffer(int)           {}
func (c *loopConn) WriteError(msg string)       { c.wr.WriteError(msg) }
func (c *loopConn) WriteString(str string)      { c.wr.WriteString(str) }
func (c *loopConn) WriteBulk(bulk []byte)       { c.wr.WriteBulk(bulk) }
func (c *loopConn) WriteBulkString(bulk string) { c.wr.WriteBulkString(bulk) }
func (c *loopConn) WriteInt(num int)            { c.wr.WriteInt(num) }
func (c *loopConn) WriteInt64(num int64)        { c.wr.WriteInt64(num) }
func (c *loopConn) WriteUint64(num uint64)      { c.wr.WriteUint64(num) }
func (c *loopConn) WriteArray(count int)        { c.wr.WriteArray(count) }
func (c *loopConn) WriteNull()                  { c.wr.WriteNull() }
func (c *loopConn) WriteRaw(data []byte)        { c.wr.WriteRaw(data) }
func (c *loopConn) WriteAny(v any)              { c.wr.WriteAny(v) }

// ReadPipeline and PeekPipeline have nothing to give: handle gets the whole
// batch at once.
func (c *loopConn) ReadPipeline() []redcon.Command { return nil }
func (c *loopConn) PeekPipeline() []redcon.Command { return nil }

// Close flushes what is written and closes the socket; the read loop stops
// after the batch.
func (c *loopConn) Close() error {
	_ = c.wr.Flush()
	c.closed = true
	return c.nc.Close()
}

// Detach takes the connection out of the read loop, which returns after the
// batch without closing it. Commands pipelined behind the current one are
// the caller's to keep (client.detach copies them).
func (c *loopConn) Detach() redcon.DetachedConn {
	c.detached = true
	return &detachedConn{loopConn: c}
}

// detachedConn is a connection out of the read loop, whose new owner reads
// each command with ReadCommand and flushes replies itself.
type detachedConn struct {
	*loopConn
	cmds []resp.Command
}

func (dc *detachedConn) Flush() error { return dc.wr.Flush() }

// ReadCommand reads the next command. It is a copy, which later reads leave
// intact: detached clients are not on the hit path.
func (dc *detachedConn) ReadCommand() (redcon.Command, error) {
	if len(dc.cmds) == 0 {
		cmds, err := dc.rd.Read()
		if err != nil {
			return redcon.Command{}, err
		}
		dc.cmds = cmds
	}
	cmd := dc.cmds[0]
	dc.cmds = dc.cmds[1:]
	return redcon.Parse(append([]byte(nil), cmd.Raw...))
}
