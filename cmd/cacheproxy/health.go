package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cacheproxy/cacheproxy/invalidation"
)

// health answers the probes on the metrics address. /healthz says the process
// is alive and serving HTTP. /readyz says the proxy is what it should be: the
// upstream answers a PING and the invalidation stream is trusted. A proxy that
// is not ready still serves clients (from the upstream, caching nothing while
// the stream is down); readiness is for a load balancer to prefer another.
type health struct {
	ping     func(context.Context) error
	sub      atomic.Pointer[func() invalidation.State] // nil until the subscriber exists
	stopping atomic.Bool                               // draining for shutdown
}

// pingTimeout bounds /readyz's PING of the upstream: probes time out too.
const pingTimeout = time.Second

func (h *health) setSubscriber(state func() invalidation.State) { h.sub.Store(&state) }

func (h *health) alive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (h *health) ready(w http.ResponseWriter, r *http.Request) {
	problems := h.problems(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready\n" + strings.Join(problems, "\n") + "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// problems lists why the proxy is not ready, one line each.
func (h *health) problems(ctx context.Context) []string {
	var out []string
	if h.stopping.Load() {
		out = append(out, "shutting down")
	}
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := h.pingWithin(ctx); err != nil {
		out = append(out, "upstream: "+err.Error())
	}
	sub := h.sub.Load()
	switch {
	case sub == nil:
		out = append(out, "invalidation: not started (waiting for the upstream)")
	default:
		st := (*sub)()
		if st.CachingDisabled != "" {
			out = append(out, "invalidation: caching disabled: "+st.CachingDisabled)
		} else if !st.Subscribed {
			out = append(out, "invalidation: stream not trusted yet; the L1 is suspended")
		}
	}
	return out
}

// pingWithin is ping bounded by ctx even when the client does not apply
// ctx's deadline to the socket: go-redis waits for its own read timeout on
// an upstream that has gone silent (a blackhole), longer than a probe's.
func (h *health) pingWithin(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- h.ping(ctx) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no PONG within %v: %w", pingTimeout, ctx.Err())
	}
}
