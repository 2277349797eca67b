package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/l1"
	"github.com/cacheproxy/cacheproxy/policy"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/upstream"
	"github.com/cacheproxy/cacheproxy/upstream/cluster"
)

// clusterEnv is a proxy in front of a Redis Cluster. It runs no invalidation
// stream: the tests write through the proxy, whose write path keeps its L1
// coherent by itself.
type clusterEnv struct {
	t     testing.TB
	rc    *redistest.Cluster
	cl    *cluster.Cluster
	addr  string // the proxy's
	srv   *Server
	cache *l1.Cache
}

func startClusterEnv(t testing.TB, rc *redistest.Cluster) *clusterEnv {
	t.Helper()
	ctx := context.Background()
	table, err := commands.Load(ctx, rc.NodeClient(rc.Seeds()[0]))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cluster.New(ctx, cluster.Config{
		Seeds:    rc.Seeds()[:2],
		Node:     upstream.Config{},
		Commands: table,
		Refresh:  500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := l1.New(l1.Config{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	pols, err := policy.Compile(testPolicies)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{
		Upstream:  cl.Router(2),
		Upstream3: cl.Router(3),
		Cluster:   true,
		Commands:  table,
		Cache:     cache,
		Policies:  pols,
		Metrics:   NewMetrics(prometheus.NewRegistry()),
		Limits:    resp.DefaultLimits(),
		Version:   redisVersion(t, rc.Node(rc.Seeds()[0])),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
		cl.Close()
		cache.Close()
	})
	return &clusterEnv{t: t, rc: rc, cl: cl, addr: ln.Addr().String(), srv: srv, cache: cache}
}

// client is a go-redis client of the proxy (RESP3 first, as applications make
// them), closed when the test ends.
func (e *clusterEnv) client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: e.addr, MaxRetries: -1})
	e.t.Cleanup(func() { c.Close() })
	return c
}
