package proxy

import (
	"strings"
	"testing"
	"time"
)

// TestBlockedXReadGroupLosesItsStream: an XREADGROUP blocked on a stream that
// FLUSHDB or FLUSHALL empties, or that DEL or SET replaces, gets Redis's
// -UNBLOCKED error through the proxy as directly, whether the change comes
// through the proxy or straight to Redis; the connection serves on after it.
//
// The change must come once Redis has the client blocked: a change that gets
// there first makes XREADGROUP fail at once (NOGROUP, or WRONGTYPE against a
// string), directly as through the proxy. Through the proxy the blocking
// command first takes a dedicated connection, dialled the first time, so a
// change sent by another client right after it easily overtakes it.
func TestBlockedXReadGroupLosesItsStream(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	blocked := func() bool {
		for _, line := range strings.Split(e.direct.ClientList(bg).Val(), "\n") {
			if strings.Contains(line, " cmd=xreadgroup ") && strings.Contains(line, " flags=b ") {
				return true
			}
		}
		return false
	}
	// run blocks an XREADGROUP sent to addr, makes the change through
	// changeAddr, and returns what the blocked client got.
	run := func(addr, changeAddr string, change string, replies int) string {
		t.Helper()
		if err := e.direct.Del(bg, "s").Err(); err != nil {
			t.Fatal(err)
		}
		if err := e.direct.XGroupCreateMkStream(bg, "s", "g", "$").Err(); err != nil {
			t.Fatal(err)
		}
		b := dialRaw(t, addr)
		if _, err := b.c.Write([]byte("XREADGROUP GROUP g c BLOCK 0 STREAMS s >\r\n")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "XREADGROUP blocked on Redis", blocked)
		dialRaw(t, changeAddr).roundTrip(crlf(change), replies)
		got := b.roundTrip("", 1)
		if pong := b.roundTrip("PING\r\n", 1); pong != "+PONG\r\n" {
			t.Errorf("%s after %q: PING = %q", addr, change, pong)
		}
		b.c.Close()
		eventually(t, 5*time.Second, "no XREADGROUP blocked on Redis", func() bool { return !blocked() })
		return got
	}
	const unblocked = "-UNBLOCKED the stream key no longer exists\r\n"
	for _, tc := range []struct {
		change  string
		replies int
		want    string
	}{
		{"FLUSHDB\n", 1, unblocked},
		{"FLUSHALL\n", 1, unblocked},
		{"DEL s\n", 1, unblocked},
		{"DEL s\nSET s x\n", 2, unblocked},
		{"SET s x\n", 1, unblocked},
		{"XGROUP DESTROY s g\n", 1, "-NOGROUP the consumer group this client was blocked on no longer exists\r\n"},
	} {
		direct := run(e.redis.Addr(), e.redis.Addr(), tc.change, tc.replies)
		if direct != tc.want {
			t.Errorf("%q directly: %q, want %q", tc.change, direct, tc.want)
		}
		for _, via := range []struct{ name, addr string }{{"the proxy", e.addr}, {"Redis", e.redis.Addr()}} {
			if got := run(e.addr, via.addr, tc.change, tc.replies); got != direct {
				t.Errorf("%q made through %s: the blocked client of the proxy got %q, directly %q", tc.change, via.name, got, direct)
			}
		}
	}
}
