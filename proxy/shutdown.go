package proxy

import (
	"context"
	"net"
	"time"
)

// Shutdown stops the server gracefully: it stops accepting clients, lets each
// client finish the commands it has sent (those redcon has read), writes their
// replies whole and closes the connection after them. Commands a client sends
// after that are never run; from its side the connection closed between two
// replies. When ctx ends first, Shutdown closes what is left as Close does,
// which may cut a reply, and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.mu.Lock()
	lns := s.lns
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close() // from now on the system refuses new connections
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.clients.Load() > 0 {
		// A client waiting for its next command waits in a read: end the
		// read. One in the middle of a batch ends it first (handle), and one
		// a blocking command holds, once that command is over. The sweep is
		// repeated for clients that arrived as the listener closed, and for
		// deadlines a blocking command's watch cleared.
		for _, c := range s.reg.snapshot() {
			_ = c.cc.SetReadDeadline(time.Now())
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
	s.Close() // its error is the listener's, closed above
	return nil
}

// lingerTimeout bounds how long a closing connection's further input is read
// and dropped after its last reply.
const lingerTimeout = time.Second

// drainClose ends c's connection after the batch just answered. Closing a
// socket whose peer sent input we did not read makes the system reset it,
// and a reset throws away replies still on their way: so the replies are
// flushed, the write side is shut (the client reads every reply, then EOF),
// and what the client still sends is read and dropped until it closes its
// end or lingerTimeout passes.
func (c *client) drainClose() {
	dc := c.conn.Detach() // redcon then lets go of the socket without closing it
	c.conn = nil
	defer dc.Close()
	if dc.Flush() != nil {
		return
	}
	lingerClose(c.cc.raw.Conn)
}

// lingerClose shuts the write side of a client's socket and reads and drops
// its input until the client closes its end or lingerTimeout passes, so that
// the close that follows sends no reset.
func lingerClose(raw net.Conn) {
	cw, ok := raw.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = raw.SetReadDeadline(time.Now().Add(lingerTimeout))
	buf := make([]byte, 4096)
	for {
		if _, err := raw.Read(buf); err != nil {
			return
		}
	}
}
