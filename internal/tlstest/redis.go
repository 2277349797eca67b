package tlstest

import (
	"context"
	"crypto/tls"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/localnet"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

// Redis is a redis-server that listens only on a TLS port (--port 0) and
// requires clients to show a certificate its CA signed (--tls-auth-clients
// yes), with every keyspace notification on.
type Redis struct {
	Addr        string // 127.0.0.1:port of the TLS port
	CA          *CA    // signs the server's and the clients' certificates
	Server      Files  // the server's certificate, key and CA file
	ClientFiles Files  // a client certificate, key and CA file for the proxy
	client      tls.Certificate
}

// StartRedis starts the server with certificates of a new CA, and stops it
// when the test ends. It fails the test when redis-server lacks TLS.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (apt-get install -y redis-server): %v", err)
	}
	dir := t.TempDir()
	r := &Redis{CA: NewCA(t, "redis test CA")}
	r.Server = r.CA.Write(t, dir, "redis", r.CA.Leaf(t, "redis", 2))
	cp := r.CA.Leaf(t, "cacheproxy", 3)
	r.ClientFiles = r.CA.Write(t, dir, "client", cp)
	r.client = cp.TLSCert(t)

	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr, err := localnet.FreeAddr()
		if err != nil {
			lastErr = err
			continue
		}
		port := addr[strings.LastIndexByte(addr, ':')+1:]
		logs := &syncbuf.Buffer{}
		cmd := exec.Command("redis-server",
			"--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
			"--tls-cert-file", r.Server.Cert, "--tls-key-file", r.Server.Key,
			"--tls-ca-cert-file", r.Server.CA, "--tls-auth-clients", "yes",
			"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
			"--notify-keyspace-events", "KEA", "--logfile", "", "--loglevel", "warning")
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatalf("exec redis-server: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		r.Addr = addr
		if lastErr = r.waitPing(exited); lastErr == nil {
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
			return r
		}
		_ = cmd.Process.Kill()
		<-exited
		lastErr = fmt.Errorf("%w; log: %s", lastErr, logs)
	}
	t.Fatalf("start redis-server with TLS: %v", lastErr)
	return nil
}

func (r *Redis) waitPing(exited <-chan struct{}) error {
	c := redis.NewClient(r.options(0))
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server did not answer PING over TLS: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *Redis) options(db int) *redis.Options {
	return &redis.Options{
		Addr: r.Addr, DB: db, Protocol: 2, MaxRetries: -1,
		TLSConfig: &tls.Config{RootCAs: r.CA.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{r.client}},
	}
}

// URL is the rediss:// URL of database db.
func (r *Redis) URL(db int) string { return fmt.Sprintf("rediss://%s/%d", r.Addr, db) }

// Client is a go-redis client of database db, straight to the server over
// TLS, closed when the test ends.
func (r *Redis) Client(t testing.TB, db int) *redis.Client {
	c := redis.NewClient(r.options(db))
	t.Cleanup(func() { c.Close() })
	return c
}
