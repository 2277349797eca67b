// Package upstream carries client commands to the upstream Redis and brings back
// their raw replies.
//
// Commands from many clients share a few multiplexed connections per database:
// whatever batches queue on a connection while it is busy go out as one
// pipeline, and one read brings back the replies of many, so fifty
// unpipelined clients cost Redis a few large reads and writes rather than
// fifty small ones. The waiting clients' own goroutines do the writing and
// reading (see Conn), so a lone client's round trip involves no other
// goroutine.
// Bytes go out exactly as the client sent them and come back exactly as Redis
// answered; nothing is re-encoded. Connections that hold session state
// (transactions, blocking commands) are dedicated: see Dedicated.
//
// Every connection of a pool speaks the one RESP version of its Config: a
// RESP3 client's replies must come from a connection in RESP3, so a proxy with
// clients of both kinds keeps a pool for each. A shared connection must never
// be made to send pushes (SUBSCRIBE, CLIENT TRACKING): they would pass for
// replies. Such clients take a socket of their own: see Raw.
//
// A Redis running a script past busy-reply-threshold answers nearly every
// command -BUSY, and one loading its dataset -LOADING. A connection readied
// meanwhile still serves database 0, but not one it failed to SELECT: the
// batch that needed it gets Redis's own error reply to hand to each request,
// as a *ReplyError, and the next batch dials again. The commands that end a
// script must not queue behind it on a connection that Redis does not read
// until the script ends: Urgent sends them on one of their own.
//
// A request is never retried: when a connection breaks, every batch on it that
// has not been answered fails, because a write on it may already have run.
// With Config.RequestTimeout, a shared connection on which a batch waits that
// long for its replies is closed, with the same effect. Dials that fail back
// off (see backoff.go): within the back-off window a new connection fails at
// once with the last dial's error, so a Redis that is down is not hammered.
// The package knows nothing of caching or of what commands mean.
package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheproxy/cacheproxy/resp"
)

// Config says how to reach the upstream.
type Config struct {
	Addr     string // host:port
	Username string // ACL user; empty means the default user
	Password string // empty means no AUTH
	// Conns is the number of shared connections per database. Default 2.
	Conns int
	// Databases bounds the db numbers Do accepts. Default 16.
	Databases int
	// DialTimeout bounds connecting and the handshake. Default 5s.
	DialTimeout time.Duration
	// RequestTimeout, when positive, bounds how long a batch on a shared
	// connection waits for its replies: past it the connection is closed and
	// every batch on it fails with ErrTimeout (a request is never retried,
	// since it may have run). It also bounds the dial of a shared connection,
	// when shorter than DialTimeout. Dedicated connections (transactions,
	// blocking commands, scripts) are exempt: they may wait as long as their
	// commands do. 0: no bound.
	RequestTimeout time.Duration
	// Protocol is the RESP version of every connection the pool makes: 2, or
	// 3 for RESP3 clients, whose replies must come from a connection in
	// RESP3 (it opens with HELLO 3). 0 means 2.
	Protocol int
	// Target, when set, is an address that can move (see Target): every
	// connection is dialled through it, and Addr is ignored. Nil dials Addr.
	Target *Target
	// TLS, when not nil, wraps every connection in TLS (see secure); its
	// ServerName must be set. nil: plain TCP.
	TLS *tls.Config
}

// ErrClosed is returned for batches sent after Close.
var ErrClosed = errors.New("upstream: pool closed")

// Pool owns every upstream connection the proxy opens for client commands.
type Pool struct {
	cfg    Config
	slots  []slot // Databases*Conns shared connections, created on first use
	closed atomic.Bool

	mu        sync.Mutex // guards dedicated
	dedicated map[*Conn]struct{}

	bo backoff // of failing dials
}

type slot struct {
	mu sync.Mutex // guards c while (re)dialling
	c  *Conn
}

// New validates cfg. It does not dial: connections are made on first use, so a
// proxy can start while the upstream is still coming up.
func New(cfg Config) (*Pool, error) {
	if cfg.Addr == "" && cfg.Target == nil {
		return nil, errors.New("upstream: Addr or Target is required")
	}
	if cfg.Conns == 0 {
		cfg.Conns = 2
	}
	if cfg.Conns < 0 || cfg.Conns > 64 {
		return nil, fmt.Errorf("upstream: Conns %d out of range (1..64)", cfg.Conns)
	}
	if cfg.Databases == 0 {
		cfg.Databases = 16
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.DialTimeout < 0 || cfg.RequestTimeout < 0 {
		return nil, fmt.Errorf("upstream: negative DialTimeout %v or RequestTimeout %v", cfg.DialTimeout, cfg.RequestTimeout)
	}
	switch cfg.Protocol {
	case 0:
		cfg.Protocol = 2
	case 2, 3:
	default:
		return nil, fmt.Errorf("upstream: Protocol %d is not a RESP version (2 or 3)", cfg.Protocol)
	}
	return &Pool{
		cfg:       cfg,
		slots:     make([]slot, cfg.Databases*cfg.Conns),
		dedicated: make(map[*Conn]struct{}),
	}, nil
}

// Databases is the number of databases the pool accepts.
func (p *Pool) Databases() int { return p.cfg.Databases }

// Do sends b's requests to database db on a shared connection chosen by hint
// (a stable number per client keeps its batches on one connection) and waits
// for the replies. A failed batch reports its error in b.Err; the replies
// before b.Answered() are valid. When the connection could not be readied
// because Redis is busy or loading, b.Err holds a *ReplyError: see Batch.Err.
func (p *Pool) Do(ctx context.Context, db int, hint uint64, b *Batch) {
	if db < 0 || db >= p.cfg.Databases {
		b.fail(0, fmt.Errorf("upstream: db %d out of range", db))
		return
	}
	s := &p.slots[db*p.cfg.Conns+int(hint%uint64(p.cfg.Conns))]
	c, err := p.shared(ctx, s, db)
	if err != nil {
		b.fail(0, err)
		return
	}
	c.Do(b)
}

func (p *Pool) shared(ctx context.Context, s *slot, db int) (*Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil && s.c.Usable() {
		return s.c, nil
	}
	if p.closed.Load() {
		return nil, ErrClosed
	}
	c, err := p.dial(ctx, db, p.cfg.RequestTimeout)
	if err != nil {
		return nil, err
	}
	s.c = c
	return c, nil
}

// Session is a connection for one client alone: see Pool.Dedicated. A *Conn
// is one; a cluster's may stand for a connection to whichever node the
// client's keys lead to.
type Session interface {
	// Do sends b and waits for its replies, as Conn.Do.
	Do(b *Batch)
	// Usable reports whether the session may carry a batch, as Conn.Usable.
	Usable() bool
	// Err is non-nil once the session is dead.
	Err() error
	// Close ends the session; unanswered batches fail with ErrClosed.
	Close()
}

var _ Session = (*Conn)(nil)

// Dedicated opens a connection for one client alone, for commands that leave
// state on the connection (MULTI, WATCH) or hold it (BLPOP). The caller closes
// it. A *ReplyError (see Batch.Err) means Redis is busy or loading and would
// have answered the client's commands with its Line.
func (p *Pool) Dedicated(ctx context.Context, db int) (Session, error) {
	c, err := p.dedicate(ctx, db)
	if err != nil {
		return nil, err // no typed nil in the interface
	}
	return c, nil
}

func (p *Pool) dedicate(ctx context.Context, db int) (*Conn, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	c, err := p.dial(ctx, db, 0)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		c.Close()
		return nil, ErrClosed
	}
	p.dedicated[c] = struct{}{}
	c.onClose = func() {
		p.mu.Lock()
		delete(p.dedicated, c)
		p.mu.Unlock()
	}
	return c, nil
}

// Urgent sends b on a connection of its own, made for it and closed after,
// and waits for the replies. It is for the commands that a Redis busy running
// a script still serves, to end the script: SCRIPT KILL, FUNCTION KILL,
// SHUTDOWN NOSAVE. Sent with Do, such a command could queue behind the
// script's own call on the same connection, which Redis does not read again
// until the script ends: it would wait for what it is meant to stop. The
// connection is in database 0, as these commands are server-wide, and ctx
// bounds the whole exchange: if it ends first, the connection is closed and b
// fails with ctx's error.
func (p *Pool) Urgent(ctx context.Context, b *Batch) {
	c, err := p.dedicate(ctx, 0)
	if err != nil {
		b.fail(0, err)
		return
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() {
		c.die(fmt.Errorf("upstream: urgent batch: %w", context.Cause(ctx)))
	})
	defer stop()
	c.Do(b)
}

// Close closes every connection; batches in flight fail with ErrClosed.
func (p *Pool) Close() {
	p.closed.Store(true)
	for i := range p.slots {
		s := &p.slots[i]
		s.mu.Lock()
		if s.c != nil {
			s.c.Close()
		}
		s.mu.Unlock()
	}
	p.mu.Lock()
	ded := make([]*Conn, 0, len(p.dedicated))
	for c := range p.dedicated {
		ded = append(ded, c)
	}
	p.mu.Unlock()
	for _, c := range ded {
		c.Close()
	}
}

// dial makes a connection for database db whose batches wait at most timeout
// (0: no bound) for their replies. While dials fail it backs off: see backoff.
func (p *Pool) dial(ctx context.Context, db int, timeout time.Duration) (*Conn, error) {
	addr := p.addr()
	started, err := p.bo.allow(addr)
	if err != nil {
		return nil, err
	}
	limit := p.cfg.DialTimeout
	if timeout > 0 && timeout < limit {
		limit = timeout
	}
	nc, err := p.connect(ctx, db, limit)
	var re *ReplyError
	switch {
	case err == nil || errors.As(err, &re):
		// Redis answered: busy or loading is no reason to wait.
		p.bo.succeeded(addr)
	case ctx.Err() == nil:
		p.bo.failed(addr, started, err)
	}
	if err != nil {
		return nil, err
	}
	return newConn(nc, timeout), nil
}

// addr is where the next dial goes.
func (p *Pool) addr() string {
	if p.cfg.Target != nil {
		return p.cfg.Target.Addr()
	}
	return p.cfg.Addr
}

// connect dials the upstream and runs the handshake for database db, all
// within limit.
func (p *Pool) connect(ctx context.Context, db int, limit time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	addr, nc, err := p.dialTCP(ctx)
	if err != nil {
		return nil, fmt.Errorf("upstream: dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	sc, err := p.secure(ctx, nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("upstream: %w", err)
	}
	nc = sc
	if err := p.handshake(nc, db); err != nil {
		nc.Close()
		return nil, fmt.Errorf("upstream %s: %w", addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}

// Batch is a list of raw requests and, after Do, their raw replies. A client
// keeps one Batch and reuses it, so the steady state allocates nothing.
type Batch struct {
	reqs [][]byte
	buf  []byte // replies, back to back
	ends []int  // ends[i] is the end of reply i in buf
	err  error
	done chan struct{} // wakes the owner: batch finished, or reading handed over

	// Guarded by the connection's mu while the batch is on it: when its
	// replies are due (Config.RequestTimeout).
	deadline time.Time

	// Guarded by the connection's mu while the batch is on it.
	finished bool // answered or failed; the owner may return
	parked   bool // the owner sleeps on done and must be woken
}

// Reset empties b for reuse.
func (b *Batch) Reset() {
	b.reqs = b.reqs[:0]
	b.buf = b.buf[:0]
	b.ends = b.ends[:0]
	b.err = nil
}

// Add appends a request (one complete RESP command) and returns its index. req
// must stay unchanged until Do returns.
func (b *Batch) Add(req []byte) int {
	b.reqs = append(b.reqs, req)
	return len(b.reqs) - 1
}

// Len is the number of requests.
func (b *Batch) Len() int { return len(b.reqs) }

// Answered is the number of replies received; it is Len unless Err is set.
func (b *Batch) Answered() int { return len(b.ends) }

// Err is why the batch stopped short, if it did. If errors.As finds a
// *ReplyError in it, the batch was never sent because Redis, busy or loading,
// refused to ready a connection for it; Redis would have answered each
// request with the error's Line, and the caller should do the same for the
// requests from Answered() on.
func (b *Batch) Err() error { return b.err }

// Reply returns reply i; it is valid until the next Reset.
func (b *Batch) Reply(i int) []byte {
	start := 0
	if i > 0 {
		start = b.ends[i-1]
	}
	return b.buf[start:b.ends[i]]
}

// Request is request i, as added.
func (b *Batch) Request(i int) []byte { return b.reqs[i] }

// The three methods below are for an upstream that answers a batch from the
// replies of others (a cluster sends parts of it to each node): it clears
// the replies, appends each in request order, and fails the rest if one
// could not be had.

// ResetReplies drops the replies and the error, keeping the requests.
func (b *Batch) ResetReplies() {
	b.buf, b.ends, b.err = b.buf[:0], b.ends[:0], nil
}

// AppendReply records reply, one complete reply, as the next request's.
func (b *Batch) AppendReply(reply []byte) {
	b.buf = append(b.buf, reply...)
	b.ends = append(b.ends, len(b.buf))
}

// Fail stops the batch short: the requests from Answered() on fail with err.
func (b *Batch) Fail(err error) { b.fail(len(b.ends), err) }

func (b *Batch) fail(answered int, err error) {
	b.ends = b.ends[:answered]
	b.err = err
}

// Conn is one upstream connection. No goroutine works for it in the
// background: the goroutines waiting in Do do the work, in two roles. The one
// whose batch finds no writer sends it, and whatever other batches queue
// meanwhile, as one pipeline. The one that finds no reader reads replies and
// hands each to its batch in send order; once its own batch is complete it
// passes reading on to another waiter. A lone client thus writes and reads
// its own batch and pays no goroutine hand-off at all, while under load one
// read serves many clients.
type Conn struct {
	nc      net.Conn
	stopped chan struct{} // closed once the connection is dead and every batch finished
	onClose func()

	// timeout bounds each batch's wait for its replies; 0: no bound. timer
	// fires at the oldest unanswered batch's deadline (see expire); armed,
	// guarded by mu, says it is set.
	timeout time.Duration
	timer   *time.Timer
	armed   bool

	mu       sync.Mutex
	err      error    // set once; the connection is dead
	queue    []*Batch // waiting to be written
	inflight []*Batch // from ihead on: handed to the writer, unanswered, in send order
	ihead    int
	writing  bool   // a goroutine holds the writer role
	reader   *Batch // whose owner holds (or has been handed) the reader role; helper; nil: free
	reaped   bool   // every batch failed after death; stopped is closed

	// Writer role state.
	w     *bufio.Writer
	taken []*Batch

	// Reader role state.
	rbuf   []byte // replies read; the first rstart bytes are handed out
	rstart int
	sc     resp.ReplyScanner
}

// helper stands in Conn.reader for a goroutine started only to read while a
// writer sends a large pipeline and nobody else waits; see ensureReader.
var helper = new(Batch)

const (
	bufSize = 64 << 10
	// A writer makes sure someone reads after each readAhead bytes it sends
	// in one go; see ensureReader.
	readAhead = bufSize
)

func newConn(nc net.Conn, timeout time.Duration) *Conn {
	if tc, ok := socket(nc).(*net.TCPConn); ok {
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(30 * time.Second)
	}
	c := &Conn{
		nc:      nc,
		stopped: make(chan struct{}),
		w:       bufio.NewWriterSize(nc, bufSize),
		rbuf:    make([]byte, 0, bufSize),
		timeout: timeout,
	}
	if timeout > 0 {
		c.timer = time.AfterFunc(time.Hour, c.expire)
		c.timer.Stop()
	}
	return c
}

// Do sends b and waits for its replies (or the connection's failure).
func (c *Conn) Do(b *Batch) {
	if b.done == nil {
		b.done = make(chan struct{}, 1)
	}
	b.buf, b.ends, b.err = b.buf[:0], b.ends[:0], nil
	b.finished, b.parked = false, false
	if len(b.reqs) == 0 {
		return
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		b.fail(0, err)
		return
	}
	c.queue = append(c.queue, b)
	if c.timeout > 0 {
		b.deadline = time.Now().Add(c.timeout)
		if !c.armed {
			c.armed = true
			c.timer.Reset(c.timeout)
		}
	}
	if !c.writing {
		c.writing = true
		c.mu.Unlock()
		c.write() // returns holding mu
	}
	c.await(b)
}

// await waits, with mu held, until b is finished, reading replies itself
// whenever the reader role is free or handed to it. It returns with mu released.
func (c *Conn) await(b *Batch) {
	for !b.finished {
		if c.reader == b || c.reader == nil && c.err == nil {
			c.reader = b
			c.read(b)
			// b is finished, or the connection died and b fails as soon
			// as no writer holds it.
			continue
		}
		b.parked = true
		c.mu.Unlock()
		<-b.done
		c.mu.Lock()
	}
	c.mu.Unlock()
}

// Usable reports whether the connection may carry a batch. An idle connection
// has no reader that would see the upstream close it (a restart, CLIENT KILL, a
// timeout), so it is checked here: a batch sent on it would fail, and a proxy
// never re-sends a batch. The check is one non-blocking peek, made under mu so
// that no batch can be written, and answered, meanwhile.
func (c *Conn) Usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false
	}
	idle := !c.writing && c.reader == nil && len(c.queue) == 0 && c.ihead == len(c.inflight)
	if idle && !quiet(socket(c.nc)) { // over TLS, any byte (a close_notify) is out of turn too
		c.dieLocked(errors.New("upstream: connection closed while idle"))
		return false
	}
	return true
}

// Err is non-nil once the connection is dead.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close kills the connection and waits until every batch on it has finished;
// unanswered batches fail with ErrClosed.
func (c *Conn) Close() {
	c.die(ErrClosed)
	<-c.stopped
	if c.onClose != nil {
		c.onClose()
	}
}

func (c *Conn) die(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dieLocked(err)
}

func (c *Conn) dieLocked(err error) {
	if c.err == nil {
		c.err = err
		c.nc.Close() // wakes a reader or writer blocked on the socket
		if c.timer != nil {
			c.timer.Stop()
		}
		c.reap()
	}
}

// ErrTimeout fails the batches of a shared connection closed because one of
// them waited longer than Config.RequestTimeout for its replies.
var ErrTimeout = errors.New("upstream: no reply within the request timeout; connection closed")

// expire runs on the timer: it closes the connection if its oldest unanswered
// batch is past its deadline, else sets the timer for that deadline. Batches
// go out and are answered in queue order, so the oldest is the first of
// inflight, or of queue when nothing is in flight.
func (c *Conn) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	if c.err != nil {
		return
	}
	var oldest *Batch
	switch {
	case c.ihead < len(c.inflight):
		oldest = c.inflight[c.ihead]
	case len(c.queue) > 0:
		oldest = c.queue[0]
	default:
		return
	}
	if d := time.Until(oldest.deadline); d > 0 {
		c.armed = true
		c.timer.Reset(d)
		return
	}
	c.dieLocked(fmt.Errorf("%w (%v)", ErrTimeout, c.timeout))
}

// reap fails every batch left on a dead connection, once no goroutine holds a
// role and so none touches them. Whoever gives up the last role calls it.
func (c *Conn) reap() {
	if c.err == nil || c.reader != nil || c.writing || c.reaped {
		return
	}
	c.reaped = true
	for _, b := range c.inflight[c.ihead:] {
		c.finish(b, c.err)
	}
	for _, b := range c.queue {
		c.finish(b, c.err)
	}
	c.inflight, c.ihead, c.queue = nil, 0, nil
	close(c.stopped)
}

// finish marks b done, with mu held, and wakes its owner if it sleeps.
func (c *Conn) finish(b *Batch, err error) {
	if err != nil {
		b.fail(len(b.ends), err)
	}
	b.finished = true
	c.wake(b)
}

func (c *Conn) wake(b *Batch) {
	if b.parked {
		b.parked = false
		b.done <- struct{}{}
	}
}

// write runs in the goroutine holding the writer role: it sends queued batches
// until none are left, then gives the role up. It returns with mu held.
func (c *Conn) write() {
	sent, check := 0, readAhead
	for {
		written, busy := 0, false
		for gathered := false; ; {
			c.mu.Lock()
			if c.err != nil {
				c.writing = false
				c.reap()
				return
			}
			if written == 0 {
				// Busy with batches sent before this flush, not with those
				// it sends: a lone client must not yield (Gosched wakes an
				// idle thread, a futex call each way) for nobody to join.
				busy = c.ihead < len(c.inflight)
			}
			c.taken, c.queue = c.queue, c.taken[:0]
			c.push(c.taken)
			c.mu.Unlock()
			if len(c.taken) == 0 {
				// While earlier batches still await replies the connection is
				// busy anyway: give other clients a moment to join this flush
				// instead of sending many small ones (each a syscall here and
				// a read in Redis).
				if gathered || written == 0 || !busy {
					break
				}
				gathered = true
				runtime.Gosched()
				continue
			}
			for _, b := range c.taken {
				for _, r := range b.reqs {
					if sent += len(r); sent >= check {
						check = sent + readAhead
						c.ensureReader()
					}
					if _, err := c.w.Write(r); err != nil {
						c.die(fmt.Errorf("upstream: write: %w", err))
						break
					}
				}
			}
			written += len(c.taken)
			clear(c.taken)
		}
		if written > 0 {
			if err := c.w.Flush(); err != nil {
				c.die(fmt.Errorf("upstream: write: %w", err))
			}
		}
		c.mu.Lock()
		if len(c.queue) == 0 || c.err != nil {
			c.writing = false
			c.reap()
			return
		}
		c.mu.Unlock()
	}
}

// ensureReader starts a helper to read if nobody does. A writer sending a
// large pipeline calls it: while its own replies go unread, the upstream could
// stop reading its requests, and the write would never end.
func (c *Conn) ensureReader() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reader == nil && c.err == nil {
		c.reader = helper
		go func() {
			c.mu.Lock()
			c.read(nil)
			c.mu.Unlock()
		}()
	}
}

// push appends batches to inflight, with mu held. The writer does this before
// their bytes leave, so a reply never arrives for a batch the reader does not
// know yet.
func (c *Conn) push(bs []*Batch) {
	if c.ihead > 0 && len(c.inflight)+len(bs) > cap(c.inflight) {
		n := copy(c.inflight, c.inflight[c.ihead:])
		clear(c.inflight[n:])
		c.inflight, c.ihead = c.inflight[:n], 0
	}
	c.inflight = append(c.inflight, bs...)
}

// read runs, with mu held, in the goroutine holding the reader role. It hands
// replies to the batches in flight, in order, until own is finished, then
// passes the role on. own is nil for a helper, which reads until someone waits
// to take over. On a dead connection it gives the role up at once.
func (c *Conn) read(own *Batch) {
	for {
		if c.err != nil {
			c.reader = nil
			c.reap()
			return
		}
		var head *Batch
		if c.ihead < len(c.inflight) {
			head = c.inflight[c.ihead]
		}
		// Whether to wait on the socket: the helper keeps reading only
		// while nobody else is there to.
		stay := own != nil && !own.finished || own == nil && head != nil && c.waiter() == nil
		if head == nil {
			if !stay {
				c.pass()
				return
			}
			// own is still queued behind the writer.
			c.mu.Unlock()
			err := c.readMore()
			c.mu.Lock()
			if err == nil && c.ihead == len(c.inflight) && c.rstart < len(c.rbuf) {
				err = errors.New("upstream: reply to no request")
			}
			if err != nil {
				c.dieLocked(err)
			}
			continue
		}
		// Replies already read are handed out even when leaving: that costs
		// no wait, and spares their owners the reader role's hand-over.
		c.mu.Unlock()
		complete, err := c.fill(head, stay)
		c.mu.Lock()
		if err != nil {
			c.dieLocked(err)
			continue
		}
		if !complete {
			c.pass()
			return
		}
		c.inflight[c.ihead] = nil
		if c.ihead++; c.ihead == len(c.inflight) {
			c.inflight, c.ihead = c.inflight[:0], 0
		}
		c.finish(head, nil)
	}
}

// waiter returns a batch whose owner sleeps and could take the reader role.
func (c *Conn) waiter() *Batch {
	for _, b := range c.inflight[c.ihead:] {
		if b.parked {
			return b
		}
	}
	for _, b := range c.queue {
		if b.parked {
			return b
		}
	}
	return nil
}

// pass gives the reader role up, with mu held: to a sleeping owner if there is
// one, else to nobody. Owners still awake need no wake-up: each takes the free
// role when it comes to wait, the writer once it has written (and a writer
// with much to send makes sure someone reads meanwhile: see ensureReader).
func (c *Conn) pass() {
	c.reader = c.waiter()
	if c.reader != nil {
		c.wake(c.reader)
	}
}

// fill hands replies to b until it has all of them. It waits for more bytes
// only if wait is set; otherwise it reports false when the bytes read so far
// run out. A reply cut short stays with the scanner, which resumes it.
func (c *Conn) fill(b *Batch, wait bool) (bool, error) {
	for len(b.ends) < len(b.reqs) {
		n, err := c.sc.Scan(c.rbuf[c.rstart:])
		if err != nil {
			return false, fmt.Errorf("upstream: bad reply: %w", err)
		}
		if n == 0 {
			if !wait {
				return false, nil
			}
			if err := c.readMore(); err != nil {
				return false, err
			}
			continue
		}
		b.buf = append(b.buf, c.rbuf[c.rstart:c.rstart+n]...)
		b.ends = append(b.ends, len(b.buf))
		c.rstart += n
	}
	// Shrink a buffer that one huge reply grew.
	if c.rstart == len(c.rbuf) && cap(c.rbuf) > 1<<20 {
		c.rbuf, c.rstart = make([]byte, 0, bufSize), 0
	}
	return true, nil
}

// readMore reads what the socket has into rbuf, keeping the bytes not yet
// handed out.
func (c *Conn) readMore() error {
	buf, start := c.rbuf, c.rstart
	if start > 0 && start == len(buf) {
		buf, start = buf[:0], 0
	} else if len(buf) == cap(buf) {
		// Keep the unread part; grow when it fills the buffer.
		rest := len(buf) - start
		if rest*2 > cap(buf) {
			nb := make([]byte, rest, cap(buf)*2)
			copy(nb, buf[start:])
			buf = nb
		} else {
			copy(buf, buf[start:])
			buf = buf[:rest]
		}
		start = 0
	}
	m, err := c.nc.Read(buf[len(buf):cap(buf)])
	c.rbuf, c.rstart = buf[:len(buf)+m], start
	if m == 0 && err != nil {
		return fmt.Errorf("upstream: read: %w", err)
	}
	return nil
}
