package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/localnet"
	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := localnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func redisCLI(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestBinaryEndToEnd runs the proxy as main does, from a config file plus
// overriding flags, and talks to it with redis-cli.
func TestBinaryEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli is not installed (apt-get install -y redis-tools)")
	}
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	listen, metrics := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "cacheproxy.yaml")
	err := os.WriteFile(cfg, []byte(`
listen: 127.0.0.1:1        # overridden by --listen
upstream: redis://127.0.0.1:1/0
l1:
  max_memory: 16MiB
policies:
  - prefix: "session:"
    ttl: 30s
  - prefix: "ratelimit:"
    cache: false
  - prefix: ""
    ttl: 10s
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--listen", listen, "--upstream", r.URL(0), "--metrics", metrics}, logs, nil)
	}()
	waitReady(t, metrics, logs)

	if got := redisCLI(t, listen, "SET", "session:1", "hello"); got != "OK" {
		t.Fatalf("SET = %q", got)
	}
	for i := 0; i < 3; i++ {
		if got := redisCLI(t, listen, "GET", "session:1"); got != "hello" {
			t.Fatalf("GET = %q", got)
		}
	}
	if got := redisCLI(t, listen, "INCR", "ratelimit:ip"); got != "1" {
		t.Fatalf("INCR = %q", got)
	}

	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{
		`cacheproxy_l1_hits_total{policy="session:"}`,
		`cacheproxy_l1_misses_total{policy="session:"}`,
		`cacheproxy_invalidations_total{source="write"}`,
		`cacheproxy_upstream_request_duration_seconds_bucket`,
		`cacheproxy_connected_clients`,
	} {
		if !bytes.Contains(body, []byte(name)) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// TestConfigErrorsStopBeforeListening: a bad config names the file and field,
// and the proxy never listens.
func TestConfigErrorsStopBeforeListening(t *testing.T) {
	t.Parallel()
	listen := freeAddr(t)
	dir := t.TempDir()
	cases := map[string]string{
		"policies[0].ttl": "policies:\n  - prefix: \"a:\"\n    ttl: 30 seconds\n",
		"l1.max_memory":   "l1:\n  max_memory: lots\n",
		"listen":          "listen: nowhere\n",
		"nonsense":        "nonsense: 1\n",
	}
	for field, body := range cases {
		path := filepath.Join(dir, strings.NewReplacer("[", "", "]", "", ".", "_").Replace(field)+".yaml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		err := run(context.Background(), []string{"--config", path, "--listen", listen}, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %v does not name the file and the field", field, err)
		}
	}
	if err := run(context.Background(), []string{"--upstream", "mysql://x"}, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "upstream") {
		t.Errorf("bad --upstream flag: %v", err)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("the proxy left %s in use: %v", listen, err)
	}
	l.Close()
}
