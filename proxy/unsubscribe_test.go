package proxy

import (
	"testing"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// TestUnsubscribeWithoutSubscriptions: the UNSUBSCRIBE family from a client
// that is not subscribed gets Redis's replies, one per channel named (one with
// a nil channel when none is), alone or pipelined among other commands, and
// leaves the client's later replies, and other clients', in step.
func TestUnsubscribeWithoutSubscriptions(t *testing.T) {
	t.Parallel()
	ce := startCompat(t, envOptions{}, redistest.Options{})
	s := scripts(t, map[string]string{
		"never subscribed": `
PING
UNSUBSCRIBE
UNSUBSCRIBE {p}a {p}b {p}c =3
SET {p}k v
PUNSUBSCRIBE
PUNSUBSCRIBE {p}p* {p}q =2
GET {p}k
SUNSUBSCRIBE
SUNSUBSCRIBE {p}s1 {p}s2 =2
UNSUBSCRIBE "" "\x00\r\n" =2
raw "UNSUBSCRIBE {p}x {p}y\r\n" =2
unsubscribe {p}lower
INCR {p}n
GET {p}k
`,
		"under watch": `
WATCH {p}k
UNSUBSCRIBE {p}a {p}b =2
SUNSUBSCRIBE
SET {p}k w
UNWATCH
GET {p}k
`,
		"inside multi, one channel": `
MULTI
UNSUBSCRIBE {p}a
PUNSUBSCRIBE
SUNSUBSCRIBE {p}s
EXEC
PING
`,
		"after a subscription": `
@1 SUBSCRIBE {p}a
@1 UNSUBSCRIBE
@1 UNSUBSCRIBE {p}a {p}b =2
@1 GET {p}k
@1 PUNSUBSCRIBE {p}x {p}y =2
@1 SUNSUBSCRIBE
@1 PING
`,
	})
	ce.check(t, s)
	ce.checkConcurrently(t, s, 4)
}

// TestUnsubscribeSeveralInsideMultiIsRefused: Redis 7.0 answers an
// UNSUBSCRIBE of n channels inside MULTI with n replies in an EXEC array that
// counts one, so EXEC's reply runs into the next command's. Through the proxy
// the extra replies would stay on a dedicated connection that another client
// takes next: the proxy refuses it, and the transaction aborts as after any
// error while queueing.
func TestUnsubscribeSeveralInsideMultiIsRefused(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	got := dialRaw(t, e.addr).roundTrip(crlf("MULTI\nPUNSUBSCRIBE a b\nEXEC\nPING\n"), 4)
	want := crlf("+OK\n-ERR cacheproxy: PUNSUBSCRIBE inside MULTI is not supported through the proxy\n" +
		"-EXECABORT Transaction discarded because of previous errors.\n+PONG\n")
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if got := dialRaw(t, e.addr).roundTrip(crlf("MULTI\nPING x\nEXEC\n"), 3); got != crlf("+OK\n+QUEUED\n*1\n$1\nx\n") {
		t.Fatalf("the next client's transaction: %q", got)
	}
}
