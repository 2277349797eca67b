package upstream

import (
	"context"
	"net"
)

// Raw opens a connection to database db, readied like every other (same
// protocol, authenticated, named), and hands the socket over: for a client
// that takes the wire for itself, such as a subscriber, whose replies come
// unasked and cannot be matched to requests. The caller owns and closes it;
// Close does not. A *ReplyError (see Batch.Err) means Redis is busy or loading
// and would have answered the client's commands with its Line.
func (p *Pool) Raw(ctx context.Context, db int) (net.Conn, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	return p.connect(ctx, db, p.cfg.DialTimeout)
}
