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

	// Pushes (tracking invalidations) come from other goroutines. One that
	// arrives while the client has a batch in flight (busy) waits in
	// pending and follows the batch's replies: written before them, it
	// could reach the client ahead of a value read before the change, which
	// the client would then keep. Otherwise a goroutine of its own writes it,
	// so that whoever pushes never waits for a client's socket.
	busy     atomic.Bool
	wmu      sync.Mutex // serialises writes to the socket
	pmu      sync.Mutex // guards pending, pushing, pushLost; never held across a write
	pending  []byte
	pushing  bool // a goroutine is writing pending
	pushLost bool // pending outgrew maxPending: the connection is being closed

	// held is the batch's replies built ahead of redcon's buffer: big
	// cached values, by reference, and what redcon's buffer held before
	// each (see writeShared). Only the goroutine that owns the connection uses it.
	held    [][]byte
	heldLen int64

	lim    *limiter     // the server's client limits (limits.go); nil: none
	dead   atomic.Bool  // a write failed or a limit dropped the client: nothing more is written
	out    atomic.Int64 // output held for the client, as lim accounts it
	pubsub atomic.Bool  // subscribed: the pubsub output limit applies
}

// maxPending bounds the pushes waiting for a client that does not read when
// its class has no hard output limit; past the bound the client is
// disconnected, as Redis disconnects a client over its output buffer limit,
// rather than let it hold the proxy's memory.
const maxPending = 32 << 20

// pendingLimit is the most pushes may hold for the client.
func (cc *clientConn) pendingLimit() int {
	if h := cc.outLimit().limit(); h > 0 && h < maxPending {
		return int(h)
	}
	return maxPending
}

// Write writes replies, and the pushes that waited for them, then lets the
// client store the fills they answered. Only the goroutine that owns the
// connection writes replies, so wrote runs there.
func (cc *clientConn) Write(p []byte) (int, error) {
	cc.wmu.Lock()
	var n int
	var err error
	if len(cc.held) > 0 {
		held := append(cc.held, p)
		cc.held, cc.heldLen = nil, 0
		if _, err = cc.writeBuffers(held); err == nil {
			n = len(p)
		}
	} else {
		n, err = cc.writeBounded(p)
	}
	cc.pmu.Lock()
	var pushes []byte
	if !cc.pushing {
		pushes, cc.pending = cc.pending, nil
	}
	cc.busy.Store(false)
	cc.pmu.Unlock()
	if err == nil && len(pushes) > 0 {
		_, err = cc.writeBounded(pushes)
	}
	cc.wmu.Unlock()
	if cc.wrote != nil {
		cc.wrote()
	}
	return n, err
}

// push sends b, a whole push message, to the client without waiting for it:
// after the replies of the batch in flight, if any, else at once.
func (cc *clientConn) push(b []byte) {
	cc.pmu.Lock()
	defer cc.pmu.Unlock()
	if cc.pushLost {
		return
	}
	if len(cc.pending)+len(b) > cc.pendingLimit() {
		cc.pushLost = true
		cc.pending = nil
		cc.drop(dropOutput)
		return
	}
	cc.pending = append(cc.pending, b...)
	if !cc.busy.Load() && !cc.pushing {
		cc.pushing = true
		go cc.writePending()
	}
}

// writePending writes what is pending until nothing is, the client starts a
// batch, or the socket fails (closing the socket ends it).
func (cc *clientConn) writePending() {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	for {
		cc.pmu.Lock()
		b := cc.pending
		if len(b) == 0 || cc.busy.Load() {
			cc.pushing = false
			cc.pmu.Unlock()
			return
		}
		cc.pending = nil
		cc.pmu.Unlock()
		if _, err := cc.writeBounded(b); err != nil {
			cc.pmu.Lock()
			cc.pushing = false
			cc.pmu.Unlock()
			return
		}
	}
}

func newClientConn(c net.Conn, lim resp.Limits, authRequired bool, draining *atomic.Bool, cl *limiter) *clientConn {
	cc := &clientConn{raw: &aheadConn{Conn: c, draining: draining}, lim: cl}
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
