package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const busyError = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."

// startBusyScript runs an endless script through c and waits until Redis,
// asked through the proxy by probe, answers BUSY. The returned channel
// carries the script's error once it ends.
func startBusyScript(t *testing.T, e *env, c, probe *redis.Client) <-chan error {
	t.Helper()
	if err := e.direct.ConfigSet(bg, "busy-reply-threshold", "100").Err(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ended := make(chan struct{})
	go func() {
		done <- c.Eval(bg, "while true do end", nil).Err()
		close(ended)
	}()
	t.Cleanup(func() {
		// Whatever the test did, leave no script running behind it.
		_ = e.direct.ScriptKill(bg).Err()
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
		}
	})
	eventually(t, 10*time.Second, "Redis busy through the proxy", func() bool {
		err := probe.Get(bg, "probe").Err()
		return err != nil && err.Error() == busyError
	})
	return done
}

// TestScriptKillThroughProxy: a script that runs away on one client's
// connection is killed by SCRIPT KILL sent through the proxy by another,
// whatever the proxy's shared connections carry meanwhile, and everyone else
// meets Redis's own BUSY meanwhile, not a proxy error.
func TestScriptKillThroughProxy(t *testing.T) {
	t.Parallel()
	for _, proto := range []int{2, 3} {
		t.Run("RESP"+string(rune('0'+proto)), func(t *testing.T) {
			e := startEnv(t, envOptions{})
			runner := redis.NewClient(&redis.Options{Addr: e.addr, Protocol: proto, MaxRetries: -1, ReadTimeout: -1})
			other := redis.NewClient(&redis.Options{Addr: e.addr, Protocol: proto, MaxRetries: -1, DB: 3})
			t.Cleanup(func() { runner.Close(); other.Close() })
			done := startBusyScript(t, e, runner, e.client(0))

			// A client of another database needs a new upstream connection,
			// whose SELECT Redis refuses while busy: it gets BUSY as well.
			if err := other.Get(bg, "k").Err(); err == nil || err.Error() != busyError {
				t.Fatalf("GET in db 3 while busy: %v, want %q", err, busyError)
			}
			start := time.Now()
			if err := other.ScriptKill(bg).Err(); err != nil {
				t.Fatalf("SCRIPT KILL through the proxy: %v", err)
			}
			select {
			case err := <-done:
				if err == nil || !strings.HasPrefix(err.Error(), "ERR Script killed by user with SCRIPT KILL") {
					t.Fatalf("the script ended with %v", err)
				}
			case <-time.After(time.Second):
				t.Fatal("the script still ran a second after SCRIPT KILL")
			}
			t.Logf("SCRIPT KILL to the script's end: %v", time.Since(start))
			if err := other.Set(bg, "k", "v", 0).Err(); err != nil {
				t.Fatalf("SET after the kill: %v", err)
			}
		})
	}
}

// TestTransactionMeetsBusyScript: a transaction begun while a script keeps
// Redis busy ends as it does on Redis (its queued command refused, EXEC
// aborted), and the connection serves the client normally afterwards.
func TestTransactionMeetsBusyScript(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	runner := redis.NewClient(&redis.Options{Addr: e.addr, MaxRetries: -1, ReadTimeout: -1})
	t.Cleanup(func() { runner.Close() })
	const tx = "MULTI\r\nSET k v\r\nEXEC\r\n"

	// Redis's own answer, on a connection of its own.
	done := startBusyScript(t, e, runner, e.client(0))
	want := dialRaw(t, e.redis.Addr()).roundTrip(tx, 3)
	if err := e.direct.ScriptKill(bg).Err(); err != nil {
		t.Fatal(err)
	}
	<-done

	done = startBusyScript(t, e, runner, e.client(0))
	r := dialRaw(t, e.addr)
	if got := r.roundTrip(tx, 3); got != want {
		t.Fatalf("through the proxy %q\ndirectly          %q", got, want)
	}
	if !strings.Contains(want, "EXECABORT") {
		t.Fatalf("Redis answered %q: the test no longer meets a busy Redis", want)
	}
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	if err := e.client(0).ScriptKill(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	<-done
	if got := r.roundTrip("SET k v2\r\nGET k\r\n", 2); got != "+OK\r\n$2\r\nv2\r\n" {
		t.Fatalf("after the kill: %q", got)
	}
}
