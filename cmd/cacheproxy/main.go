// Command cacheproxy is a Redis-protocol caching proxy: point Redis clients at it
// instead of Redis, and reads of the configured key prefixes are answered from an
// in-process cache kept coherent by keyspace notifications.
//
// It wires the configuration to the packages that do the work and owns their
// lifetimes, signals (SIGTERM and SIGINT drain and stop, SIGHUP reloads the
// policies), health endpoints and reloads; it holds no caching logic.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/acl"
	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/config"
	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/l1"
	"github.com/cacheproxy/cacheproxy/proxy"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/upstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal stops the process at once, without draining
	}()
	if err := run(ctx, os.Args[1:], os.Stderr, limitMemory); err != nil {
		fmt.Fprintln(os.Stderr, "cacheproxy:", err)
		os.Exit(1)
	}
}

// run starts the proxy and blocks until ctx ends or a part fails; then it
// drains clients for up to shutdown_grace and stops every part. It returns nil
// after a stop that ctx asked for, drained or not. limit, when not nil, sets
// the process's memory limit from the L1 budget (limitMemory).
func run(ctx context.Context, args []string, stderr io.Writer, limit func(budget int64) (int64, bool)) error {
	fl, err := parseFlags(args, os.Stdout)
	if err != nil {
		return err
	}
	if fl.help || fl.version {
		return nil // parseFlags printed what was asked
	}
	cfg, err := fl.load()
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg.Log, level, stderr)
	redis.SetLogger(redisLogger{log.With("component", "go-redis")}) // process-wide
	if limit != nil {
		bytes, fromEnv := limit(int64(cfg.L1.MaxMemory))
		log.Info("memory limit", "bytes", bytes, "from_GOMEMLIMIT", fromEnv)
	}

	opts, follow, err := openUpstream(ctx, cfg.Upstream, log)
	if err != nil {
		return err
	}
	opts.Protocol = 2
	opts.MaxRetries = -1 // a proxy never runs a command twice
	upTLS, err := upstreamTLS(cfg, opts)
	if err != nil {
		return err
	}
	srvTLS, err := serverTLS(cfg)
	if err != nil {
		return err
	}
	control := redis.NewClient(opts)
	defer control.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := proxy.NewMetrics(reg)
	if follow != nil {
		reg.MustRegister(follow.failovers)
	}

	// Health comes first, so that a proxy waiting for its upstream is alive
	// but not ready, rather than dead to a liveness probe.
	h := &health{ping: func(ctx context.Context) error { return control.Ping(ctx).Err() }}
	var hs *http.Server
	if cfg.Metrics != "" {
		mln, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		log.Info("metrics", "addr", "http://"+mln.Addr().String()+"/metrics")
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("/healthz", h.alive)
		mux.HandleFunc("/readyz", h.ready)
		// Profiles of a running proxy: the metrics address is an operator's port.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace) // the runtime tracer, for go tool trace
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		served := make(chan error, 1)
		go func() { served <- hs.Serve(mln) }()
		defer func() {
			hs.Close()
			<-served
		}()
	}

	// The command table and server facts come from the upstream itself; wait
	// for it, so that a proxy started beside Redis does not race it.
	var table *commands.Table
	var info upstreamInfo
	for attempt := 0; ; attempt++ {
		table, err = commands.Load(ctx, control)
		if err == nil {
			info, err = readUpstreamInfo(ctx, control)
		}
		if err == nil {
			break
		}
		if why := tlsRefused(err, cfg); why != "" {
			return fmt.Errorf("upstream %s: TLS handshake failed: %s: %w", opts.Addr, why, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("upstream %s: %w", opts.Addr, err)
		}
		log.Warn("upstream not ready; retrying", "addr", opts.Addr, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff(attempt)):
		}
	}
	log.Info("upstream", "addr", opts.Addr, "version", info.version, "databases", info.databases)

	pols, err := cfg.Policies()
	if err != nil {
		return err
	}
	def, named, err := newPools(cfg.L1)
	if err != nil {
		return err
	}
	defer def.Close()
	for _, c := range named {
		defer c.Close()
	}

	// One pool per protocol: a RESP3 client's replies must come from a
	// connection that is itself in RESP3.
	ucfg := upstream.Config{
		Addr:      opts.Addr,
		Username:  opts.Username,
		Password:  opts.Password,
		Conns:     cfg.UpstreamConns,
		Databases: info.databases,
		TLS:       opts.TLSConfig,

		DialTimeout:    cfg.UpstreamConnectTimeout,
		RequestTimeout: cfg.UpstreamTimeout,
	}
	if follow != nil {
		ucfg.Target = follow.target
	}
	pool, err := upstream.New(ucfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	ucfg.Protocol = 3
	pool3, err := upstream.New(ucfg)
	if err != nil {
		return err
	}
	defer pool3.Close()

	limits := resp.DefaultLimits()
	limits.MaxBulkLen = int64(cfg.Limits.ProtoMaxBulkLen)
	limits.MaxQueryBuffer = int64(cfg.Limits.ClientQueryBufferLimit)
	srv, err := proxy.New(proxy.Options{
		Upstream:        pool,
		Upstream3:       pool3,
		Commands:        table,
		Cache:           def,
		Pools:           named,
		Policies:        pols,
		Metrics:         metrics,
		Limits:          limits,
		Version:         info.version,
		DefaultDB:       opts.DB,
		MaxClients:      cfg.Limits.MaxClients,
		TrackingMaxKeys: cfg.Limits.TrackingTableMaxKeys,
		Clients:         clientLimits(cfg.Limits),
		RequirePass:     cfg.Auth.RequirePass,
		Users:           proxyUsers(cfg.Auth.Users),
		Logger:          log,

		DefaultPermissions: perms(cfg.Auth.Default),
		ProtectedMode:      cfg.Auth.ProtectedMode,
	})
	if err != nil {
		return err
	}

	lns, err := listen(cfg, srvTLS, log)
	if err != nil {
		return err
	}

	// The parts outlive ctx: the subscriber keeps the L1 coherent, and the
	// reloader keeps running, while clients drain.
	parts, stopParts := context.WithCancel(context.Background())
	defer stopParts()
	errc := make(chan error, 8)
	running := 0
	start := func(f func() error) {
		running++
		go func() { errc <- f() }()
	}

	sub := invalidation.New(invalidation.Config{
		Options:        opts,
		Mode:           invalidation.Mode(cfg.Invalidation.Mode),
		AllowConfigSet: cfg.Invalidation.ConfigSet,
		Prefixes:       srv.CachedPrefixes(),
		CanaryInterval: cfg.Invalidation.CanaryInterval,
		CanaryTimeout:  cfg.Invalidation.CanaryTimeout,
		PollInterval:   cfg.Invalidation.PollInterval,
		Logger:         log,
	}, srv.KeyspaceTarget())
	metrics.ObserveSubscriber(sub.State)
	h.setSubscriber(sub.State)
	start(func() error { return sub.Run(parts) })
	if follow != nil {
		follow.sub = sub
		start(func() error { return follow.run(parts) })
	}
	for _, ln := range lns {
		start(func() error { return srv.Serve(ln) })
	}

	rl := &reloader{flags: fl, running: cfg, level: level, srv: srv, metrics: metrics, log: log}
	if invalidation.Mode(cfg.Invalidation.Mode) == invalidation.Tracking {
		rl.tracked = srv.CachedPrefixes()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	start(func() error { rl.run(parts, hup); return nil })
	if srvTLS != nil || upTLS != nil {
		start(func() error { watchTLS(parts, cfg.ConfigPoll, log, srvTLS, upTLS); return nil })
	}

	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		running--
	}
	h.stopping.Store(true)
	log.Info("shutting down: draining clients", "grace", cfg.ShutdownGrace)
	drain, cancelDrain := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	if err := srv.Shutdown(drain); err != nil {
		log.Warn("shutdown grace period over: closed the remaining clients, maybe mid-command", "grace", cfg.ShutdownGrace)
	} else {
		log.Info("every client drained")
	}
	cancelDrain()
	stopParts()
	for ; running > 0; running-- {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// flags are the command line. Flags override the file's values, on every
// reload too.
type flags struct {
	file                    string
	listen, up, metrics     string
	setListen, setUp, setMx bool
	help, version           bool // printed by parseFlags; nothing to run
}

// parseFlags reads the command line. --help and --version print on out and
// set help or version, which leave nothing to run.
func parseFlags(args []string, out io.Writer) (*flags, error) {
	fs := flag.NewFlagSet("cacheproxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // a parse error is returned; --help prints on out
	f := &flags{}
	fs.StringVar(&f.file, "config", "", "YAML configuration file; reloaded on SIGHUP and when it changes (config_poll)")
	fs.StringVar(&f.listen, "listen", "", "client address (default 127.0.0.1:6380)")
	fs.StringVar(&f.up, "upstream", "", "upstream URL redis://[user:pass@]host:port[/db] (default redis://127.0.0.1:6379)")
	fs.StringVar(&f.metrics, "metrics", "", `metrics and health address (/metrics, /healthz, /readyz; default 127.0.0.1:9180, "" for none)`)
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(out)
		fmt.Fprintln(out, "usage: cacheproxy [flags]")
		fs.PrintDefaults()
		f.help = true
		return f, nil
	} else if err != nil {
		return nil, fmt.Errorf("%w (cacheproxy --help lists the flags)", err)
	}
	if f.version {
		fmt.Fprintln(out, versionString())
		return f, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "listen":
			f.setListen = true
		case "upstream":
			f.setUp = true
		case "metrics":
			f.setMx = true
		}
	})
	return f, nil
}

// load reads the file (or takes the defaults) and applies the flags over it.
func (f *flags) load() (*config.Config, error) {
	if f.file == "" {
		return f.parse(nil)
	}
	data, err := os.ReadFile(f.file)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return f.parse(data)
}

// parse reads the file's content, nil for none, and applies the flags over it.
func (f *flags) parse(data []byte) (*config.Config, error) {
	cfg := config.Default()
	if data != nil {
		var err error
		if cfg, err = config.Parse(data, f.file); err != nil {
			return nil, err
		}
	}
	if f.setListen {
		cfg.Listen = f.listen
	}
	if f.setUp {
		cfg.Upstream = f.up
	}
	if f.setMx {
		cfg.Metrics = f.metrics
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	return cfg, nil
}

// newPools makes the L1's pools: the default one and the named ones.
func newPools(c config.L1) (def *l1.Cache, named map[string]*l1.Cache, err error) {
	named = map[string]*l1.Cache{}
	// stale_if_error's last replies, shared by every pool, beside the L1's
	// budget: an eighth of it (see README, Upstream trouble).
	last, err := l1.NewLast(max(int64(c.MaxMemory)/8, 1<<10))
	if err != nil {
		return nil, nil, err
	}
	for name, budget := range c.PoolBudgets() {
		cache, err := l1.New(l1.Config{MaxBytes: int64(budget), Last: last})
		if err != nil {
			for _, c := range named {
				c.Close()
			}
			if def != nil {
				def.Close()
			}
			return nil, nil, fmt.Errorf("l1 pool %q: %w", name, err)
		}
		if name == config.DefaultPool {
			def = cache
		} else {
			named[name] = cache
		}
	}
	return def, named, nil
}

func newLogger(c config.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	setLevel(level, c.Level)
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// setLevel applies a validated level name.
func setLevel(v *slog.LevelVar, name string) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(name))
	v.Set(l)
}

type upstreamInfo struct {
	version   string
	databases int
}

func readUpstreamInfo(ctx context.Context, c *redis.Client) (upstreamInfo, error) {
	info := upstreamInfo{databases: 16}
	s, err := c.Info(ctx, "server").Result()
	if err != nil {
		return info, fmt.Errorf("INFO server: %w", err)
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
			info.version = v
		}
	}
	// Managed services may refuse CONFIG; Redis's default then stands.
	if m, err := c.ConfigGet(ctx, "databases").Result(); err == nil {
		var n int
		if _, err := fmt.Sscan(m["databases"], &n); err == nil && n > 0 {
			info.databases = n
		}
	}
	return info, nil
}

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 5)
	return min(d, 3*time.Second)
}

// proxyUsers turns the configured users into the proxy's.
func proxyUsers(users []config.User) []proxy.User {
	out := make([]proxy.User, len(users))
	for i, u := range users {
		out[i] = proxy.User{Name: u.Name, Password: u.Password, Permissions: *perms(u.Permissions())}
	}
	return out
}

func perms(p config.Permissions) *acl.Permissions {
	return &acl.Permissions{ReadOnly: p.ReadOnly, Keys: p.Keys, Admin: p.Admin}
}
