package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheproxy/cacheproxy/resp"
)

// clientConn is a client's socket as redcon sees it: resp.Guard's checked
// input over a socket that can be read ahead (see watch), and the flag the
// guard asks about before it lets an unauthenticated client send big commands.
type clientConn struct {
	net.Conn             // resp.Guard over raw
	raw      *aheadConn  // the socket itself
	authed   atomic.Bool // the guard's view of the client's authentication
	wrote    func()      // after each write: the client's storeFills
}

// Write writes replies, then lets the client store the fills they answered.
// Only the goroutine that owns the connection writes, so wrote runs there.
func (cc *clientConn) Write(p []byte) (int, error) {
	n, err := cc.Conn.Write(p)
	if cc.wrote != nil {
		cc.wrote()
	}
	return n, err
}

func newClientConn(c net.Conn, lim resp.Limits, authRequired bool, draining *atomic.Bool) *clientConn {
	cc := &clientConn{raw: &aheadConn{Conn: c, draining: draining}}
	cc.authed.Store(!authRequired)
	var authed func() bool
	if authRequired {
		authed = cc.authed.Load
	}
	cc.Conn = resp.Guard(cc.raw, lim, authed)
	return cc
}

// aheadConn is the client's socket with a read-ahead buffer in front: what
// watch read while redcon was not reading is read again, in order, before the
// socket.
type aheadConn struct {
	net.Conn
	draining *atomic.Bool // the server is shutting down (Server.draining)
	has      atomic.Bool  // ahead or err is set: the common Read skips mu
	mu       sync.Mutex   // guards ahead, err
	ahead    []byte
	err      error
}

func (a *aheadConn) Read(p []byte) (int, error) {
	if !a.has.Load() {
		n, err := a.Conn.Read(p)
		if n == 0 && err != nil && a.draining != nil && a.draining.Load() && os.IsTimeout(err) {
			// Shutdown ended this idle client's read. Closing a socket with
			// input unread makes the system reset it, which the client sees
			// as an error: shut the write side and drop the input first, so
			// that it sees a clean end of stream between two replies.
			lingerClose(a.Conn)
			return 0, io.EOF
		}
		return n, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.ahead) > 0 {
		n := copy(p, a.ahead)
		if a.ahead = a.ahead[n:]; len(a.ahead) == 0 {
			a.ahead = nil
		}
		a.has.Store(len(a.ahead) > 0 || a.err != nil)
		return n, nil
	}
	err := a.err
	a.err = nil
	a.has.Store(false)
	if err != nil {
		return 0, err
	}
	return a.Conn.Read(p)
}

// maxAhead bounds what watch keeps of a blocked client's further input. A
// client that pipelines more than that behind a blocking command is no longer
// watched: its upstream connection is then released only when the command
// ends, as before.
const maxAhead = 1 << 20

// watch reads the client's socket while the client's goroutine waits on a
// blocking command upstream (redcon, which owns reading, is then idle), and
// calls gone once if the client closes its end or the socket fails: a client
// that leaves must not keep its upstream connection blocked. What it reads is
// kept, unchecked, for the guard and redcon to read next, in order, as if it
// had stayed in the socket. The returned stop ends the watch and waits for it.
func (a *aheadConn) watch(gone func()) (stop func()) {
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := a.Conn.Read(buf)
			// A deadline is stop's, or Shutdown's, which wants the blocking
			// command to finish first: neither is the client leaving, and
			// the next read meets Shutdown's deadline again.
			deadline := errors.Is(err, os.ErrDeadlineExceeded)
			a.mu.Lock()
			a.ahead = append(a.ahead, buf[:n]...)
			if err != nil && !deadline {
				a.err = err
			}
			a.has.Store(len(a.ahead) > 0 || a.err != nil)
			full := len(a.ahead) >= maxAhead
			a.mu.Unlock()
			if err != nil {
				if !deadline && !stopping.Load() {
					gone()
				}
				return
			}
			if full {
				return
			}
		}
	}()
	return func() {
		stopping.Store(true)
		_ = a.Conn.SetReadDeadline(time.Now())
		<-done
		_ = a.Conn.SetReadDeadline(time.Time{})
	}
}
