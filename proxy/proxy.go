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
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/acl"
	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/l1"
	"github.com/cacheproxy/cacheproxy/policy"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/tracking"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// Upstream is where the proxy sends what it does not answer itself: one Redis
// (*upstream.Pool) or a Redis Cluster (cluster.Router), which the proxy cannot
// tell apart. Every reply comes back exactly as Redis gave it.
type Upstream interface {
	// Do sends b's requests in database db on a shared connection chosen by
	// hint and waits for the replies (see upstream.Pool.Do).
	Do(ctx context.Context, db int, hint uint64, b *upstream.Batch)
	// Dedicated opens a session for one client alone: transactions,
	// blocking commands, scripts.
	Dedicated(ctx context.Context, db int) (upstream.Session, error)
	// Raw opens a connection whose socket the caller takes over: pub/sub,
	// MONITOR.
	Raw(ctx context.Context, db int) (net.Conn, error)
	// Urgent sends b on a connection of its own: commands that end a
	// script Redis is busy running.
	Urgent(ctx context.Context, b *upstream.Batch)
	// Databases is the number of databases clients may SELECT.
	Databases() int
}

var _ Upstream = (*upstream.Pool)(nil)

// Options are what a Server is built from. Every field but Logger is required.
type Options struct {
	Upstream Upstream // RESP2 connections, for RESP2 clients
	// Upstream3 carries RESP3 clients' commands on connections that are
	// themselves in RESP3, so that their replies come back in RESP3's forms.
	// Without it, HELLO 3 gets NOPROTO and clients stay in RESP2.
	Upstream3 Upstream
	// Cluster says the upstream is a Redis Cluster: clients see database 0
	// alone, and SELECT of another gets Redis Cluster's error.
	Cluster  bool
	Commands *commands.Table
	Cache    *l1.Cache // the default L1 pool
	// Pools are further L1 pools by name, each with its own budget, for
	// policies that name them (policy.Policy.Pool). Optional.
	Pools    map[string]*l1.Cache
	Policies *policy.Set
	Metrics  *Metrics
	Limits   resp.Limits
	// Version is the upstream's redis_version, reported by HELLO.
	Version string
	// DefaultDB is the database a new client starts in (the upstream URL's).
	DefaultDB int
	// MaxClients bounds open client connections; 0 means 10000, Redis's default.
	MaxClients int
	// RequirePass is the password of the "default" user clients AUTH as, as
	// Redis's requirepass; Users are further named users. With neither, clients
	// need no AUTH. With Users but no RequirePass, the default user is off.
	RequirePass string
	Users       []User
	// DefaultPermissions are the default user's; nil lets it do everything,
	// as Redis's default user.
	DefaultPermissions *acl.Permissions
	// ProtectedMode, as Redis's protected-mode: while clients need no AUTH,
	// only clients connecting from 127.0.0.1 or ::1 are served; the others
	// get Redis's DENIED error and are disconnected.
	ProtectedMode bool
	// TrackingMaxKeys bounds the keys remembered for clients' CLIENT
	// TRACKING, as Redis's tracking-table-max-keys; 0 means no bound.
	TrackingMaxKeys int
	// Clients bounds what each client, and all of them together, may cost
	// (limits.go). The zero value bounds nothing.
	Clients ClientLimits
	Logger  *slog.Logger
}

// Server serves clients until Close.
type Server struct {
	up      Upstream // RESP2
	up3     Upstream // RESP3; nil when RESP3 is not offered
	cluster bool     // Options.Cluster
	cmds    *commands.Table
	cache   *pools
	metrics *Metrics
	limits  resp.Limits
	lim     *limiter // client limits: output, memory, idle, keepalive
	version string
	db0     int
	log     *slog.Logger

	auth       *authConfig
	protected  bool            // protected mode applies: only local clients are served (protected.go)
	track      *tracking.Table // clients' CLIENT TRACKING (tracking.go)
	reg        registry        // every client, for CLIENT LIST/KILL and Close
	idle       idleConns       // dedicated connections to use again
	policies   atomic.Pointer[policyState]
	policyMu   sync.Mutex    // serialises policy changes (reloads, CACHEPROXY FLUSH)
	nextTag    atomic.Uint64 // the last l1.View tag handed to a policy
	draining   atomic.Bool   // Shutdown began: clients close after their current batch
	nextID     atomic.Int64
	clients    atomic.Int64
	maxClients int64

	ctx    context.Context // cancelled by Close: unblocks upstream waits
	cancel context.CancelFunc

	mu   sync.Mutex // guards srvs, lns
	srvs []*listener
	lns  []net.Listener // what Serve accepts on, one per call; Shutdown closes them

	// afterUpstream, when set before Serve, runs after a batch's replies arrive
	// and before they settle: tests hold a fill open with it while they write.
	afterUpstream func()
}

// New checks o and builds a Server.
func New(o Options) (*Server, error) {
	// A nil *upstream.Pool is no pool.
	if p, ok := o.Upstream.(*upstream.Pool); ok && p == nil {
		o.Upstream = nil
	}
	if p, ok := o.Upstream3.(*upstream.Pool); ok && p == nil {
		o.Upstream3 = nil
	}
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
	if err := o.Clients.Validate(); err != nil {
		return nil, err
	}
	auth, err := newAuthConfig(o.RequirePass, o.DefaultPermissions, o.Users)
	if err != nil {
		return nil, err
	}
	caches, err := newPools(o.Cache, o.Pools, o.Logger)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		up:         o.Upstream,
		up3:        o.Upstream3,
		cluster:    o.Cluster,
		cmds:       o.Commands,
		cache:      caches,
		metrics:    o.Metrics,
		limits:     o.Limits,
		version:    o.Version,
		db0:        o.DefaultDB,
		auth:       auth,
		protected:  o.ProtectedMode && !auth.required,
		maxClients: int64(o.MaxClients),
		log:        o.Logger,
		ctx:        ctx,
		cancel:     cancel,
	}
	s.lim = &limiter{ClientLimits: o.Clients, s: s}
	for i := range s.lim.drops {
		s.lim.drops[i] = o.Metrics.dropped.WithLabelValues(dropNames[i])
	}
	if s.track, err = tracking.New(tracking.Config{Sink: trackingSink{s}, MaxKeys: o.TrackingMaxKeys}); err != nil {
		cancel()
		return nil, err
	}
	if _, err := s.SetPolicies(o.Policies); err != nil {
		cancel()
		return nil, err
	}
	o.Metrics.pools.Store(caches)
	return s, nil
}

// Serve accepts clients on ln until Close, riding out failed accepts (out
// of file descriptors) with a pause and a warning; it returns nil after
// Close. It may
// run on several listeners at once (a plain port and a TLS one, made with
// tls.NewListener), each in its own call.
func (s *Server) Serve(ln net.Listener) error {
	srv := newListener(s, &guardedListener{Listener: ln, limits: s.limits, authRequired: s.auth.required, s: s})
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.srvs, s.lns = append(s.srvs, srv), append(s.lns, ln)
	s.mu.Unlock()
	srv.serve()
	return nil
}

// Close stops accepting, closes every client connection and fails commands
// waiting on the upstream. It waits for detached clients' goroutines, not for
// redcon's: one of those may still be letting its closed connection go, and
// finds the upstream and the L1 closed if their owner closes them next.
func (s *Server) Close() error {
	s.mu.Lock()
	s.cancel()
	srvs := s.srvs
	s.mu.Unlock()
	var err error
	for _, srv := range srvs {
		err = errors.Join(err, srv.Close())
	}
	s.reg.closeAll()
	s.idle.close()
	return err
}

// guardedListener puts resp.Guard in front of redcon's parser on every
// connection: redcon's parser has no bounds, and one hostile frame would
// otherwise panic the whole process. The guard's pre-auth limits ask the
// connection's own authentication flag.
type guardedListener struct {
	net.Listener
	limits       resp.Limits
	authRequired bool
	s            *Server
}

func (l *guardedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		if l.s.draining.Load() {
			// Shutdown closed the listener. redcon's Serve closes every
			// connection when Accept fails, which would cut replies in half:
			// hold it here until the drain is over.
			<-l.s.ctx.Done()
		}
		return nil, err
	}
	l.s.lim.keepAlive(c)
	return newClientConn(c, l.limits, l.authRequired, &l.s.draining, l.s.lim), nil
}

func (s *Server) accept(conn redcon.Conn) bool {
	if s.draining.Load() {
		s.metrics.refused.WithLabelValues("shutdown").Inc()
		return false
	}
	if s.protected && !localPeer(conn.NetConn().RemoteAddr()) {
		s.metrics.refused.WithLabelValues("protected_mode").Inc()
		conn.WriteError(errDenied)
		return false
	}
	if s.clients.Add(1) > s.maxClients {
		s.clients.Add(-1)
		s.metrics.refused.WithLabelValues("max_clients").Inc()
		conn.WriteError("ERR max number of clients reached")
		return false
	}
	s.metrics.accepted.Inc()
	c := &client{
		s:     s,
		conn:  conn,
		id:    s.nextID.Add(1),
		db:    s.db0,
		proto: 2,
	}
	c.hint = uint64(c.id)
	c.cc = conn.NetConn().(*clientConn)
	c.cc.wrote = c.storeFills
	c.wr = conn.(*loopConn).wr
	c.addr = conn.RemoteAddr()
	c.created = time.Now()
	c.multi.Store(-1)
	c.setAuthed(!s.auth.required, "default")
	s.reg.add(c)
	conn.SetContext(c)
	s.metrics.clients.Inc()
	return true
}

// closed runs when redcon lets go of a connection: it has closed, or the
// client subscribed or monitors and detached, and now runs on goroutines of
// its own.
func (s *Server) closed(conn redcon.Conn, err error) {
	c := conn.Context().(*client)
	s.countClosed(c, err)
	if c.dconn != nil {
		if !s.reg.goSession(c.serveDetached) {
			if c.ps != nil {
				c.ps.up.Close()
			}
			if c.mon != nil {
				c.mon.up.Close()
			}
			c.cc.Close()
			s.forget(c)
		}
		return
	}
	s.forget(c)
}

// forget releases what a client held once its connection has ended.
func (s *Server) forget(c *client) {
	s.lim.account(c.cc, 0)
	c.storeFills()
	c.stopTracking()
	c.release()
	s.reg.remove(c)
	s.clients.Add(-1)
	s.metrics.clients.Dec()
}

// handle runs a batch: the commands one read brought, so that they travel
// upstream as one batch and the replies go back in one write.
func (s *Server) handle(conn redcon.Conn, cmds []redcon.Command) {
	c := conn.Context().(*client)
	c.cc.busy.Store(true) // invalidations wait for this batch's replies
	c.built = 0
	c.cmds = cmds
	c.run()
	clear(c.cmds)
	c.publishCounts()
	if s.draining.Load() && c.conn != nil {
		// Every reply of the batch is written: this is where Shutdown may
		// close the connection without cutting one.
		c.drainClose()
	}
}
