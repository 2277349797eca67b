package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/faultnet"
	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

// TestReadinessUnderFaults: with a bridge between the proxy and Redis,
// /readyz answers 503 while the bridge blackholes or cuts, and 200 soon after
// it heals; clients are served again as soon.
func TestReadinessUnderFaults(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	br, err := faultnet.New(r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(br.Close)
	listen, metrics := freeAddr(t), freeAddr(t)
	file := filepath.Join(t.TempDir(), "cacheproxy.yaml")
	cfg := fmt.Sprintf("listen: %s\nmetrics: %s\nupstream: redis://%s/0\nupstream_timeout: 300ms\n"+
		"invalidation:\n  canary_interval: 100ms\n  canary_timeout: 1s\npolicies:\n  - {prefix: \"\", ttl: 1m, stale_if_error: 0s}\n",
		listen, metrics, br.Addr())
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--config", file}, logs, nil) }()
	t.Cleanup(func() {
		br.Heal()
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("run did not return; log:\n%s", logs)
		}
	})
	waitReady(t, metrics, logs)
	c := redis.NewClient(&redis.Options{Addr: listen, MaxRetries: -1})
	defer c.Close()
	for _, fault := range []struct {
		name   string
		inject func()
	}{
		{"blackhole", br.Blackhole},
		{"cut", func() { br.Cut(true) }},
	} {
		start := time.Now()
		fault.inject()
		waitFor(t, 10*time.Second, "/readyz 503 under "+fault.name, logs, func() bool {
			code, _ := readyz(metrics)
			return code == http.StatusServiceUnavailable
		})
		_, body := readyz(metrics)
		t.Logf("%s: /readyz 503 after %v: %s", fault.name, time.Since(start).Round(time.Millisecond),
			strings.ReplaceAll(strings.TrimSpace(body), "\n", " | "))
		br.Heal()
		healed := time.Now()
		waitFor(t, 10*time.Second, "service after "+fault.name, logs, func() bool { return c.Set(bg, "k", "v", 0).Err() == nil })
		served := time.Since(healed)
		waitFor(t, 10*time.Second, "/readyz 200 after "+fault.name, logs, func() bool {
			code, _ := readyz(metrics)
			return code == http.StatusOK
		})
		t.Logf("%s: served again %v after heal, /readyz 200 after %v", fault.name,
			served.Round(time.Millisecond), time.Since(healed).Round(time.Millisecond))
	}
}
