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
	sub      atomic.Pointer[func() invalidation.State]       // nil until the subscriber exists
	nodes    atomic.Pointer[func() []invalidation.NodeState] // a cluster's masters' streams; nil for one upstream
	stopping atomic.Bool                                     // draining for shutdown
}

// pingTimeout bounds /readyz's PING of the upstream: probes time out too.
const pingTimeout = time.Second

func (h *health) setSubscriber(state func() invalidation.State) { h.sub.Store(&state) }

// setNodes makes /readyz report each master of a cluster on a line of its
// own: which ones hold the L1 suspended.
func (h *health) setNodes(nodes func() []invalidation.NodeState) { h.nodes.Store(&nodes) }

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
	case h.nodes.Load() != nil:
		st := (*sub)()
		nodes := (*h.nodes.Load())()
		var streams []string
		for _, n := range nodes {
			streams = append(streams, streamProblems("invalidation: master "+n.Addr+": ", n.State)...)
		}
		if len(streams) == 0 && !st.Subscribed {
			// No master yet, or every one trusted and a change of slot map under way.
			streams = append(streams, "invalidation: following the cluster's slot map; the L1 is suspended")
		}
		out = append(out, streams...)
	default:
		out = append(out, streamProblems("invalidation: ", (*sub)())...)
	}
	return out
}

// streamProblems says, after prefix, why st keeps the L1 suspended, if it does.
func streamProblems(prefix string, st invalidation.State) []string {
	switch {
	case st.CachingDisabled != "":
		return []string{prefix + "caching disabled: " + st.CachingDisabled}
	case !st.Subscribed:
		return []string{prefix + "stream not trusted yet; the L1 is suspended"}
	}
	return nil
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
