// Command cacheproxy is a Redis-protocol caching proxy: point Redis clients at it
// instead of Redis, and reads of the configured key prefixes are answered from an
// in-process cache kept coherent by keyspace notifications.
//
// It wires the configuration to the packages that do the work and owns their
// lifetimes; it holds no logic of its own.
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
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cacheproxy:", err)
		os.Exit(1)
	}
}

// run starts the proxy and blocks until ctx ends or a part fails.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := loadConfig(args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)

	opts, err := redis.ParseURL(cfg.Upstream)
	if err != nil {
		return fmt.Errorf("upstream %q: %w", cfg.Upstream, err)
	}
	opts.Protocol = 2
	opts.MaxRetries = -1 // a proxy never runs a command twice
	control := redis.NewClient(opts)
	defer control.Close()

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
	cache, err := l1.New(l1.Config{MaxBytes: int64(cfg.L1.MaxMemory)})
	if err != nil {
		return err
	}
	defer cache.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := proxy.NewMetrics(reg, cache)

	pool, err := upstream.New(upstream.Config{
		Addr:      opts.Addr,
		Username:  opts.Username,
		Password:  opts.Password,
		Conns:     cfg.UpstreamConns,
		Databases: info.databases,
	})
	if err != nil {
		return err
	}
	defer pool.Close()

	limits := resp.DefaultLimits()
	limits.MaxBulkLen = int64(cfg.Limits.ProtoMaxBulkLen)
	srv, err := proxy.New(proxy.Options{
		Upstream:   pool,
		Commands:   table,
		Cache:      cache,
		Policies:   pols,
		Metrics:    metrics,
		Limits:     limits,
		Version:    info.version,
		DefaultDB:  opts.DB,
		MaxClients: cfg.Limits.MaxClients,
		Logger:     log,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("listening", "addr", ln.Addr().String())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	running := 0
	start := func(f func() error) {
		running++
		go func() { errc <- f() }()
	}

	sub := invalidation.New(invalidation.Config{
		Options:        opts,
		AllowConfigSet: cfg.Invalidation.ConfigSet,
		Logger:         log,
	}, srv.KeyspaceTarget())
	start(func() error { return sub.Run(ctx) })
	start(func() error { return srv.Serve(ln) })

	var hs *http.Server
	if cfg.Metrics != "" {
		mln, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			cancel()
			srv.Close()
			for ; running > 0; running-- {
				<-errc
			}
			return fmt.Errorf("metrics listen: %w", err)
		}
		log.Info("metrics", "addr", "http://"+mln.Addr().String()+"/metrics")
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		// Profiles of a running proxy: the metrics address is an operator's port.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		start(func() error {
			if err := hs.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
	}

	var first error
	select {
	case <-ctx.Done():
	case first = <-errc:
		running--
	}
	log.Info("shutting down")
	cancel()
	srv.Close()
	if hs != nil {
		hs.Close()
	}
	for ; running > 0; running-- {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// loadConfig reads --config and applies the flags over it; flags win.
func loadConfig(args []string, stderr io.Writer) (*config.Config, error) {
	fs := flag.NewFlagSet("cacheproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "YAML configuration file")
	listen := fs.String("listen", "", "client address (default 127.0.0.1:6380)")
	up := fs.String("upstream", "", "upstream URL redis://[user:pass@]host:port[/db] (default redis://127.0.0.1:6379)")
	metrics := fs.String("metrics", "", "Prometheus /metrics address (default 127.0.0.1:9180)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg := config.Default()
	if *file != "" {
		var err error
		if cfg, err = config.Load(*file); err != nil {
			return nil, err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["listen"] {
		cfg.Listen = *listen
	}
	if set["upstream"] {
		cfg.Upstream = *up
	}
	if set["metrics"] {
		cfg.Metrics = *metrics
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	return cfg, nil
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
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
