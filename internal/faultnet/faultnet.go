// Package faultnet is a TCP bridge for tests: it listens on loopback and
// relays every connection to a target (a Redis), and lets a test break the
// path between them at runtime and heal it again.
//
// Each accepted connection gets a socket of its own to the target, and each
// direction a reader and a writer goroutine joined by a queue of chunks, each
// stamped with the time it was read. The writer applies the faults in force
// when it takes a chunk: it waits while the bridge is blackholed, delays the
// chunk until its stamp plus the direction's latency, writes it in small
// slices or at a limited rate, and cuts the connection where told to. Faults
// change only the writers' behaviour, so healing resumes the flow with the
// bytes held meanwhile, as TCP would deliver them once a route came back.
//
// Nothing here belongs in the proxy: it is for tests and experiments.
package faultnet

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Faults is what the bridge does to the traffic; the zero value relays
// faithfully.
type Faults struct {
	// Up delays client→target bytes, Down target→client bytes.
	Up, Down time.Duration
	// Blackhole keeps connections (and accepts new ones) but forwards nothing
	// in either direction until it is lifted; the bytes held are delivered
	// then.
	Blackhole bool
	// Refuse makes new connections fail at once (accepted, then reset), as a
	// host that is down would.
	Refuse bool
	// Slice writes each chunk in pieces of 1..Slice bytes, SliceDelay apart.
	Slice      int
	SliceDelay time.Duration
	// Rate limits each direction of each connection to this many bytes per
	// second; 0: no limit.
	Rate int
}

// Bridge relays connections from its listener to a target address.
type Bridge struct {
	ln     net.Listener
	target string

	faults atomic.Pointer[Faults]

	mu      sync.Mutex // guards the fields below
	links   map[*link]struct{}
	changed chan struct{} // closed and replaced whenever the faults change
	closed  bool

	accepted atomic.Int64
	done     chan struct{} // closed when the accept loop has stopped
}

// New starts a bridge on a free loopback port relaying to target (host:port).
func New(target string) (*Bridge, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &Bridge{
		ln:      ln,
		target:  target,
		links:   make(map[*link]struct{}),
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	b.faults.Store(&Faults{})
	go b.accept()
	return b, nil
}

// Addr is where clients connect instead of the target.
func (b *Bridge) Addr() string { return b.ln.Addr().String() }

// Accepted is the number of connections accepted so far.
func (b *Bridge) Accepted() int64 { return b.accepted.Load() }

// Conns is the number of connections open now.
func (b *Bridge) Conns() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.links)
}

// Faults returns the faults in force.
func (b *Bridge) Faults() Faults { return *b.faults.Load() }

// Set replaces the faults in force. It applies to bytes not yet written,
// on every connection.
func (b *Bridge) Set(f Faults) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.faults.Store(&f)
	close(b.changed)
	b.changed = make(chan struct{})
}

// Update changes the faults in force through fn.
func (b *Bridge) Update(fn func(*Faults)) {
	f := b.Faults()
	fn(&f)
	b.Set(f)
}

// SetLatency delays client→target bytes by up and target→client bytes by down.
func (b *Bridge) SetLatency(up, down time.Duration) {
	b.Update(func(f *Faults) { f.Up, f.Down = up, down })
}

// Blackhole stops forwarding (see Faults.Blackhole).
func (b *Bridge) Blackhole() { b.Update(func(f *Faults) { f.Blackhole = true }) }

// SliceWrites writes every chunk in pieces of 1..k bytes, delay apart.
func (b *Bridge) SliceWrites(k int, delay time.Duration) {
	b.Update(func(f *Faults) { f.Slice, f.SliceDelay = k, delay })
}

// LimitRate limits each direction of each connection to bytesPerSec.
func (b *Bridge) LimitRate(bytesPerSec int) { b.Update(func(f *Faults) { f.Rate = bytesPerSec }) }

// Heal lifts every fault. Connections cut stay cut; new ones relay again.
func (b *Bridge) Heal() { b.Set(Faults{}) }

// Cut closes every open connection, both sides: with a reset (RST) when rst
// is set, else with an orderly close (FIN). New connections are refused
// until Heal. It reports how many connections it closed.
func (b *Bridge) Cut(rst bool) int {
	b.Update(func(f *Faults) { f.Refuse = true })
	b.mu.Lock()
	ls := make([]*link, 0, len(b.links))
	for l := range b.links {
		ls = append(ls, l)
	}
	b.mu.Unlock()
	for _, l := range ls {
		l.close(rst)
	}
	return len(ls)
}

// CutAfter cuts every connection open now once n more bytes of the
// target→client stream have been forwarded on it: the client gets the first
// n bytes of whatever the target sends next (a reply cut short), then a
// reset. Connections opened later are not affected.
func (b *Bridge) CutAfter(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for l := range b.links {
		l.cutAfter.Store(n)
	}
}

// Close stops accepting and closes every connection.
func (b *Bridge) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.ln.Close()
	<-b.done
	b.mu.Lock()
	ls := make([]*link, 0, len(b.links))
	for l := range b.links {
		ls = append(ls, l)
	}
	b.mu.Unlock()
	for _, l := range ls {
		l.close(false)
		l.wg.Wait()
	}
}

func (b *Bridge) accept() {
	defer close(b.done)
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.accepted.Add(1)
		if b.Faults().Refuse {
			reset(c)
			continue
		}
		go b.serve(c)
	}
}

func (b *Bridge) serve(client net.Conn) {
	server, err := net.DialTimeout("tcp", b.target, 5*time.Second)
	if err != nil {
		reset(client)
		return
	}
	l := &link{b: b, client: client, server: server, stop: make(chan struct{})}
	l.cutAfter.Store(-1)
	b.mu.Lock()
	if b.closed || b.Faults().Refuse {
		b.mu.Unlock()
		reset(client)
		reset(server)
		return
	}
	b.links[l] = struct{}{}
	b.mu.Unlock()
	l.wg.Add(2)
	go l.pipe(client, server, false)
	go l.pipe(server, client, true)
}

// wait returns a channel closed at the next change of faults.
func (b *Bridge) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// link is one relayed connection.
type link struct {
	b              *Bridge
	client, server net.Conn
	// cutAfter is how many more target→client bytes to forward before cutting
	// the connection; negative: no such fault.
	cutAfter atomic.Int64

	once sync.Once
	stop chan struct{} // closed by close
	wg   sync.WaitGroup
}

func (l *link) close(rst bool) {
	l.once.Do(func() {
		close(l.stop)
		if rst {
			reset(l.client)
			reset(l.server)
		} else {
			l.client.Close()
			l.server.Close()
		}
		l.b.mu.Lock()
		delete(l.b.links, l)
		l.b.mu.Unlock()
	})
}

type chunk struct {
	data []byte
	at   time.Time
}

// pipe relays src to dst: a reader stamps chunks and queues them, and this
// goroutine writes them under the faults in force. down is the target→client
// direction.
func (l *link) pipe(src, dst net.Conn, down bool) {
	defer l.wg.Done()
	q := make(chan chunk, 64)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 16<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{buf[:n], time.Now()}:
				case <-l.stop:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var c chunk
		var ok bool
		select {
		case c, ok = <-q:
		case <-l.stop:
			return
		}
		if !ok {
			// src ended: end the whole connection once what it sent is out.
			l.close(false)
			return
		}
		if err := l.deliver(dst, c, down); err != nil {
			l.close(errors.Is(err, errCut))
			return
		}
	}
}

var errCut = errors.New("faultnet: cut")

// deliver writes one chunk under the faults in force.
func (l *link) deliver(dst net.Conn, c chunk, down bool) error {
	for {
		f := l.b.faults.Load()
		if !f.Blackhole {
			break
		}
		select {
		case <-l.b.wait():
		case <-l.stop:
			return io.ErrClosedPipe
		}
	}
	f := l.b.faults.Load()
	delay := f.Up
	if down {
		delay = f.Down
	}
	if d := time.Until(c.at.Add(delay)); d > 0 {
		select {
		case <-time.After(d):
		case <-l.stop:
			return io.ErrClosedPipe
		}
	}
	data := c.data
	cut := false
	if down {
		if n := l.cutAfter.Load(); n >= 0 {
			if int64(len(data)) >= n {
				data, cut = data[:n], true
			} else {
				l.cutAfter.Store(n - int64(len(data)))
			}
		}
	}
	for len(data) > 0 {
		n := len(data)
		if f.Slice > 0 {
			n = min(n, 1+rand.IntN(f.Slice))
		}
		if f.Rate > 0 {
			n = min(n, max(1, f.Rate/100)) // pace in steps of 10ms or less
		}
		if _, err := dst.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
		var pause time.Duration
		if f.Slice > 0 && len(data) > 0 {
			pause = f.SliceDelay
		}
		if f.Rate > 0 {
			pause = max(pause, time.Duration(n)*time.Second/time.Duration(f.Rate))
		}
		if pause > 0 {
			select {
			case <-time.After(pause):
			case <-l.stop:
				return io.ErrClosedPipe
			}
		}
	}
	if cut {
		return errCut
	}
	return nil
}

// reset closes c with a TCP reset rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}
