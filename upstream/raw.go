package upstream

import (
	"context"
	"net"
)

// Raw opens a connection to database db, authenticated and named like every
// other, and hands the socket over: for a client that takes the wire for
// itself, such as a subscriber, whose replies come unasked and cannot be
// matched to requests. The caller owns and closes it; Close does not.
func (p *Pool) Raw(ctx context.Context, db int) (net.Conn, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	return p.connect(ctx, db)
}
