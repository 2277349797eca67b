//go:build !linux

package main

import (
	"context"
	"errors"
	"time"
)

// relay needs epoll and timerfd: the Go runtime's own timers wake up to a
// millisecond late, which would swamp a latency of 100 µs.
type relay struct{}

func newRelay(listen, to string, latency time.Duration) (*relay, error) {
	if _, _, err := relayAddrs(listen, to, latency); err != nil {
		return nil, err
	}
	return nil, errors.New("relay: the latency relay runs on Linux only (epoll and timerfd)")
}

func (r *relay) addr() string                  { return "" }
func (r *relay) run(ctx context.Context) error { return nil }
