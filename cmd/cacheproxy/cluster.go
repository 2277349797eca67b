package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/commands"
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

// clusterMetrics export what following the cluster costs.
func clusterMetrics(cl *cluster.Cluster) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "cacheproxy_cluster_redirects_total",
			Help: "MOVED and ASK replies the proxy followed for its clients.",
		}, func() float64 { return float64(cl.Stats().Redirects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "cacheproxy_cluster_slot_map_reads_total",
			Help: "Reads of the cluster's slot map, periodic or caused by a MOVED reply or a failed connection.",
		}, func() float64 { return float64(cl.Stats().Refreshes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cacheproxy_cluster_masters",
			Help: "Masters serving slots in the current slot map.",
		}, func() float64 { return float64(len(cl.Topology().Masters())) }),
	}
}
