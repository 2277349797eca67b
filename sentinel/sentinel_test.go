package sentinel

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

// TestWatcherFollowsFailover resolves the master through a real sentinel,
// forces a failover and checks that the Watcher switches to the replica.
func TestWatcherFollowsFailover(t *testing.T) {
	t.Parallel()
	primary := redistest.Start(t, redistest.Options{})
	replica := redistest.Start(t, redistest.Options{ReplicaOf: primary.Addr()})
	s := redistest.StartSentinel(t, primary, redistest.SentinelOptions{})
	logs := &syncbuf.Buffer{}
	cfg := Config{
		URL:    &URL{Sentinels: []string{"127.0.0.1:1", s.Addr()}, Master: "mymaster"},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Resolve(ctx, cfg)
	if err != nil || addr != primary.Addr() {
		t.Fatalf("Resolve = %q, %v; want %s", addr, err, primary.Addr())
	}
	switched := make(chan string, 4)
	w := NewWatcher(cfg, addr, func(from, to string) { switched <- to })
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	redistest.WaitReplicas(t, s, "mymaster", 1)
	start := time.Now()
	redistest.Failover(t, s, "mymaster")
	select {
	case to := <-switched:
		if to != replica.Addr() {
			t.Fatalf("switched to %s; want the replica %s", to, replica.Addr())
		}
		t.Logf("switched %v after SENTINEL FAILOVER", time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatalf("no switch within 30s; log:\n%s", logs)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestResolveFailsClearly(t *testing.T) {
	t.Parallel()
	primary := redistest.Start(t, redistest.Options{})
	s := redistest.StartSentinel(t, primary, redistest.SentinelOptions{})
	_, err := Resolve(context.Background(), Config{URL: &URL{Sentinels: []string{s.Addr()}, Master: "nosuch"}})
	if err == nil {
		t.Fatal("Resolve of an unknown master succeeded")
	}
	t.Log(err)
}
