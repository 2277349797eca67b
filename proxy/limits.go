package proxy

import (
	"cmp"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/resp"
)

// OutputLimit is Redis's client-output-buffer-limit for one class of clients.
// A client's output is what the proxy holds for it and the client has not
// read yet: the replies of the batch being answered, built and unsent.
type OutputLimit struct {
	// Hard: a client whose output grows past it is disconnected at once.
	// 0: no hard limit.
	Hard int64
	// Soft: a client whose output stays past it for longer than SoftFor is
	// disconnected. 0: no soft limit. With SoftFor 0, Soft acts as a hard
	// limit.
	Soft    int64
	SoftFor time.Duration
}

// limit is the bound the output may never pass: the hard limit, or a soft
// one with no grace; 0 when there is none.
func (l OutputLimit) limit() int64 {
	h := l.Hard
	if l.Soft > 0 && l.SoftFor == 0 && (h == 0 || l.Soft < h) {
		h = l.Soft
	}
	return h
}

// ClientLimits bound what clients may cost, as Redis's limits of the same
// names do. The zero value bounds nothing.
type ClientLimits struct {
	// Normal applies to ordinary clients, PubSub to subscribed ones
	// (Redis's client-output-buffer-limit normal and pubsub).
	Normal, PubSub OutputLimit
	// Timeout closes a client idle longer than this, as Redis's timeout:
	// a client blocked on a command or subscribed is not idle. 0: never.
	Timeout time.Duration
	// TCPKeepAlive is the keepalive period of accepted client sockets, as
	// Redis's tcp-keepalive. 0: off.
	TCPKeepAlive time.Duration
	// MaxMemory bounds the output all clients hold together, as Redis's
	// maxmemory-clients: past it, the clients holding most are
	// disconnected first until the rest fit. 0: no bound.
	MaxMemory int64
}

// Validate reports the first limit out of range.
func (l ClientLimits) Validate() error {
	for _, o := range []OutputLimit{l.Normal, l.PubSub} {
		if o.Hard < 0 || o.Soft < 0 || o.SoftFor < 0 {
			return errors.New("proxy: output buffer limits must not be negative")
		}
	}
	if l.Timeout < 0 || l.TCPKeepAlive < 0 || l.MaxMemory < 0 {
		return errors.New("proxy: Timeout, TCPKeepAlive and MaxMemory must not be negative")
	}
	return nil
}

// Reasons a client is disconnected (cacheproxy_client_disconnects_total).
const (
	dropOutput = iota
	dropQuery
	dropMemory
	dropTimeout
	numDrops
)

var dropNames = [numDrops]string{"output_buffer", "query_buffer", "clients_memory", "timeout"}

// errDropped is what a dropped client's writes return.
var errDropped = errors.New("proxy: client disconnected over a limit")

// memStep is how much a batch's replies may grow between two updates of the
// shared account while they are built: the account is touched about once per
// memStep, never per reply.
const memStep = 1 << 20

// limiter enforces ClientLimits for a Server.
type limiter struct {
	ClientLimits
	s     *Server
	total atomic.Int64 // bytes of output all clients hold (clientConn.out)
	evict sync.Mutex   // one eviction sweep at a time
	drops [numDrops]prometheus.Counter
}

// account records that cc now holds n bytes of output, and disconnects the
// clients holding most while all of them hold more than MaxMemory. Without
// MaxMemory nothing reads the account: every client would otherwise add to
// one shared counter twice per batch, a cache line all cores fight over.
func (l *limiter) account(cc *clientConn, n int64) {
	if l.MaxMemory == 0 {
		return
	}
	d := n - cc.out.Swap(n)
	if d == 0 {
		return
	}
	if t := l.total.Add(d); d > 0 && l.MaxMemory > 0 && t > l.MaxMemory {
		l.shed()
	}
}

// shed disconnects the clients with the most output until the total fits.
// It runs only past the bound, so its cost (a sort of the clients) is paid
// only then.
func (l *limiter) shed() {
	if !l.evict.TryLock() {
		return // a sweep is running; it sees this client's bytes too
	}
	defer l.evict.Unlock()
	if l.total.Load() <= l.MaxMemory {
		return
	}
	cs := l.s.reg.snapshot()
	slices.SortFunc(cs, func(a, b *client) int { return cmp.Compare(b.cc.out.Load(), a.cc.out.Load()) })
	for _, c := range cs {
		if l.total.Load() <= l.MaxMemory || c.cc.out.Load() == 0 {
			return
		}
		c.cc.drop(dropMemory)
	}
}

// keepAlive turns on TCP keepalive on an accepted client socket.
func (l *limiter) keepAlive(c net.Conn) {
	if l.TCPKeepAlive <= 0 {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: l.TCPKeepAlive, Interval: l.TCPKeepAlive / 3, Count: 3})
	}
}

// drop disconnects the client over a limit, once: its socket is closed, so
// that a write blocked on it returns and its goroutine stops at the next
// command (client.gone); its output is released by whoever holds it.
func (cc *clientConn) drop(reason int) {
	if !cc.dead.CompareAndSwap(false, true) {
		return
	}
	cc.raw.Close()
	if cc.lim != nil {
		cc.lim.drops[reason].Inc()
		// What the client held is let go of as its goroutine stops; it no
		// longer counts, so that no further client is dropped for it.
		cc.lim.account(cc, 0)
	}
}

// outLimit is the output limit of the client's class.
func (cc *clientConn) outLimit() OutputLimit {
	if cc.lim == nil {
		return OutputLimit{}
	}
	if cc.pubsub.Load() {
		return cc.lim.PubSub
	}
	return cc.lim.Normal
}

// writeBounded writes p, a batch's replies, within the client's output
// limits: past the hard limit the client is dropped before anything is
// written; past the soft limit, the part of p above it must be taken by the
// client within SoftFor, or the client is dropped.
func (cc *clientConn) writeBounded(p []byte) (int, error) {
	if cc.dead.Load() {
		return 0, errDropped
	}
	ol := cc.outLimit()
	if h := ol.limit(); h > 0 && int64(len(p)) > h {
		cc.drop(dropOutput)
		return 0, errDropped
	}
	if cc.lim != nil {
		cc.lim.account(cc, int64(len(p)))
		defer cc.lim.account(cc, 0)
	}
	var n int
	if over := int64(len(p)) - ol.Soft; ol.Soft > 0 && over > 0 {
		_ = cc.raw.SetWriteDeadline(time.Now().Add(ol.SoftFor))
		k, err := cc.Conn.Write(p[:over])
		_ = cc.raw.SetWriteDeadline(time.Time{})
		n += k
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				cc.drop(dropOutput)
				return n, errDropped
			}
			return n, cc.failed(err)
		}
		p = p[over:]
	}
	k, err := cc.Conn.Write(p)
	return n + k, cc.failed(err)
}

// writeBuffers writes bufs, a batch's replies in pieces, within the client's
// output limits, as writeBounded writes one piece.
func (cc *clientConn) writeBuffers(bufs [][]byte) (int, error) {
	if cc.dead.Load() {
		return 0, errDropped
	}
	var total int64
	for _, b := range bufs {
		total += int64(len(b))
	}
	ol := cc.outLimit()
	if h := ol.limit(); h > 0 && total > h {
		cc.drop(dropOutput)
		return 0, errDropped
	}
	if cc.lim != nil {
		cc.lim.account(cc, total)
		defer cc.lim.account(cc, 0)
	}
	var over int64
	if ol.Soft > 0 {
		over = max(total-ol.Soft, 0)
	}
	if over > 0 {
		_ = cc.raw.SetWriteDeadline(time.Now().Add(ol.SoftFor))
	}
	var n int
	for _, b := range bufs {
		for len(b) > 0 {
			part := b
			if over > 0 && int64(len(part)) > over {
				part = part[:over]
			}
			k, err := cc.Conn.Write(part)
			n += k
			if over > 0 {
				over -= int64(k)
				if err == nil && over == 0 {
					_ = cc.raw.SetWriteDeadline(time.Time{})
				}
			}
			if err != nil {
				_ = cc.raw.SetWriteDeadline(time.Time{})
				if errors.Is(err, os.ErrDeadlineExceeded) {
					cc.drop(dropOutput)
					return n, errDropped
				}
				return n, cc.failed(err)
			}
			b = b[k:]
		}
	}
	return n, nil
}

// heldMin is the size from which a cached value is held by reference until
// the batch's replies are written, instead of copied into redcon's buffer: a
// client that pipelines many GETs of a big value and reads slowly, or never,
// would otherwise have the proxy copy the value once per GET into a buffer
// that grows by copying all of itself, which leaves as much garbage and, for
// a few such clients, keeps the processors busy copying and collecting it
// while the other clients wait.
const heldMin = 64 << 10

// emitCached answers a command with v, a cached value, which is never
// modified: a big one is held by reference (see heldMin).
func (c *client) emitCached(v []byte) {
	if len(v) < heldMin || len(c.slots) > 0 {
		c.emit(v)
		return
	}
	c.writeShared(v)
}

// writeShared adds v, a reply that is never modified (a cached value, a
// fill's reply), to the batch's replies: by reference when it is big.
func (c *client) writeShared(v []byte) {
	if len(v) < heldMin || c.cc == nil || c.wr == nil || c.dconn != nil || writerBuf < 0 {
		c.conn.WriteRaw(v)
		return
	}
	b := writerBuffer(c.wr)
	if len(*b) > 0 {
		c.cc.held = append(c.cc.held, *b)
		c.cc.heldLen += int64(len(*b))
		*b = nil
	}
	c.cc.held = append(c.cc.held, v)
	c.cc.heldLen += int64(len(v))
}

// failed marks the connection dead when a write fails: the client is gone,
// and nothing more is built for it.
func (cc *clientConn) failed(err error) error {
	if err != nil {
		cc.dead.Store(true)
	}
	return err
}

// gone ends redcon's loop over a client whose connection failed or was
// dropped, without writing what was built for it: what it pipelined and
// what is left of its batch are dropped.
func (c *client) gone() {
	if c.wr != nil {
		c.wr.SetBuffer(nil)
	}
	if c.cc != nil {
		c.cc.held, c.cc.heldLen = nil, 0
	}
	c.conn.Close() // its flush of the emptied buffer writes nothing
	c.conn = nil
	if c.cc.lim != nil {
		c.cc.lim.account(c.cc, 0)
	}
}

// building checks a batch's replies as they are built and reports whether
// the client is gone: past the output limit it is dropped, so that the rest
// of its batch is not built; the shared account learns of the bytes once
// per memStep.
func (c *client) building() bool {
	if c.cc == nil {
		return false // a client without a socket, in tests
	}
	if c.cc.dead.Load() {
		return true
	}
	if c.wr == nil || c.dconn != nil {
		// A detached client's buffer is also written by its pump, under
		// c.wmu, which the client does not always hold: its output is
		// bounded where it is written (writeBounded) instead.
		return false
	}
	n := int64(bufferLen(c.wr)) + c.cc.heldLen
	if n < c.built+memStep {
		return false
	}
	c.built = n
	h := c.cc.outLimit().limit()
	if h > 0 && n > h {
		c.cc.drop(dropOutput)
		return true
	}
	if c.cc.lim != nil {
		c.cc.lim.account(c.cc, n)
	}
	// A batch this big is built by copying megabytes, with no blocking
	// call between its commands: yield once per memStep, so that clients
	// that build many at once take turns with the others instead of
	// holding every CPU for whole time slices while the others' replies,
	// ready, wait to be scheduled.
	runtime.Gosched()
	return c.cc.dead.Load()
}

// writerBuf is the offset in redcon.Writer of its field b, the unflushed
// replies, or -1 if redcon no longer has it (TestBufferLen fails then).
var writerBuf = func() int {
	f, ok := reflect.TypeFor[redcon.Writer]().FieldByName("b")
	if !ok || f.Type != reflect.TypeFor[[]byte]() {
		return -1
	}
	return int(f.Offset)
}()

// writerBuffer is w's unflushed replies, in place; writerBuf must be >= 0.
func writerBuffer(w *redcon.Writer) *[]byte {
	return (*[]byte)(unsafe.Add(unsafe.Pointer(w), writerBuf))
}

// bufferLen is the size of the replies w holds, unflushed. redcon's
// Writer.Buffer returns a copy of them: measuring with it after every
// command copied the whole batch built so far each time, which made building
// a batch quadratic in its size (a 20 MiB batch copied 210 MiB, and left as
// much garbage); under the race detector, which checks every byte copied,
// building such a batch took seconds and no limit was reached in time.
// Reading the field costs a load, on the path of every command.
func bufferLen(w *redcon.Writer) int {
	if writerBuf < 0 {
		return len(w.Buffer()) // slow, but right; TestBufferLen fails
	}
	return len(*writerBuffer(w))
}

// countClosed counts a connection redcon let go of because a limit ended it:
// an idle client's read deadline, or a query over the query buffer limit.
func (s *Server) countClosed(c *client, err error) {
	switch {
	case err == nil || c.cc.dead.Load():
	case errors.Is(err, resp.ErrQueryBuffer):
		s.lim.drops[dropQuery].Inc()
	case errors.Is(err, os.ErrDeadlineExceeded) && s.lim.Timeout > 0 && !s.draining.Load():
		s.lim.drops[dropTimeout].Inc()
	}
}
