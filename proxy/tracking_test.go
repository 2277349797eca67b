package proxy

import (
	"fmt"
	"strings"
	"testing"
)

const (
	invalidateK   = ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
	invalidateAll = ">2\r\n$10\r\ninvalidate\r\n_\r\n"
)

// trackingConn is a raw RESP3 connection to the proxy with tracking on.
func trackingConn(t *testing.T, e *env, options string) *rawConn {
	t.Helper()
	r := dialRaw(t, e.addr)
	r.roundTrip("HELLO 3\r\n", 1)
	if got := r.roundTrip("CLIENT TRACKING on"+options+"\r\n", 1); got != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING on%s: %q", options, got)
	}
	return r
}

// TestTrackingInvalidatesOnce: a key a tracking client read, then written
// directly on Redis, yields exactly one invalidation push; a second write,
// with no read between, yields none, as on Redis.
func TestTrackingInvalidatesOnce(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	r := trackingConn(t, e, "")
	if got := r.roundTrip("GET k\r\n", 1); got != "_\r\n" {
		t.Fatalf("GET k: %q", got)
	}
	if err := e.direct.Set(bg, "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := r.roundTrip("", 1); got != invalidateK {
		t.Fatalf("after a direct write: %q, want one invalidation", got)
	}
	events := e.counter("cacheproxy_invalidations_total", map[string]string{"source": "keyspace"})
	if err := e.direct.Set(bg, "k", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	e.waitKeyspaceEvents(events + 1)
	// The PING's reply must be the next frame: no second invalidation came.
	if got := r.roundTrip("PING\r\n", 1); got != "+PONG\r\n" {
		t.Fatalf("after a second write without a read: %q, want only +PONG", got)
	}
	// Read again (from the L1 this time, or Redis), and a write through the
	// proxy by another client invalidates it.
	if got := r.roundTrip("GET k\r\n", 1); got != "$2\r\nv2\r\n" {
		t.Fatalf("GET k: %q", got)
	}
	if err := e.client(0).Set(bg, "k", "v3", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := r.roundTrip("", 1); got != invalidateK {
		t.Fatalf("after a write through the proxy: %q", got)
	}
	// FLUSHDB tells every tracking client to drop everything.
	if err := e.client(0).FlushDB(bg).Err(); err != nil {
		t.Fatal(err)
	}
	if got := r.roundTrip("", 1); got != invalidateAll {
		t.Fatalf("after FLUSHDB: %q", got)
	}
}

// TestTrackingModes covers the options: NOLOOP spares the client its own
// writes, OPTIN tracks only after CLIENT CACHING yes, BCAST follows
// prefixes without reads, and a RESP2 client's invalidations go as messages
// to the REDIRECT connection subscribed to __redis__:invalidate.
func TestTrackingModes(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	other := e.client(0)

	t.Run("NOLOOP", func(t *testing.T) {
		r := trackingConn(t, e, " NOLOOP")
		r.roundTrip("GET k\r\n", 1)
		if got := r.roundTrip("SET k mine\r\n", 1); got != "+OK\r\n" {
			t.Fatalf("SET: %q", got)
		}
		if got := r.roundTrip("PING\r\n", 1); got != "+PONG\r\n" {
			t.Fatalf("own write under NOLOOP: %q", got)
		}
	})
	t.Run("OPTIN", func(t *testing.T) {
		r := trackingConn(t, e, " OPTIN")
		r.roundTrip("GET a\r\n", 1) // not tracked: no CACHING yes before it
		if got := r.roundTrip("CLIENT CACHING yes\r\nGET b\r\n", 2); got != "+OK\r\n_\r\n" {
			t.Fatalf("CACHING yes, GET b: %q", got)
		}
		if err := other.MSet(bg, "a", "1", "b", "1").Err(); err != nil {
			t.Fatal(err)
		}
		if got := r.roundTrip("", 1); got != ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nb\r\n" {
			t.Fatalf("after MSET a b: %q, want b's invalidation alone", got)
		}
		if got := r.roundTrip("CLIENT TRACKINGINFO\r\n", 1); !strings.Contains(got, "optin") {
			t.Fatalf("TRACKINGINFO: %q", got)
		}
	})
	t.Run("BCAST", func(t *testing.T) {
		r := trackingConn(t, e, " BCAST PREFIX user:")
		if err := e.direct.Set(bg, "user:1", "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := e.direct.Set(bg, "other", "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if got := r.roundTrip("", 1); got != ">2\r\n$10\r\ninvalidate\r\n*1\r\n$6\r\nuser:1\r\n" {
			t.Fatalf("BCAST user:: %q", got)
		}
	})
	t.Run("RESP2 REDIRECT", func(t *testing.T) {
		target := dialRaw(t, e.addr)
		id := strings.TrimSuffix(strings.TrimPrefix(target.roundTrip("CLIENT ID\r\n", 1), ":"), "\r\n")
		want := "*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n"
		if got := target.roundTrip("SUBSCRIBE __redis__:invalidate\r\n", 1); got != want {
			t.Fatalf("SUBSCRIBE: %q", got)
		}
		r := dialRaw(t, e.addr)
		if got := r.roundTrip("CLIENT TRACKING on REDIRECT "+id+"\r\nGET rk\r\n", 2); got != "+OK\r\n$-1\r\n" {
			t.Fatalf("TRACKING on REDIRECT %s, GET rk: %q", id, got)
		}
		if got := r.roundTrip("CLIENT GETREDIR\r\n", 1); got != ":"+id+"\r\n" {
			t.Fatalf("GETREDIR: %q", got)
		}
		if err := e.direct.Set(bg, "rk", "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
		want = "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$2\r\nrk\r\n"
		if got := target.roundTrip("", 1); got != want {
			t.Fatalf("the redirect target got %q", got)
		}
	})
}

// TestTrackingCommandsAsRedis compares the replies of the tracking commands,
// errors included, with Redis's own, in both protocols.
func TestTrackingCommandsAsRedis(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	script := []string{
		"CLIENT TRACKINGINFO", "CLIENT GETREDIR",
		"CLIENT CACHING yes",
		"CLIENT TRACKING on OPTIN", "CLIENT TRACKINGINFO", "CLIENT GETREDIR",
		"CLIENT CACHING no", "CLIENT CACHING yes", "CLIENT TRACKINGINFO",
		"CLIENT TRACKING on BCAST", "CLIENT TRACKING on OPTOUT",
		"CLIENT TRACKING off", "CLIENT TRACKINGINFO",
		"CLIENT TRACKING on BCAST PREFIX a PREFIX b", "CLIENT TRACKINGINFO",
		"CLIENT TRACKING on BCAST PREFIX ab",
		"CLIENT TRACKING off",
		"CLIENT TRACKING on PREFIX a", "CLIENT TRACKING on OPTIN OPTOUT",
		"CLIENT TRACKING on BCAST OPTIN", "CLIENT TRACKING on REDIRECT 999999",
		"CLIENT TRACKING on NOSUCHOPTION", "CLIENT TRACKING maybe", "CLIENT TRACKING",
		"CLIENT CACHING", "CLIENT CACHING maybe",
	}
	for _, hello := range []string{"HELLO 2", "HELLO 3"} {
		direct, proxied := dialRaw(t, e.redis.Addr()), dialRaw(t, e.addr)
		direct.roundTrip(hello+"\r\n", 1)
		proxied.roundTrip(hello+"\r\n", 1)
		for _, cmd := range script {
			req := cmd + "\r\n"
			want, got := direct.roundTrip(req, 1), proxied.roundTrip(req, 1)
			if got != want {
				t.Errorf("%s: %s\n proxy %q\n redis %q", hello, cmd, got, want)
			}
		}
	}
}

// TestTrackingTableBounded: past its bound the table forgets keys, telling
// their readers, as Redis does past tracking-table-max-keys.
func TestTrackingTableBounded(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{options: func(o *Options) { o.TrackingMaxKeys = 10 }})
	e.waitSubscribed() // the stream's start tells tracking clients to drop everything
	r := trackingConn(t, e, "")
	var req strings.Builder
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&req, "GET key:%d\r\n", i)
	}
	// Each read past the tenth evicts a key, whose invalidation follows
	// the replies of the batch that read it.
	got := r.roundTrip(req.String(), 30)
	if n := strings.Count(got, "_\r\n"); n != 20 {
		t.Fatalf("%d replies to 20 GETs: %q", n, got)
	}
	if n := strings.Count(got, ">2\r\n$10\r\ninvalidate\r\n"); n != 10 {
		t.Fatalf("%d invalidations for 20 keys read under a bound of 10: %q", n, got)
	}
	info, err := e.client(0).Info(bg, "proxy").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"proxy_tracking_clients:1\r\n", "proxy_tracking_total_keys:10\r\n"} {
		if !strings.Contains(info, want) {
			t.Errorf("INFO proxy lacks %q:\n%s", want, info)
		}
	}
}
