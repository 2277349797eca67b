package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// Target is an upstream address that can move, as a Sentinel-managed master
// does at a failover. Every connection is dialled through Dial, which goes to
// the current address and remembers the socket until it is closed; Set moves
// the address and closes every socket still open to the previous one. To
// whoever holds such a connection (a Pool, a go-redis client given Dial as
// its Dialer, a subscriber's raw socket) that looks exactly like the upstream
// dropping it: requests in flight fail, and are never retried, and the next
// dial reaches the new address.
//
// A dial that was under way while the address moved is closed and fails, so
// that no connection to a previous address survives Set.
type Target struct {
	mu    sync.Mutex // guards the fields below
	addr  string
	conns map[*trackedConn]struct{} // open sockets, all to addr
}

// NewTarget returns a Target at addr (host:port).
func NewTarget(addr string) *Target {
	return &Target{addr: addr, conns: make(map[*trackedConn]struct{})}
}

// Addr is the current address.
func (t *Target) Addr() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addr
}

// Set moves the target to addr and closes every connection open to the
// previous address; it reports how many. Setting the current address does
// nothing.
func (t *Target) Set(addr string) (closed int) {
	t.mu.Lock()
	if addr == t.addr {
		t.mu.Unlock()
		return 0
	}
	t.addr = addr
	old := t.conns
	t.conns = make(map[*trackedConn]struct{})
	t.mu.Unlock()
	for c := range old {
		_ = c.Conn.Close()
	}
	return len(old)
}

// ErrMoved fails a dial that was under way while the Target moved.
var ErrMoved = errors.New("upstream: the upstream moved while dialling")

// Dial connects to the current address over TCP. Its signature is go-redis's
// Options.Dialer: network and addr are ignored.
func (t *Target) Dial(ctx context.Context, _, _ string) (net.Conn, error) {
	addr := t.Addr()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &trackedConn{Conn: nc, t: t}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.addr != addr {
		nc.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, ErrMoved)
	}
	t.conns[c] = struct{}{}
	return c, nil
}

// trackedConn is a socket dialled by a Target, which forgets it on Close.
type trackedConn struct {
	net.Conn
	t *Target
}

func (c *trackedConn) Close() error {
	c.t.mu.Lock()
	delete(c.t.conns, c)
	c.t.mu.Unlock()
	return c.Conn.Close()
}

// SyscallConn exposes the socket, so that an idle connection's check (see
// Conn.Usable) still sees the peer's close.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// dialTCP opens a socket to the upstream: to the Target's current address
// when there is one, else to Addr.
func (p *Pool) dialTCP(ctx context.Context) (addr string, nc net.Conn, err error) {
	if p.cfg.Target == nil {
		var d net.Dialer
		nc, err = d.DialContext(ctx, "tcp", p.cfg.Addr)
		return p.cfg.Addr, nc, err
	}
	addr = p.cfg.Target.Addr()
	nc, err = p.cfg.Target.Dial(ctx, "tcp", addr)
	return addr, nc, err
}
