// Package redistest starts real redis-server processes for tests, each on a free
// loopback port with its own data directory, and stops them when the test ends.
// It never fakes Redis: a test that needs Redis and cannot find redis-server fails.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/localnet"
	"github.com/redis/go-redis/v9"
)

// Options tune a server. The zero value starts Redis with every keyspace
// notification class enabled.
type Options struct {
	// NotifyKeyspaceEvents is passed as notify-keyspace-events. Empty means "KEA";
	// use "none" for a server with notifications off.
	NotifyKeyspaceEvents string
	// Args are extra redis-server arguments, e.g. {"--maxmemory", "1mb"}.
	Args []string
	// ReplicaOf, host:port, starts the server as a replica of that one.
	ReplicaOf string
	// Cluster starts the server with cluster support on (a node of no
	// cluster yet: see StartCluster), its cluster bus on a free port of its
	// own and its node configuration in its data directory.
	Cluster bool
}

// Server is one running redis-server.
type Server struct {
	t    testing.TB
	opts Options
	dir  string
	port string
	// sentinel, when set, is the configuration of a redis-sentinel to run
	// instead of a redis-server (see StartSentinel), less its port.
	sentinel string

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{} // closed when proc has been reaped
}

// Start launches redis-server on a free 127.0.0.1 port and registers its stop
// with t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (apt-get install -y redis-server): %v", err)
	}
	s := &Server{t: t, opts: opts, dir: t.TempDir()}
	s.start("redis-server")
	return s
}

// start launches s on a free port, trying a few in case another process takes
// the one picked before s binds it, and registers its stop with t.Cleanup.
func (s *Server) start(what string) {
	s.t.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var addr string
		if addr, err = localnet.FreeAddr(); err != nil {
			continue
		}
		_, s.port, _ = net.SplitHostPort(addr)
		if err = s.launch(); err == nil {
			s.t.Cleanup(s.Stop)
			return
		}
	}
	s.t.Fatalf("start %s: %v", what, err)
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", s.port) }

// URL is the redis:// URL of database db on the server.
func (s *Server) URL(db int) string { return fmt.Sprintf("redis://%s/%d", s.Addr(), db) }

// Client returns a go-redis client talking to the server directly on database db,
// closed when the test ends.
func (s *Server) Client(db int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DB: db, Protocol: 2})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Stop kills the server and waits for it to exit. It is safe to call twice.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Kill()
	<-s.exited
	s.proc = nil
}

// Restart stops the server and starts a new, empty one on the same port: to
// clients it looks like an upstream restart that lost its data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err = s.launch(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("restart redis-server on port %s: %v", s.port, err)
}

func (s *Server) launch() error {
	events := s.opts.NotifyKeyspaceEvents
	switch events {
	case "":
		events = "KEA"
	case "none":
		events = ""
	}
	args := []string{
		"--port", s.port,
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--notify-keyspace-events", events,
		"--logfile", "",
		"--loglevel", "warning",
	}
	if s.opts.ReplicaOf != "" {
		host, port, _ := net.SplitHostPort(s.opts.ReplicaOf)
		args = append(args, "--replicaof", host, port)
	}
	if s.opts.Cluster {
		// The bus's default port, the client port + 10000, may be taken or
		// past 65535: it gets a free one too, losing races as the client
		// port may (start tries again).
		bus, err := localnet.FreeAddr()
		if err != nil {
			return err
		}
		_, busPort, _ := net.SplitHostPort(bus)
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", busPort,
			"--cluster-node-timeout", "5000")
	}
	args = append(args, s.opts.Args...)
	cmd := exec.Command("redis-server", args...)
	if s.sentinel != "" {
		// Sentinel rewrites its configuration file, so it gets one of its own.
		conf := filepath.Join(s.dir, "sentinel.conf")
		data := fmt.Sprintf("port %s\nbind 127.0.0.1\ndir %s\nlogfile \"\"\nloglevel warning\n%s", s.port, s.dir, s.sentinel)
		if err := os.WriteFile(conf, []byte(data), 0o600); err != nil {
			return err
		}
		cmd = exec.Command("redis-sentinel", conf)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec redis-server: %w", err)
	}
	var logMu sync.Mutex
	var logTail []string
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			logMu.Lock()
			logTail = append(logTail, sc.Text())
			if len(logTail) > 20 {
				logTail = logTail[1:]
			}
			logMu.Unlock()
		}
	}()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if localnet.Ping(s.Addr()) == nil {
			s.mu.Lock()
			s.proc, s.exited = cmd.Process, exited
			s.mu.Unlock()
			return nil
		}
		select {
		case <-exited:
			logMu.Lock()
			defer logMu.Unlock()
			return fmt.Errorf("redis-server on port %s exited: %s", s.port, strings.Join(logTail, " | "))
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server on port %s did not answer PING", s.port)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
