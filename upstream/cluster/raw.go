package cluster

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// Raw hands over a connection for a subscriber or MONITOR. Which node it
// reaches depends on the first command written to it: SSUBSCRIBE goes to the
// master of its shard channel's slot, as sharded pub/sub lives there;
// anything else to the node that serves every client's classic pub/sub (see
// pubsubNode), where messages published on any node arrive. The connection
// is dialled at that first write; reads wait for it.
func (r *Router) Raw(ctx context.Context, db int) (net.Conn, error) {
	if db != 0 {
		return nil, errOnlyDB0
	}
	return &lazyConn{r: r, ctx: ctx, ready: make(chan struct{})}, nil
}

// lazyConn is a connection dialled at its first write, to the node that
// write's command belongs on.
type lazyConn struct {
	r     *Router
	ctx   context.Context
	ready chan struct{} // closed once nc or err is set

	mu     sync.Mutex // guards nc, err, closed, and the dial
	nc     net.Conn
	err    error
	closed bool
}

// dial connects for the command in p, once.
func (l *lazyConn) dial(p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nc != nil || l.err != nil {
		return
	}
	top := l.r.c.Topology()
	addr := top.pubsubNode()
	if args, ok := resp.CommandArgs(p, nil); ok && len(args) > 1 && strings.EqualFold(string(args[0]), "ssubscribe") {
		if owner := top.Owner(Slot(args[1])); owner != "" {
			addr = owner
		}
	}
	l.nc, l.err = l.r.pool(addr).Raw(l.ctx, 0)
	if l.err != nil {
		l.r.c.refreshSoon()
	}
	close(l.ready)
}

func (l *lazyConn) conn() (net.Conn, error) {
	<-l.ready
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nc, l.err
}

func (l *lazyConn) Write(p []byte) (int, error) {
	l.dial(p)
	nc, err := l.conn()
	if err != nil {
		return 0, err
	}
	return nc.Write(p)
}

func (l *lazyConn) Read(p []byte) (int, error) {
	nc, err := l.conn()
	if err != nil {
		return 0, err
	}
	return nc.Read(p)
}

// Close closes the connection, or makes sure none will be dialled.
func (l *lazyConn) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.nc == nil && l.err == nil {
		l.err = upstream.ErrClosed
		close(l.ready)
		return nil
	}
	if l.nc != nil {
		return l.nc.Close()
	}
	return nil
}

// The rest wait for no dial: before it they have nothing to act on.

func (l *lazyConn) LocalAddr() net.Addr {
	if nc := l.dialled(); nc != nil {
		return nc.LocalAddr()
	}
	return &net.TCPAddr{}
}

func (l *lazyConn) RemoteAddr() net.Addr {
	if nc := l.dialled(); nc != nil {
		return nc.RemoteAddr()
	}
	return &net.TCPAddr{}
}

func (l *lazyConn) SetDeadline(t time.Time) error {
	if nc := l.dialled(); nc != nil {
		return nc.SetDeadline(t)
	}
	return nil
}

func (l *lazyConn) SetReadDeadline(t time.Time) error {
	if nc := l.dialled(); nc != nil {
		return nc.SetReadDeadline(t)
	}
	return nil
}

func (l *lazyConn) SetWriteDeadline(t time.Time) error {
	if nc := l.dialled(); nc != nil {
		return nc.SetWriteDeadline(t)
	}
	return nil
}

func (l *lazyConn) dialled() net.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nc
}
