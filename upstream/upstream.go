// Package upstream carries client commands to the upstream Redis and brings back
// their raw replies.
//
// Commands from many clients share a few multiplexed connections per database:
// each connection has a writer that sends whatever batches are queued as one
// pipeline and a reader that hands replies back in order, so fifty unpipelined
// clients cost Redis a few large reads and writes rather than fifty small ones.
// Bytes go out exactly as the client sent them and come back exactly as Redis
// answered; nothing is re-encoded. Connections that hold session state
// (transactions, blocking commands) are dedicated: see Dedicated.
//
// A request is never retried: when a connection breaks, every batch on it that
// has not been answered fails, because a write on it may already have run.
// The package knows nothing of caching or of what commands mean.
package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
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
}

type slot struct {
	mu sync.Mutex // guards c while (re)dialling
	c  *Conn
}

// New validates cfg. It does not dial: connections are made on first use, so a
// proxy can start while the upstream is still coming up.
func New(cfg Config) (*Pool, error) {
	if cfg.Addr == "" {
		return nil, errors.New("upstream: Addr is required")
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
// before b.Answered() are valid.
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
	if s.c != nil && s.c.Err() == nil {
		return s.c, nil
	}
	if p.closed.Load() {
		return nil, ErrClosed
	}
	c, err := p.dial(ctx, db)
	if err != nil {
		return nil, err
	}
	s.c = c
	return c, nil
}

// Dedicated opens a connection for one client alone, for commands that leave
// state on the connection (MULTI, WATCH) or hold it (BLPOP). The caller closes it.
func (p *Pool) Dedicated(ctx context.Context, db int) (*Conn, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	c, err := p.dial(ctx, db)
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

func (p *Pool) dial(ctx context.Context, db int) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", p.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("upstream: dial %s: %w", p.cfg.Addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	if err := p.handshake(nc, db); err != nil {
		nc.Close()
		return nil, fmt.Errorf("upstream %s: %w", p.cfg.Addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return newConn(nc), nil
}

// handshake authenticates and selects db before the connection carries client
// traffic, so client commands never see its replies.
func (p *Pool) handshake(nc net.Conn, db int) error {
	var req []byte
	n := 0
	if p.cfg.Password != "" {
		if p.cfg.Username != "" {
			req = appendCommand(req, "AUTH", p.cfg.Username, p.cfg.Password)
		} else {
			req = appendCommand(req, "AUTH", p.cfg.Password)
		}
		n++
	}
	if db != 0 {
		req = appendCommand(req, "SELECT", strconv.Itoa(db))
		n++
	}
	req = appendCommand(req, "CLIENT", "SETNAME", "cacheproxy")
	n++
	if _, err := nc.Write(req); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	rd := bufio.NewReader(nc)
	for i := 0; i < n; i++ {
		line, err := rd.ReadString('\n')
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		if len(line) > 0 && line[0] == '-' {
			return fmt.Errorf("handshake: %s", trimCRLF(line))
		}
	}
	if rd.Buffered() > 0 {
		return errors.New("handshake: unexpected data")
	}
	return nil
}

func appendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

func trimCRLF(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// Batch is a list of raw requests and, after Do, their raw replies. A client
// keeps one Batch and reuses it, so the steady state allocates nothing.
type Batch struct {
	reqs [][]byte
	buf  []byte // replies, back to back
	ends []int  // ends[i] is the end of reply i in buf
	err  error
	done chan struct{}
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

// Err is why the batch stopped short, if it did.
func (b *Batch) Err() error { return b.err }

// Reply returns reply i; it is valid until the next Reset.
func (b *Batch) Reply(i int) []byte {
	start := 0
	if i > 0 {
		start = b.ends[i-1]
	}
	return b.buf[start:b.ends[i]]
}

func (b *Batch) fail(answered int, err error) {
	b.ends = b.ends[:answered]
	b.err = err
}

// Conn is one upstream connection. The goroutine whose batch finds the
// connection idle writes it, and whatever other batches queue meanwhile, as one
// pipeline (so a lone client pays no goroutine hand-off on the way out); a reader
// goroutine matches replies to batches in order.
type Conn struct {
	nc       net.Conn
	inflight chan *Batch   // written, awaiting replies, in send order
	stopped  chan struct{} // closed when the reader and any writer have returned
	onClose  func()

	// unanswered counts batches flushed to Redis whose replies have not all
	// arrived; the writer waits a moment for company while it is above zero.
	unanswered atomic.Int64

	mu      sync.Mutex     // guards queue, err, writing
	queue   []*Batch       // waiting to be written
	err     error          // set once; the connection is dead
	writing bool           // a goroutine holds the writer role, and with it w and taken
	writers sync.WaitGroup // writer-role holders, waited for before the final drain

	w     *bufio.Writer
	taken []*Batch
}

const maxInflight = 4096

func newConn(nc net.Conn) *Conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetKeepAlive(true)
		_ = tc.SetKeepAlivePeriod(30 * time.Second)
	}
	c := &Conn{
		nc:       nc,
		inflight: make(chan *Batch, maxInflight),
		stopped:  make(chan struct{}),
		w:        bufio.NewWriterSize(nc, 64<<10),
	}
	go func() {
		c.readLoop()
		c.die(ErrClosed) // no-op if already dead; stops new writers
		c.writers.Wait()
		c.drain()
		close(c.stopped)
	}()
	return c
}

// Do sends b and waits for its replies (or the connection's failure).
func (c *Conn) Do(b *Batch) {
	if b.done == nil {
		b.done = make(chan struct{}, 1)
	}
	b.buf, b.ends, b.err = b.buf[:0], b.ends[:0], nil
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
	write := !c.writing
	if write {
		c.writing = true
		c.writers.Add(1)
	}
	c.mu.Unlock()
	if write {
		c.write()
	}
	<-b.done
}

// Err is non-nil once the connection is dead.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close kills the connection and waits for its goroutines; unanswered batches
// fail with ErrClosed.
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
	if c.err == nil {
		c.err = err
		c.nc.Close()
		close(c.inflight)
	}
}

// write runs in the goroutine holding the writer role: it sends queued batches
// until none are left, then gives the role up.
func (c *Conn) write() {
	defer c.writers.Done()
	for {
		written := 0
		for gathered := false; ; {
			var ok bool
			if c.taken, ok = c.take(c.taken); !ok {
				return
			}
			if len(c.taken) == 0 {
				// While earlier batches still await replies the connection is
				// busy anyway: give other clients a moment to join this flush
				// instead of sending many small ones (each a syscall here and
				// a read in Redis).
				if gathered || written == 0 || c.unanswered.Load() == 0 {
					break
				}
				gathered = true
				runtime.Gosched()
				continue
			}
			for _, b := range c.taken {
				for _, r := range b.reqs {
					if _, err := c.w.Write(r); err != nil {
						c.die(fmt.Errorf("upstream: write: %w", err))
						return
					}
				}
			}
			written += len(c.taken)
			clear(c.taken)
		}
		if written > 0 {
			c.unanswered.Add(int64(written))
			if err := c.w.Flush(); err != nil {
				c.die(fmt.Errorf("upstream: write: %w", err))
				return
			}
		}
		c.mu.Lock()
		// Nothing written means the reader is maxInflight batches behind: it
		// restarts writing when it catches up (see kick).
		if len(c.queue) == 0 || written == 0 || c.err != nil {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// kick starts a writer for batches left queued while the reader was behind.
func (c *Conn) kick() {
	c.mu.Lock()
	start := !c.writing && len(c.queue) > 0 && c.err == nil
	if start {
		c.writing = true
		c.writers.Add(1)
	}
	c.mu.Unlock()
	if start {
		go c.write()
	}
}

// take moves queued batches to the reader's list and returns them for writing.
// It returns false once the connection is dead.
func (c *Conn) take(taken []*Batch) ([]*Batch, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return taken[:0], false
	}
	taken, c.queue = c.queue, taken[:0]
	// Hand batches to the reader before their bytes leave, so that a reply can
	// never arrive for a batch the reader does not know yet. The sends happen
	// under mu so that die cannot close inflight in between.
	sent := 0
	for _, b := range taken {
		select {
		case c.inflight <- b:
			sent++
			continue
		default:
		}
		break // the reader is maxInflight batches behind
	}
	if sent < len(taken) {
		// Put the rest back, ahead of anything queued meanwhile; the reader
		// kicks a writer when it has caught up.
		c.queue = append(append([]*Batch(nil), taken[sent:]...), c.queue...)
		taken = taken[:sent]
	}
	return taken, true
}

func (c *Conn) readLoop() {
	buf := make([]byte, 0, 64<<10)
	start := 0 // first byte of buf not yet handed to a batch
	var sc resp.ReplyScanner
	for b := range c.inflight {
		for len(b.ends) < len(b.reqs) {
			n, err := sc.Scan(buf[start:])
			if err != nil {
				c.finish(b, fmt.Errorf("upstream: bad reply: %w", err))
				c.die(err)
				return
			}
			if n == 0 {
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
				buf = buf[:len(buf)+m]
				if m == 0 && err != nil {
					c.finish(b, fmt.Errorf("upstream: read: %w", err))
					c.die(err)
					return
				}
				continue
			}
			b.buf = append(b.buf, buf[start:start+n]...)
			b.ends = append(b.ends, len(b.buf))
			start += n
			sc = resp.ReplyScanner{}
		}
		c.finish(b, nil)
		if c.unanswered.Add(-1) == 0 {
			c.kick()
		}
		// Shrink a buffer that one huge reply grew.
		if start == len(buf) && cap(buf) > 1<<20 {
			buf, start = make([]byte, 0, 64<<10), 0
		}
	}
}

func (c *Conn) finish(b *Batch, err error) {
	if err != nil {
		b.fail(len(b.ends), err)
	}
	b.done <- struct{}{}
}

// drain fails every batch left once the reader and every writer have stopped.
func (c *Conn) drain() {
	c.mu.Lock()
	err := c.err
	queue := c.queue
	c.queue = nil
	c.mu.Unlock()
	for b := range c.inflight {
		c.finish(b, err)
	}
	for _, b := range queue {
		c.finish(b, err)
	}
}
