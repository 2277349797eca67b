// Package proxy is the Redis-protocol server clients talk to. It composes the
// leaves: it classifies each command (answered here, cached read, write, or
// forwarded), serves cached reads from l1 under the key's policy, sends the rest
// upstream in pipelines, and invalidates what writes touch before their replies
// reach the client.
//
// The proxy never changes a reply: what leaves the L1 or the upstream is written
// to the client byte for byte. It owns client connections and their state (db,
// name, transaction); it does not own the upstream, the cache or the invalidation
// stream, which are handed to it and closed by whoever made them.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/l1"
	"github.com/cacheproxy/cacheproxy/policy"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// Options are what a Server is built from. Every field but Logger is required.
type Options struct {
	Upstream *upstream.Pool
	Commands *commands.Table
	Cache    *l1.Cache
	Policies *policy.Set
	Metrics  *Metrics
	Limits   resp.Limits
	// Version is the upstream's redis_version, reported by HELLO.
	Version string
	// DefaultDB is the database a new client starts in (the upstream URL's).
	DefaultDB int
	// MaxClients bounds open client connections; 0 means 10000, Redis's default.
	MaxClients int
	Logger     *slog.Logger
}

// Server serves clients until Close.
type Server struct {
	up      *upstream.Pool
	cmds    *commands.Table
	cache   *l1.Cache
	metrics *Metrics
	limits  resp.Limits
	version string
	db0     int
	log     *slog.Logger

	policies   atomic.Pointer[policyState]
	nextID     atomic.Int64
	clients    atomic.Int64
	maxClients int64

	ctx    context.Context // cancelled by Close: unblocks upstream waits
	cancel context.CancelFunc

	mu  sync.Mutex // guards srv
	srv *redcon.Server

	// afterUpstream, when set before Serve, runs after a batch's replies arrive
	// and before they settle: tests hold a fill open with it while they write.
	afterUpstream func()
}

// policyState pairs a policy set with its metric children, so that a reload
// swaps both at once and the hit path resolves neither.
type policyState struct {
	set            *policy.Set
	hits, misses   []counter
	uncachedByPref []counter
}

// New checks o and builds a Server.
func New(o Options) (*Server, error) {
	switch {
	case o.Upstream == nil:
		return nil, errors.New("proxy: Options.Upstream is required")
	case o.Commands == nil:
		return nil, errors.New("proxy: Options.Commands is required")
	case o.Cache == nil:
		return nil, errors.New("proxy: Options.Cache is required")
	case o.Policies == nil:
		return nil, errors.New("proxy: Options.Policies is required")
	case o.Metrics == nil:
		return nil, errors.New("proxy: Options.Metrics is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxClients == 0 {
		o.MaxClients = 10000
	}
	if o.Version == "" {
		o.Version = "7.0.0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		up:         o.Upstream,
		cmds:       o.Commands,
		cache:      o.Cache,
		metrics:    o.Metrics,
		limits:     o.Limits,
		version:    o.Version,
		db0:        o.DefaultDB,
		maxClients: int64(o.MaxClients),
		log:        o.Logger,
		ctx:        ctx,
		cancel:     cancel,
	}
	s.SetPolicies(o.Policies)
	return s, nil
}

// SetPolicies replaces the policy set; commands already in progress finish
// under the old one.
func (s *Server) SetPolicies(set *policy.Set) {
	st := &policyState{set: set}
	for _, p := range set.All() {
		st.hits = append(st.hits, s.metrics.hits.WithLabelValues(p.Prefix))
		st.misses = append(st.misses, s.metrics.misses.WithLabelValues(p.Prefix))
	}
	s.policies.Store(st)
}

// Serve accepts clients on ln until Close. It returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	srv := redcon.NewServerNetwork(ln.Addr().Network(), ln.Addr().String(), s.handle, s.accept, s.closed)
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.srv = srv
	s.mu.Unlock()
	err := srv.Serve(&guardedListener{Listener: ln, limits: s.limits})
	if s.ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("proxy: serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Close stops accepting, closes every client connection and fails commands
// waiting on the upstream.
func (s *Server) Close() error {
	s.mu.Lock()
	s.cancel()
	srv := s.srv
	s.mu.Unlock()
	if srv != nil {
		return srv.Close()
	}
	return nil
}

// guardedListener puts resp.Guard in front of redcon's parser on every
// connection: redcon's parser has no bounds, and one hostile frame would
// otherwise panic the whole process.
type guardedListener struct {
	net.Listener
	limits resp.Limits
}

func (l *guardedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return resp.Guard(c, l.limits, nil), nil
}

func (s *Server) accept(conn redcon.Conn) bool {
	if s.clients.Add(1) > s.maxClients {
		s.clients.Add(-1)
		conn.WriteError("ERR max number of clients reached")
		return false
	}
	c := &client{
		s:    s,
		conn: conn,
		id:   s.nextID.Add(1),
		db:   s.db0,
	}
	c.hint = uint64(c.id)
	conn.SetContext(c)
	s.metrics.clients.Inc()
	return true
}

func (s *Server) closed(conn redcon.Conn, _ error) {
	if c, ok := conn.Context().(*client); ok {
		c.release()
	}
	s.clients.Add(-1)
	s.metrics.clients.Dec()
}

func (s *Server) handle(conn redcon.Conn, cmd redcon.Command) {
	c := conn.Context().(*client)
	// Take the rest of what the client pipelined, so that it travels upstream
	// as one batch and the replies go back in one write.
	c.cmds = append(c.cmds[:0], cmd)
	c.cmds = append(c.cmds, conn.ReadPipeline()...)
	c.run()
	clear(c.cmds)
}
