// Package cluster carries client commands to a Redis Cluster as if it were one
// Redis: it learns the slot map, keeps an upstream.Pool per master, routes each
// command to the master of its key's slot, splits what touches several slots
// and merges the replies, and follows MOVED and ASK so that clients never see
// them.
//
// Cluster owns the slot map and the per-node pools; a Router, one per RESP
// version, is what a proxy sends batches through, exactly as it would through
// one upstream.Pool. The map is read from the nodes (CLUSTER SHARDS, else
// CLUSTER SLOTS) at start, every Config.Refresh, and whenever a node answers
// MOVED or a connection to one fails. Others learn of changes through
// Topology.Changed (the invalidation streams, one per master, follow it).
//
// A request is never sent twice unless Redis said it did not run it: MOVED
// (the slot is elsewhere), ASK (the key is elsewhere, for one command),
// TRYAGAIN and CLUSTERDOWN replies all come from a node that refused the
// command. A connection that fails mid-flight fails the requests on it, as
// upstream.Pool does.
//
// The package knows which commands take keys and how the replies of the
// commands it splits combine; it knows nothing of caching.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// Config says how to reach a cluster.
type Config struct {
	// Seeds are host:port of one or more nodes; the rest are learned.
	Seeds []string
	// Node is what every node's pools are made from: credentials, TLS,
	// connections per node, timeouts. Addr, Target, Protocol and Databases
	// are set per node (a cluster has database 0 alone).
	Node upstream.Config
	// Commands says where each command's keys are. Required.
	Commands *commands.Table
	// Refresh is how often the slot map is read again without a cause. 0
	// means 5s.
	Refresh time.Duration
	// Logger receives topology changes. Nil means slog.Default().
	Logger *slog.Logger
}

// Cluster owns the slot map and a pool per node for each RESP version.
type Cluster struct {
	cfg  Config
	log  *slog.Logger
	topo atomic.Pointer[Topology]

	mu     sync.Mutex // guards nodes, closed
	nodes  map[string]*node
	closed bool

	kick    chan struct{} // asks the refresher for a new map now; buffered
	stop    context.CancelFunc
	stopped chan struct{} // closed when the refresher has returned

	redirects, refreshes atomic.Int64 // see Stats
}

// node is one Redis of the cluster.
type node struct {
	addr  string
	pools [2]*upstream.Pool // RESP2, RESP3
}

// New reads the slot map from the first seed that gives one and starts
// keeping it current. Close stops it.
func New(ctx context.Context, cfg Config) (*Cluster, error) {
	if len(cfg.Seeds) == 0 {
		return nil, errors.New("cluster: no seed nodes")
	}
	if cfg.Commands == nil {
		return nil, errors.New("cluster: Config.Commands is required")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 5 * time.Second
	}
	if cfg.Node.DialTimeout <= 0 {
		cfg.Node.DialTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Cluster{
		cfg:     cfg,
		log:     cfg.Logger,
		nodes:   map[string]*node{},
		kick:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	// Validate the node template once, so that a bad one fails here.
	probe := cfg.Node
	probe.Addr, probe.Target = cfg.Seeds[0], nil
	if _, err := upstream.New(probe); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	t, err := c.read(ctx, cfg.Seeds)
	if err != nil {
		return nil, err
	}
	c.topo.Store(t)
	for _, m := range t.masters {
		c.node(m)
	}
	rctx, stop := context.WithCancel(context.Background())
	c.stop = stop
	go c.refresher(rctx)
	return c, nil
}

// Topology is the current slot map.
func (c *Cluster) Topology() *Topology { return c.topo.Load() }

// Stats counts what keeping up with the cluster has cost.
type Stats struct {
	Redirects int64 // MOVED and ASK replies followed
	Refreshes int64 // slot maps read (changed or not)
}

// Stats returns the counts so far.
func (c *Cluster) Stats() Stats {
	return Stats{Redirects: c.redirects.Load(), Refreshes: c.refreshes.Load()}
}

// Refresh reads the slot map now and returns once it is current.
func (c *Cluster) Refresh(ctx context.Context) error {
	t, err := c.read(ctx, c.sources())
	if err != nil {
		return err
	}
	c.install(t)
	return nil
}

// Close stops the refresher and closes every node's pools; batches in flight
// fail with upstream.ErrClosed.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	nodes := c.nodes
	c.mu.Unlock()
	c.stop()
	<-c.stopped
	for _, n := range nodes {
		for _, p := range n.pools {
			p.Close()
		}
	}
}

// refreshSoon asks the refresher for a new slot map without waiting for it.
func (c *Cluster) refreshSoon() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// minRefreshGap spaces reads of the slot map that MOVED replies ask for:
// during a resharding every command to a moving slot may bring one.
const minRefreshGap = 100 * time.Millisecond

func (c *Cluster) refresher(ctx context.Context) {
	defer close(c.stopped)
	tick := time.NewTicker(c.cfg.Refresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.kick:
		}
		rctx, cancel := context.WithTimeout(ctx, c.cfg.Node.DialTimeout)
		if err := c.Refresh(rctx); err != nil && ctx.Err() == nil {
			c.log.Warn("cluster: slot map not refreshed", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(minRefreshGap):
		}
	}
}

// install makes t current if it differs from the current map, and tells
// whoever watches the old one.
func (c *Cluster) install(t *Topology) {
	c.refreshes.Add(1)
	for _, m := range t.masters {
		c.node(m)
	}
	for {
		old := c.topo.Load()
		if old.same(t) {
			return
		}
		if c.topo.CompareAndSwap(old, t) {
			c.log.Info("cluster: slot map changed", "masters", t.masters)
			close(old.changed)
			return
		}
	}
}

// sources are the nodes asked for the slot map, best first: the current
// masters, then the seeds.
func (c *Cluster) sources() []string {
	var out []string
	if t := c.topo.Load(); t != nil {
		out = append(out, t.masters...)
	}
	return append(out, c.cfg.Seeds...)
}

// read asks addrs in turn for the slot map and returns the first one given.
func (c *Cluster) read(ctx context.Context, addrs []string) (*Topology, error) {
	var errs []error
	seen := map[string]bool{}
	for _, addr := range addrs {
		if seen[addr] {
			continue
		}
		seen[addr] = true
		rc := redis.NewClient(&redis.Options{
			Addr:         addr,
			Username:     c.cfg.Node.Username,
			Password:     c.cfg.Node.Password,
			TLSConfig:    c.cfg.Node.TLS,
			Protocol:     2,
			DialTimeout:  c.cfg.Node.DialTimeout,
			ReadTimeout:  c.cfg.Node.DialTimeout,
			WriteTimeout: c.cfg.Node.DialTimeout,
			MaxRetries:   -1,
			PoolSize:     1,
		})
		t, err := fetch(ctx, rc, c.cfg.Node.TLS != nil)
		rc.Close()
		if err == nil {
			return t, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("cluster: no node gave the slot map: %w", errors.Join(errs...))
}

// node returns the node at addr, making its pools on first use. Pools dial
// on first use, so a node named by a MOVED reply costs nothing until used.
func (c *Cluster) node(addr string) *node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[addr]; n != nil {
		return n
	}
	n := &node{addr: addr}
	for i, proto := range []int{2, 3} {
		cfg := c.cfg.Node
		cfg.Addr, cfg.Target, cfg.Protocol, cfg.Databases = addr, nil, proto, 1
		p, err := upstream.New(cfg)
		if err != nil {
			// New validated the same template: only Addr differs.
			panic(fmt.Sprintf("cluster: pool for %s: %v", addr, err))
		}
		if c.closed {
			p.Close()
		}
		n.pools[i] = p
	}
	c.nodes[addr] = n
	return n
}
