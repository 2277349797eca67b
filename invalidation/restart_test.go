package invalidation

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// TestRestartSuspendsAtOnce moves the upstream the way a failover does: the
// Dialer's address changes, then Restart. The Target must be suspended when
// Restart returns, and the next stream must come from the new server.
func TestRestartSuspendsAtOnce(t *testing.T) {
	t.Parallel()
	a, b := redistest.Start(t, redistest.Options{}), redistest.Start(t, redistest.Options{})
	target := upstream.NewTarget(a.Addr())
	h := run(t, Config{Options: &redis.Options{Addr: a.Addr(), Dialer: target.Dial}})
	h.waitReady(t)
	h.rec.waitTrust(t, "suspend resume")

	target.Set(b.Addr())
	h.sub.Restart("failover")
	if got := h.rec.trust(); got != "suspend resume suspend" {
		t.Fatalf("after Restart returned: %q; want the Target suspended", got)
	}
	h.rec.waitTrust(t, "suspend resume suspend resume")
	// Written again now and then: on a loaded machine the stream may be lost
	// (and the write's event with it) and come back meanwhile.
	want := call{"invalidate", 0, "on-b"}
	waitUntil(t, want.String(), func() bool {
		if h.rec.count(want) > 0 {
			return true
		}
		set(t, b.Client(0), "on-b")
		time.Sleep(50 * time.Millisecond)
		return h.rec.count(want) > 0
	})
}

// TestRestartBetweenSessions is a no-op while no session runs.
func TestRestartBetweenSessions(t *testing.T) {
	t.Parallel()
	sub := New(Config{Options: &redis.Options{Addr: "127.0.0.1:1"}}, &recorder{})
	sub.Restart("nothing to end")
}
