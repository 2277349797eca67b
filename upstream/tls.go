package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
)

// secure runs the TLS handshake on a freshly dialled connection when the pool
// speaks TLS (Config.TLS), and returns the connection to use from then on. A
// failed handshake names the server and the reason: an unknown CA, a name the
// certificate does not carry, a client certificate the server refused.
func (p *Pool) secure(ctx context.Context, nc net.Conn) (net.Conn, error) {
	if p.cfg.TLS == nil {
		return nc, nil
	}
	tc := tls.Client(nc, p.cfg.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with %s: %w", p.cfg.Addr, err)
	}
	return tc, nil
}

// socket is the TCP connection under nc, TLS or not, for its socket options.
func socket(nc net.Conn) net.Conn {
	if tc, ok := nc.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return nc
}
