package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
	"github.com/cacheproxy/cacheproxy/internal/tlstest"
)

// tlsProc is a proxy with a TLS port, in front of a TLS-only Redis.
type tlsProc struct {
	redis          *tlstest.Redis
	ca             *tlstest.CA // signs the proxy's certificate and its clients'
	files          tlstest.Files
	tlsAddr        string
	metrics        string
	logs           *syncbuf.Buffer
	clientCert     tls.Certificate
	cancel         context.CancelFunc
	done           chan error
	confPath, body string
}

// tlsConfigBody is the proxy's configuration: plain port off, TLS port with
// mutual TLS, a rediss:// upstream with a client certificate.
func tlsConfigBody(r *tlstest.Redis, tlsAddr, metrics string, f tlstest.Files) string {
	return fmt.Sprintf(`listen: ""
metrics: %s
upstream: %s
config_poll: 100ms
tls:
  listen: %s
  cert_file: %s
  key_file: %s
  client_ca_file: %s
upstream_tls:
  ca_file: %s
  cert_file: %s
  key_file: %s
`, metrics, r.URL(0), tlsAddr, f.Cert, f.Key, f.CA, r.ClientFiles.CA, r.ClientFiles.Cert, r.ClientFiles.Key)
}

func startTLSProc(t *testing.T) *tlsProc {
	t.Helper()
	dir := t.TempDir()
	p := &tlsProc{redis: tlstest.StartRedis(t), ca: tlstest.NewCA(t, "proxy CA"), tlsAddr: freeAddr(t), metrics: freeAddr(t),
		logs: &syncbuf.Buffer{}, done: make(chan error, 1), confPath: filepath.Join(dir, "cacheproxy.yaml")}
	p.files = p.ca.Write(t, dir, "proxy", p.ca.Leaf(t, "proxy", 100))
	p.clientCert = p.ca.Leaf(t, "app", 200).TLSCert(t)
	tlstest.WriteFile(t, p.confPath, []byte(tlsConfigBody(p.redis, p.tlsAddr, p.metrics, p.files)))
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- run(ctx, []string{"--config", p.confPath}, p.logs, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			t.Errorf("run did not return; log:\n%s", p.logs)
		}
	})
	waitReady(t, p.metrics, p.logs)
	return p
}

// client is a go-redis client of the proxy's TLS port; cert nil shows none.
func (p *tlsProc) client(t *testing.T, cert *tls.Certificate) *redis.Client {
	cfg := &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c := redis.NewClient(&redis.Options{Addr: p.tlsAddr, TLSConfig: cfg, MaxRetries: -1, PoolSize: 1})
	t.Cleanup(func() { c.Close() })
	return c
}

// redisGets is how many GETs the TLS Redis has run.
func redisGets(t *testing.T, r *tlstest.Redis) string {
	t.Helper()
	info, err := r.Client(t, 0).Info(bg, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_get:calls="); ok {
			return rest[:strings.IndexByte(rest, ',')]
		}
	}
	return "0"
}

// TestTLSBothSides: clients reach the proxy over mutual TLS (go-redis and
// redis-cli), the proxy reaches Redis over TLS with a client certificate,
// reads are cached, and a write made on Redis directly reaches the L1 through
// the invalidation stream, itself over TLS.
func TestTLSBothSides(t *testing.T) {
	t.Parallel()
	p := startTLSProc(t)
	c := p.client(t, &p.clientCert)
	if err := c.Set(bg, "k", "v1", 0).Err(); err != nil {
		t.Fatalf("SET over TLS: %v; log:\n%s", err, p.logs)
	}
	// The L1 admits a new entry through a buffer: a read right after the
	// first may still miss, so only most reads must be hits.
	for range 10 {
		if got, err := c.Get(bg, "k").Result(); err != nil || got != "v1" {
			t.Fatalf("GET over TLS: %q, %v", got, err)
		}
	}
	if got := redisGets(t, p.redis); got != "1" && got != "2" && got != "3" {
		t.Errorf("Redis ran %s GETs for 10 reads, want at most 3 (the others from the L1)", got)
	}

	// A write made on Redis itself reaches the L1.
	if err := p.redis.Client(t, 0).Set(bg, "k", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the direct write reaches the L1", p.logs, func() bool {
		return c.Get(bg, "k").Val() == "v2"
	})

	// CLIENT LIST shows the client's own address on the TLS port.
	list := c.ClientList(bg).Val()
	if !strings.Contains(list, "laddr="+p.tlsAddr) {
		t.Errorf("CLIENT LIST does not show laddr=%s:\n%s", p.tlsAddr, list)
	}

	// redis-cli, with a certificate of the proxy's CA.
	dir := t.TempDir()
	cli := p.ca.Write(t, dir, "cli", p.ca.Leaf(t, "cli", 300))
	host, port := "127.0.0.1", p.tlsAddr[strings.LastIndexByte(p.tlsAddr, ':')+1:]
	out, err := exec.Command("redis-cli", "-h", host, "-p", port, "--tls", "--cacert", cli.CA,
		"--cert", cli.Cert, "--key", cli.Key, "GET", "k").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "v2" {
		t.Errorf("redis-cli --tls GET k: %q, %v", out, err)
	}
	// Without a certificate, mutual TLS refuses it, and go-redis alike.
	out, _ = exec.Command("redis-cli", "-h", host, "-p", port, "--tls", "--cacert", cli.CA, "GET", "k").CombinedOutput()
	if strings.Contains(string(out), "v2") {
		t.Errorf("redis-cli without a certificate got an answer: %q", out)
	}
	if err := p.client(t, nil).Ping(bg).Err(); err == nil {
		t.Error("a go-redis client without a certificate was let in")
	}
}

// TestTLSRotation: new certificate files serve new connections while an open
// one goes on; a broken file keeps the running certificate and is logged.
func TestTLSRotation(t *testing.T) {
	t.Parallel()
	p := startTLSProc(t)
	old := p.client(t, &p.clientCert)
	if err := old.Set(bg, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		t.Helper()
		conn, err := tls.Dial("tcp", p.tlsAddr, &tls.Config{RootCAs: p.ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{p.clientCert}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 100 {
		t.Fatalf("serial %d, want 100", got)
	}

	p.ca.Write(t, filepath.Dir(p.files.Cert), "proxy", p.ca.Leaf(t, "proxy", 101))
	waitFor(t, 5*time.Second, "new connections see serial 101", p.logs, func() bool { return serial() == 101 })
	if got, err := old.Get(bg, "k").Result(); err != nil || got != "v" {
		t.Fatalf("the connection opened before the rotation: %q, %v", got, err)
	}
	if !strings.Contains(p.logs.String(), "TLS certificate reloaded") {
		t.Errorf("the rotation was not logged:\n%s", p.logs)
	}

	tlstest.WriteFile(t, p.files.Cert, []byte("garbage"))
	waitFor(t, 5*time.Second, "the broken file is logged", p.logs, func() bool {
		return strings.Contains(p.logs.String(), `cert_file \"`+p.files.Cert+`\": holds no PEM certificate`)
	})
	if got := serial(); got != 101 {
		t.Errorf("after a broken file: serial %d, want 101", got)
	}
	if err := old.Ping(bg).Err(); err != nil {
		t.Errorf("the old connection after a broken file: %v", err)
	}
}

// TestTLSStartRefused: files that do not load, and an upstream certificate
// the CA does not verify, stop the start with an error naming the cause.
func TestTLSStartRefused(t *testing.T) {
	t.Parallel()
	r := tlstest.StartRedis(t)
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "proxy CA")
	f := ca.Write(t, dir, "proxy", ca.Leaf(t, "proxy", 1))
	garbage := filepath.Join(dir, "garbage.pem")
	tlstest.WriteFile(t, garbage, []byte("garbage"))
	missing := filepath.Join(dir, "missing.pem")
	stranger := tlstest.NewCA(t, "another CA")
	strangerCA := filepath.Join(dir, "stranger.crt")
	tlstest.WriteFile(t, strangerCA, stranger.PEM)

	for _, tt := range []struct {
		name string
		edit func(body string) string
		want []string
	}{
		{"missing cert", func(b string) string { return strings.Replace(b, "cert_file: "+f.Cert, "cert_file: "+missing, 1) },
			[]string{`tls: cert_file "` + missing + `": cannot be read: no such file or directory`}},
		{"garbage key", func(b string) string { return strings.Replace(b, "key_file: "+f.Key, "key_file: "+garbage, 1) },
			[]string{`tls: key_file "` + garbage + `": holds no PEM private key`}},
		{"garbage upstream CA", func(b string) string {
			return strings.Replace(b, "ca_file: "+r.ClientFiles.CA, "ca_file: "+garbage, 1)
		}, []string{`upstream_tls: ca_file "` + garbage + `": holds no PEM certificate`}},
		{"CA that does not verify Redis", func(b string) string {
			return strings.Replace(b, "ca_file: "+r.ClientFiles.CA, "ca_file: "+strangerCA, 1)
		}, []string{"upstream " + r.Addr + ": TLS handshake failed", `upstream_tls.ca_file "` + strangerCA + `" does not hold the CA`, "certificate signed by unknown authority"}},
	} {
		conf := filepath.Join(dir, "c.yaml")
		body := tt.edit(tlsConfigBody(r, freeAddr(t), freeAddr(t), f))
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := run(ctx, []string{"--config", conf}, &syncbuf.Buffer{}, nil)
		cancel()
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: run: %v, want an error with %q", tt.name, err, w)
			}
		}
	}
}
