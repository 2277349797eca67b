package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/upstream"
	"github.com/cacheproxy/cacheproxy/upstream/cluster"
)

// clusterControl reads a redis-cluster:// URL and returns the options of the
// control client (the command table, server facts, health): it talks to the
// first seed that answers a dial.
func clusterControl(raw string) (*redis.Options, *cluster.URL, error) {
	u, err := cluster.ParseURL(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream: %w", err)
	}
	seeds := u.Seeds
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		var last error
		for _, s := range seeds {
			c, err := d.DialContext(ctx, network, s)
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}
	return &redis.Options{
		Addr:     seeds[0], // for logs; dials try every seed
		Dialer:   dial,
		Username: u.Username,
		Password: u.Password,
	}, u, nil
}

// openCluster learns the cluster's slot map, retrying until ctx ends.
func openCluster(ctx context.Context, u *cluster.URL, node upstream.Config, table *commands.Table, log *slog.Logger) (*cluster.Cluster, error) {
	node.Addr, node.Target = "", nil
	for attempt := 0; ; attempt++ {
		cl, err := cluster.New(ctx, cluster.Config{Seeds: u.Seeds, Node: node, Commands: table, Logger: log})
		if err == nil {
			log.Info("cluster", "masters", cl.Topology().Masters())
			return cl, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("upstream: %w", err)
		}
		log.Warn("cluster not ready; retrying", "seeds", u.Seeds, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff(attempt)):
		}
	}
}

// clusterStreams are one invalidation stream per master of the slot map at
// start-up, feeding one Target: the L1 stays suspended while any of them is
// not trusted. They are not re-established when the map changes; a replica
// promoted in a failover was already streaming as its master's replica is
// not, so writes to a new master go unseen until a restart.
type clusterStreams struct {
	subs []*invalidation.Subscriber
}

func newClusterStreams(masters []string, base invalidation.Config, opts *redis.Options, t invalidation.Target) *clusterStreams {
	f := &fanIn{Target: t}
	cs := &clusterStreams{}
	for _, m := range masters {
		cfg := base
		o := *opts
		o.Addr, o.Dialer = m, nil
		cfg.Options = &o
		cs.subs = append(cs.subs, invalidation.New(cfg, f))
	}
	return cs
}

// run runs every stream until ctx ends and returns the first error.
func (cs *clusterStreams) run(ctx context.Context) error {
	errc := make(chan error, len(cs.subs))
	for _, s := range cs.subs {
		go func() { errc <- s.Run(ctx) }()
	}
	var first error
	for range cs.subs {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// state sums the streams' states: subscribed only while every one is.
func (cs *clusterStreams) state() invalidation.State {
	var st invalidation.State
	for i, s := range cs.subs {
		one := s.State()
		if i == 0 {
			st = one
			continue
		}
		st.Subscribed = st.Subscribed && one.Subscribed
		if st.CachingDisabled == "" {
			st.CachingDisabled = one.CachingDisabled
		}
		st.Reconnects += one.Reconnects
		st.Messages += one.Messages
		st.Malformed += one.Malformed
		st.Flushes += one.Flushes
		st.Canaries += one.Canaries
		if one.LastMessage.After(st.LastMessage) {
			st.LastMessage = one.LastMessage
		}
		st.Lag = max(st.Lag, one.Lag)
	}
	return st
}

// fanIn is one Target for several streams: it suspends the L1 when the first
// stream stops being trusted and resumes it when the last one is trusted
// again, so the Target still sees Suspend and Resume alternate.
type fanIn struct {
	invalidation.Target
	mu   sync.Mutex // guards down; held across the Target's Suspend and Resume
	down int        // streams suspended
}

func (f *fanIn) Suspend() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down == 0 {
		f.Target.Suspend()
	}
	f.down++
}

func (f *fanIn) Resume() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down--; f.down == 0 {
		f.Target.Resume()
	}
}
