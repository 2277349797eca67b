package proxy

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/resp"
)

// TestBusyFunctionThroughProxy shows what clients see while a function runs
// past busy-reply-threshold, directly and through the proxy. Directly, every
// other command gets -BUSY. Through the proxy:
//   - a command on a shared upstream connection the function does not hold
//     gets Redis's -BUSY, byte for byte;
//   - PING is answered by the proxy itself: +PONG;
//   - a command that needs a new upstream connection (a blocking one, say)
//     gets -BUSY too: the connection's set-up survives a busy Redis;
//   - so does a client whose shared connection would have carried the FCALL,
//     had scripts not run on connections of their own;
//
// and the FCALL, once the function is killed on Redis directly, gets Redis's
// error.
func TestBusyFunctionThroughProxy(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	if err := e.direct.ConfigSet(bg, "busy-reply-threshold", "100").Err(); err != nil {
		t.Fatal(err)
	}
	lib := "#!lua name=spinlib\nredis.register_function('spin', function() while true do end end)"
	if err := e.direct.FunctionLoadReplace(bg, lib).Err(); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, the function must not outlive the test (NOTBUSY
	// when nothing runs).
	t.Cleanup(func() { _ = e.direct.FunctionKill(bg).Err() })
	probe := dialRaw(t, e.redis.Addr())
	awaitBusy := func() {
		t.Helper()
		eventually(t, 5*time.Second, "Redis busy", func() bool {
			return strings.HasPrefix(probe.roundTrip("PING\r\n", 1), "-BUSY ")
		})
	}
	kill := func() {
		t.Helper()
		if err := e.direct.FunctionKill(bg).Err(); err != nil {
			t.Fatalf("FUNCTION KILL: %v", err)
		}
	}

	// Directly.
	f := dialRaw(t, e.redis.Addr())
	if _, err := f.c.Write([]byte("FCALL spin 0\r\n")); err != nil {
		t.Fatal(err)
	}
	awaitBusy()
	other := dialRaw(t, e.redis.Addr())
	busy := other.roundTrip("GET nocache:k\r\n", 1)
	if !strings.HasPrefix(busy, "-BUSY ") {
		t.Fatalf("GET on Redis while a function runs: %q", busy)
	}
	for _, req := range []string{"PING\r\n", "BLPOP q 1\r\n"} {
		if got := other.roundTrip(req, 1); got != busy {
			t.Fatalf("%q on Redis while a function runs: %q, want %q", req, got, busy)
		}
	}
	kill()
	killed := f.roundTrip("", 1)
	if !strings.HasPrefix(killed, "-ERR Script killed by user") {
		t.Fatalf("FCALL killed, directly: %q", killed)
	}

	// Through the proxy. A client's commands share the upstream connection
	// its id picks (hint), one of two per database by default: the clients
	// after the FCALL's take the other one, then the FCALL's again. Each
	// reads once first, so that its connection is up before Redis is busy.
	clients := make([]*rawConn, 3)
	ids := make([]int64, 3)
	for i := range clients {
		clients[i] = dialRaw(t, e.addr)
		got := clients[i].roundTrip("CLIENT ID\r\nGET nocache:warm\r\n", 2)
		id, err := strconv.ParseInt(strings.TrimPrefix(strings.SplitN(got, "\r\n", 2)[0], ":"), 10, 64)
		if err != nil {
			t.Fatalf("CLIENT ID, GET = %q", got)
		}
		ids[i] = id
	}
	if ids[1]%2 == ids[0]%2 || ids[2]%2 != ids[0]%2 {
		t.Fatalf("client ids %v do not alternate between the two shared connections", ids)
	}
	f, other, same := clients[0], clients[1], clients[2]
	if _, err := f.c.Write([]byte("FCALL spin 0\r\n")); err != nil {
		t.Fatal(err)
	}
	awaitBusy()
	if got := other.roundTrip("GET nocache:k\r\n", 1); got != busy {
		t.Errorf("GET through the proxy on a free upstream connection: %q, want %q", got, busy)
	}
	fresh := dialRaw(t, e.addr)
	if got := fresh.roundTrip("PING\r\n", 1); got != "+PONG\r\n" {
		t.Errorf("PING through the proxy, which answers it itself: %q", got)
	}
	t.Run("new upstream connection", func(t *testing.T) {
		if got := fresh.roundTrip("BLPOP q 1\r\n", 1); got != busy {
			t.Errorf("BLPOP through the proxy: %q, want %q", got, busy)
		}
	})
	t.Run("upstream connection the function would have held", func(t *testing.T) {
		if got := replyWithin(same, "GET nocache:k\r\n", time.Second); got != busy {
			t.Errorf("GET through the proxy on the FCALL's upstream connection: %q, want %q", got, busy)
		}
	})
	kill()
	if got := f.roundTrip("", 1); got != killed {
		t.Errorf("FCALL killed, through the proxy: %q, directly %q", got, killed)
	}
}

// replyWithin sends req and returns the first whole reply that arrives
// within d, or "" when none does.
func replyWithin(r *rawConn, req string, d time.Duration) string {
	r.t.Helper()
	if _, err := r.c.Write([]byte(req)); err != nil {
		r.t.Fatal(err)
	}
	_ = r.c.SetReadDeadline(time.Now().Add(d))
	var buf []byte
	tmp := make([]byte, 4096)
	for {
		if n, err := resp.ReplyLen(buf); err == nil && n > 0 {
			return string(buf[:n])
		}
		n, err := r.c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			return ""
		}
	}
}
