package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// relayName names the suite's latency relays, which put Redis one network hop
// away. A relay is a process of its own, as a network is no part of the
// machines it joins: its work then does not queue behind the load generator's.
const relayName = "relay"

// maxRelayLatency bounds --latency: a relay holds what it relays that long.
const maxRelayLatency = time.Second

// relayCmd relays --listen to --target until ctx ends, adding --latency in each
// direction (see relay).
func relayCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "IPv4 loopback address to serve on")
	to := fs.String("target", "", "the server to relay to, an IPv4 loopback host:port (required)")
	latency := fs.Duration("latency", 100*time.Microsecond, "one-way latency added in each direction")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := newRelay(*listen, *to, *latency)
	if err != nil {
		return err
	}
	return r.run(ctx)
}

// relayAddrs checks a relay's addresses and latency.
func relayAddrs(listen, to string, latency time.Duration) (l, t netip.AddrPort, err error) {
	for _, a := range []struct {
		what, addr string
		out        *netip.AddrPort
	}{{"--listen", listen, &l}, {"--target", to, &t}} {
		ap, err := netip.ParseAddrPort(a.addr)
		if err != nil {
			return l, t, fmt.Errorf("relay: %s %q: %w", a.what, a.addr, err)
		}
		if !ap.Addr().Is4() || !ap.Addr().IsLoopback() {
			return l, t, fmt.Errorf("relay: %s %s is not an IPv4 loopback address", a.what, ap.Addr())
		}
		*a.out = ap
	}
	if t.Port() == 0 {
		return l, t, fmt.Errorf("relay: --target %s has no port", to)
	}
	if latency < 0 || latency > maxRelayLatency {
		return l, t, fmt.Errorf("relay: --latency %v is not in [0, %v]", latency, maxRelayLatency)
	}
	return l, t, nil
}
