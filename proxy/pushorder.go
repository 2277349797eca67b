package proxy

import "github.com/tidwall/redcon"

// orderedCommand runs a command of a RESP3 client that may be subscribed, and
// writes its replies where Redis would put them among the client's pushes.
// Redis answers such a command after every push it had queued for the client
// when the command ran, including those the command itself caused (a PUBLISH
// to one of the client's channels, the keyspace event of its write), and after
// the confirmations of the subscription commands sent before it (which
// detachedCommand has made sure have run). Those travel on the subscribed
// connection, the command on another: its replies
// are held until a barrier sent once it has run comes back on the subscribed
// connection, by which time the pump has written everything that came before.
// The client goroutine holds no lock meanwhile, so pushes keep flowing while
// the command waits (a blocking one included); the pump's writes must then
// not store the fills the command resolves (clientConn.wrote), which stay the
// client goroutine's until the lock is taken again.
func (c *client) orderedCommand(cmd redcon.Command) {
	c.wmu.Lock()
	c.cc.wrote = nil
	c.wmu.Unlock()
	held := &heldConn{DetachedConn: c.dconn}
	c.conn = held
	c.command(cmd)
	ok := true
	if c.conn != nil {
		c.flush()
		c.conn = c.dconn
		_, ok = c.ps.sync()
	}
	c.wmu.Lock()
	held.release()
	c.cc.wrote = c.storeFills
	c.storeFills()
	c.wmu.Unlock()
	if !ok {
		c.conn = nil
	}
}

// heldConn keeps the replies written to a detached client until release.
// The proxy writes replies with WriteRaw alone.
type heldConn struct {
	redcon.DetachedConn
	buf    []byte
	closed bool
}

func (h *heldConn) WriteRaw(b []byte)     { h.buf = append(h.buf, b...) }
func (h *heldConn) WriteError(msg string) { h.buf = redcon.AppendError(h.buf, msg) }

// Close closes the connection once release has written the held replies, as
// redcon's Close flushes first.
func (h *heldConn) Close() error {
	h.closed = true
	return nil
}

// release writes and flushes the held replies, and closes the connection if
// the command closed it; the caller holds wmu.
func (h *heldConn) release() {
	if len(h.buf) > 0 {
		h.DetachedConn.WriteRaw(h.buf)
		_ = h.DetachedConn.Flush()
	}
	if h.closed {
		_ = h.DetachedConn.Close()
	}
}
