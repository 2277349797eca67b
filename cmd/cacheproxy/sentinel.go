package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/sentinel"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// follower moves the proxy to the master Sentinel names. At a switch it
// moves the Target, which closes every connection to the old master (the
// pools', the control client's, the invalidation stream's, subscribers'),
// and then restarts the invalidation stream, which flushes the L1 before the
// switch function returns and keeps it from storing until a stream on the
// new master is trusted.
type follower struct {
	target    *upstream.Target
	watcher   *sentinel.Watcher
	failovers prometheus.Counter
	sub       *invalidation.Subscriber // set before run
	log       *slog.Logger
}

// openUpstream reads the upstream URL. For a redis:// URL it returns
// go-redis's options and a nil follower. For a redis-sentinel:// URL it asks
// the sentinels for the master, retrying until ctx ends, and returns options
// whose Dialer dials the master through the follower's Target.
func openUpstream(ctx context.Context, raw string, log *slog.Logger) (*redis.Options, *follower, error) {
	if !sentinel.IsURL(raw) {
		opts, err := redis.ParseURL(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("upstream %q: %w", raw, err)
		}
		return opts, nil, nil
	}
	u, err := sentinel.ParseURL(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: %w", err)
	}
	scfg := sentinel.Config{URL: u, Logger: log}
	var addr string
	for attempt := 0; ; attempt++ {
		if addr, err = sentinel.Resolve(ctx, scfg); err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("upstream: %w", err)
		}
		log.Warn("sentinels not ready; retrying", "sentinels", u.Sentinels, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff(attempt)):
		}
	}
	log.Info("sentinel named the master", "master", u.Master, "addr", addr)
	f := &follower{
		target: upstream.NewTarget(addr),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cacheproxy_upstream_failovers_total",
			Help: "Switches to a new upstream master named by Sentinel.",
		}),
		log: log,
	}
	f.watcher = sentinel.NewWatcher(scfg, addr, f.switchTo)
	opts := &redis.Options{
		Addr:     addr, // for logs; every dial goes through the Target
		Dialer:   f.target.Dial,
		Username: u.Username,
		Password: u.Password,
		DB:       u.DB,
	}
	return opts, f, nil
}

// switchTo runs in the watcher's goroutine when the master moves.
func (f *follower) switchTo(from, to string) {
	closed := f.target.Set(to)
	if f.sub != nil {
		f.sub.Restart(fmt.Sprintf("failover from %s to %s", from, to))
	}
	f.failovers.Inc()
	f.log.Warn("upstream failover: following the new master; L1 flushed",
		"from", from, "to", to, "connections_closed", closed)
}

func (f *follower) run(ctx context.Context) error { return f.watcher.Run(ctx) }
