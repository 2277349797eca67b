package proxy

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// TestErrorsMatchRedis sends the same bytes to Redis and to the proxy and
// expects the same replies: unknown commands, wrong arity, inline commands,
// binary keys.
func TestErrorsMatchRedis(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	// A Redis of its own, so that neither side sees the other's writes.
	reference := redistest.Start(t, redistest.Options{})
	cases := []struct {
		name string
		req  string
		n    int
	}{
		{"unknown command", "*2\r\n$7\r\nNOSUCHC\r\n$1\r\na\r\n", 1},
		{"get arity", "*1\r\n$3\r\nGET\r\n", 1},
		{"get too many", "*3\r\n$3\r\nGET\r\n$1\r\na\r\n$1\r\nb\r\n", 1},
		{"set arity", "*2\r\n$3\r\nSET\r\n$1\r\na\r\n", 1},
		{"ping arity", "*3\r\n$4\r\nPING\r\n$1\r\na\r\n$1\r\nb\r\n", 1},
		{"echo", "*2\r\n$4\r\nECHO\r\n$3\r\na\nb\r\n", 1},
		{"select bad", "*2\r\n$6\r\nSELECT\r\n$1\r\nx\r\n", 1},
		{"select range", "*2\r\n$6\r\nSELECT\r\n$3\r\n999\r\n", 1},
		{"inline", "SET inl \"a b\"\r\nGET inl\r\nPING\r\n", 3},
		{"binary key", "*3\r\n$3\r\nSET\r\n$5\r\nb\x00\r\n\xff\r\n$0\r\n\r\n*2\r\n$3\r\nGET\r\n$5\r\nb\x00\r\n\xff\r\n*2\r\n$3\r\nGET\r\n$5\r\nb\x00\r\n\xff\r\n", 3},
		{"wrongtype", "*4\r\n$4\r\nHSET\r\n$2\r\nwh\r\n$1\r\nf\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$2\r\nwh\r\n*2\r\n$4\r\nMGET\r\n$2\r\nwh\r\n*2\r\n$3\r\nGET\r\n$2\r\nwh\r\n", 4},
		{"hello 3", "*2\r\n$5\r\nHELLO\r\n$1\r\n4\r\n", 1},
		{"client getname", "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$1\r\nn\r\n*2\r\n$6\r\nCLIENT\r\n$7\r\nGETNAME\r\n", 2},
		{"exec without multi", "*1\r\n$4\r\nEXEC\r\n", 1},
		{"transaction", "*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$2\r\ntx\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$2\r\ntx\r\n*1\r\n$4\r\nEXEC\r\n*2\r\n$3\r\nGET\r\n$2\r\ntx\r\n", 5},
	}
	for _, tc := range cases {
		direct := dialRaw(t, reference.Addr()).roundTrip(tc.req, tc.n)
		proxied := dialRaw(t, e.addr).roundTrip(tc.req, tc.n)
		if direct != proxied {
			t.Errorf("%s:\n redis %q\n proxy %q", tc.name, direct, proxied)
		}
	}
}

// TestHostileFramesAreStopped sends frames that would crash, spin or bloat
// redcon's parser. Each gets Redis's protocol error and the connection closes;
// the proxy keeps serving everyone else, and commands pipelined before the bad
// frame are answered first.
func TestHostileFramesAreStopped(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	bystander := e.client(0)
	bystander.Set(bg, "safe", "yes", 0)
	cases := []struct{ name, req, want string }{
		{"overflowing bulk length", "*1\r\n$9223372036854775807\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"bulk over proto-max-bulk-len", "*2\r\n$3\r\nGET\r\n$536870913\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"absurd multibulk count", "*9223372036854775807\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"negative bulk", "*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"not a bulk", "*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"},
		{"after a good command", "*1\r\n$4\r\nPING\r\n*1\r\n$99999999999999999999\r\n", "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"},
	}
	for _, tc := range cases {
		r := dialRaw(t, e.addr)
		got := r.roundTrip(tc.req, strings.Count(tc.want, "\r\n"))
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
		// The connection is closed after a protocol error, as Redis does.
		_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := r.c.Read(make([]byte, 1)); err == nil {
			t.Errorf("%s: connection still open (read %d bytes)", tc.name, n)
		}
		if v, err := bystander.Get(bg, "safe").Result(); err != nil || v != "yes" {
			t.Fatalf("%s: another client's GET = %q, %v", tc.name, v, err)
		}
	}
}

// FuzzProxyInput throws arbitrary bytes at a running proxy: whatever they are,
// the proxy must answer another client afterwards.
func FuzzProxyInput(f *testing.F) {
	for _, s := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"*1\r\n$9223372036854775807\r\n",
		"*2147483648\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
		"PING\r\nGET k\r\n",
		"\"unbalanced\r\n",
		"*2\r\n$4\r\nMGET\r\n$1\r\nk\r\n",
		"*1\r\n$5\r\nMULTI\r\n*1\r\n$4\r\nEXEC\r\n",
		"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
	} {
		f.Add([]byte(s))
	}
	e := startEnv(f, envOptions{})
	e.waitSubscribed()
	check := e.client(0)
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(in)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		if err := check.Ping(bg).Err(); err != nil {
			t.Fatalf("proxy stopped answering after %q: %v", in, err)
		}
	})
}

func TestMaxClients(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{maxClients: 2})
	a, b := dialRaw(t, e.addr), dialRaw(t, e.addr)
	for _, r := range []*rawConn{a, b} {
		if got := r.roundTrip("PING\r\n", 1); got != "+PONG\r\n" {
			t.Fatalf("PING = %q", got)
		}
	}
	if got := dialRaw(t, e.addr).roundTrip("PING\r\n", 1); got != "-ERR max number of clients reached\r\n" {
		t.Fatalf("third client got %q", got)
	}
	a.c.Close()
	eventually(t, 5*time.Second, "a slot frees when a client leaves", func() bool {
		return dialRaw(t, e.addr).roundTrip("PING\r\n", 1) == "+PONG\r\n"
	})
}
