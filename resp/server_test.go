package resp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/tidwall/redcon"
)

// testServer is a redcon server behind Guard that answers PING, ECHO and AUTH
// like Redis and echoes any other command's arguments back as an array.
type testServer struct {
	addr string
	stop func() // closes the server and waits for its connections to end

	mu   sync.Mutex
	errs []error // why each connection closed
}

type connState struct{ authed bool }

// stateConn carries a connection's state from Accept to the handler.
type stateConn struct {
	net.Conn
	st *connState
}

type guardListener struct {
	net.Listener
	lim         Limits
	requireAuth bool
}

func (l *guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	st := &connState{authed: !l.requireAuth}
	return &stateConn{Conn: Guard(c, l.lim, func() bool { return st.authed }), st: st}, nil
}

func startServer(t *testing.T, lim Limits, requireAuth bool) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String()}
	var conns sync.WaitGroup
	srv := redcon.NewServer("", ts.handle,
		func(redcon.Conn) bool { conns.Add(1); return true },
		func(_ redcon.Conn, err error) {
			ts.mu.Lock()
			ts.errs = append(ts.errs, err)
			ts.mu.Unlock()
			conns.Done()
		})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(&guardListener{Listener: ln, lim: lim, requireAuth: requireAuth}) }()
	ts.stop = sync.OnceFunc(func() {
		// Close fails until Serve has registered the listener.
		for srv.Close() != nil {
			time.Sleep(time.Millisecond)
		}
		<-served
		conns.Wait()
	})
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) handle(c redcon.Conn, cmd redcon.Command) {
	st := c.NetConn().(*stateConn).st
	switch strings.ToUpper(string(cmd.Args[0])) {
	case "AUTH":
		st.authed = true
		c.WriteString("OK")
	case "PING":
		if len(cmd.Args) == 2 {
			c.WriteBulk(cmd.Args[1])
			return
		}
		c.WriteString("PONG")
	case "ECHO":
		if len(cmd.Args) != 2 {
			c.WriteError("ERR wrong number of arguments for 'echo' command")
			return
		}
		c.WriteBulk(cmd.Args[1])
	default:
		c.WriteArray(len(cmd.Args))
		for _, a := range cmd.Args {
			c.WriteBulk(a)
		}
	}
}

// closeErrs stops the server and returns why each connection closed.
func (ts *testServer) closeErrs() []error {
	ts.stop()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]error(nil), ts.errs...)
}

const endMarker = "$3\r\nEND\r\n"

// exchange sends in on a new connection and returns everything the server
// answers: until it closes the connection if closes, else until the reply to
// an ECHO END sent after in.
func exchange(t *testing.T, addr, in string, closes bool) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if !closes {
		in += mbulk("ECHO", "END")
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, in)
		wrote <- err
	}()
	var out []byte
	if closes {
		out, err = io.ReadAll(c)
	} else {
		buf := make([]byte, 64<<10)
		for err == nil && !bytes.HasSuffix(out, []byte(endMarker)) {
			var n int
			n, err = c.Read(buf)
			out = append(out, buf[:n]...)
		}
	}
	if err != nil {
		t.Fatalf("reading the reply to %.80q after %.200q: %v", in, out, err)
	}
	if werr := <-wrote; werr != nil && !closes {
		t.Fatalf("writing %.80q: %v", in, werr)
	}
	if !closes {
		out = out[:len(out)-len(endMarker)]
	}
	return string(out)
}

// TestGuardServer drives a real redcon server through the guard over TCP.
func TestGuardServer(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Limits{MaxBulkLen: 1 << 20, MaxQueryBuffer: 1 << 20}, false)

	// The killer frame is refused and the server stays up for the others.
	got := exchange(t, ts.addr, mbulk("PING")+"ECHO a\r\n"+mbulk("GET", "k")+killer, true)
	want := "+PONG\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n-ERR Protocol error: invalid bulk length\r\n"
	if got != want {
		t.Fatalf("pipeline before the killer frame: got %q, want %q", got, want)
	}
	if got := exchange(t, ts.addr, mbulk("PING"), false); got != "+PONG\r\n" {
		t.Fatalf("another client after the killer frame: got %q", got)
	}

	// A huge count is refused without the server spinning on it.
	if got := exchange(t, ts.addr, "*2147483647\r\n", true); got != "-ERR Protocol error: invalid multibulk length\r\n" {
		t.Fatalf("huge count: got %q", got)
	}

	// A command that cannot fit the query buffer closes the connection
	// without a reply, as in Redis.
	if got := exchange(t, ts.addr, mbulk("PING")+"*2\r\n$4\r\nECHO\r\n$1048576\r\n", true); got != "+PONG\r\n" {
		t.Fatalf("command over the query buffer limit: got %q", got)
	}

	// Large arguments and commands with many arguments get through whole.
	big := strings.Repeat("v", 1<<20-64)
	if got := exchange(t, ts.addr, mbulk("ECHO", big), false); got != "$"+"1048512\r\n"+big+"\r\n" {
		t.Fatalf("ECHO of a 1 MiB value: got %d bytes", len(got))
	}
	args := make([]string, 50000)
	for i := range args {
		args[i] = "k"
	}
	if got := exchange(t, ts.addr, mbulk(args...), false); got != mbulk(args...) {
		t.Fatalf("50000 arguments: got %d bytes", len(got))
	}

	var refusals int
	errs := ts.closeErrs()
	for _, err := range errs {
		if errors.Is(err, ErrRefused) {
			refusals++
		}
	}
	if refusals != 3 {
		t.Fatalf("connections closed with %v; want 3 refusals", errs)
	}
}

// TestGuardMatchesRedis sends the same bytes to Redis and to a guarded redcon
// server and expects the same bytes back.
func TestGuardMatchesRedis(t *testing.T) {
	t.Parallel()
	open := redistest.Start(t, redistest.Options{})
	// redistest checks a new server with an unauthenticated PING, so the
	// password is set afterwards.
	locked := redistest.Start(t, redistest.Options{})
	if err := locked.Client(0).ConfigSet(context.Background(), "requirepass", "pw").Err(); err != nil {
		t.Fatal(err)
	}
	ours := startServer(t, Limits{}, false)
	oursLocked := startServer(t, Limits{}, true)
	for _, tc := range []struct {
		in     string
		auth   bool
		closes bool
	}{
		{in: killer, closes: true},
		{in: mbulk("PING") + "ECHO a\r\n" + killer, closes: true},
		{in: "*1\r\n$-1\r\n", closes: true},
		{in: "*+1\r\n", closes: true},
		{in: "*01\r\n", closes: true},
		{in: "*-0\r\n", closes: true},
		{in: "*\r\n", closes: true},
		{in: "*1\n$4\r\nPING\r\n", closes: true},
		{in: "*2147483648\r\n", closes: true},
		{in: "*1\r\n$+4\r\n", closes: true},
		{in: "*1\r\n$04\r\nPING\r\n", closes: true},
		{in: "*1\r\n$536870913\r\n", closes: true},
		{in: "*1\r\n:1\r\n", closes: true},
		{in: "*1\r\n\r\n", closes: true},
		{in: "*1\r\n\n$4\r\n", closes: true},
		{in: "*1\r\n\xff3\r\n", closes: true},
		{in: "ECHO \"a\"b\r\n", closes: true},
		{in: "ECHO 'a\r\n", closes: true},
		{in: "ECHO \"abc\\\"\r\n", closes: true},
		{in: strings.Repeat("x", inlineMax+1), closes: true},
		{in: "*" + strings.Repeat("1", inlineMax), closes: true},
		{in: "*1\r\n$" + strings.Repeat("1", inlineMax), closes: true},
		{in: "*1\r\nX" + strings.Repeat("1", inlineMax+100), closes: true},
		{in: "*1\rX$4\r_PING\r\n*1\r\n$4\r\nPINGxy"},
		{in: "*0\r\n*-1\r\n*-5\r\n\r\n  \t \r\nPING\r\n"},
		{in: "ECHO \"a\\x41\\tb\\q\\\"\"\r\nECHO 'c\\'d\\n'\r\nECHO a\"b\"\r\nECHO \"\"\r\n"},
		{in: "ECHO \x0bx\x0b\r\nECHO \xa0x\x85\r\nECHO\t\"a\\x4\"\r\nPING\nPING\rPING\r\n"},
		{in: "*11\r\n", auth: true, closes: true},
		{in: "*1\r\n$16385\r\n", auth: true, closes: true},
		{in: "*2\r\n$4\r\nECHO\r\n$16385\r\n", auth: true, closes: true},
		{in: mbulk("AUTH", "pw") + mbulk("ECHO", strings.Repeat("a", 20000)), auth: true},
	} {
		redisAddr, oursAddr := open.Addr(), ours.addr
		if tc.auth {
			redisAddr, oursAddr = locked.Addr(), oursLocked.addr
		}
		want := exchange(t, redisAddr, tc.in, tc.closes)
		if got := exchange(t, oursAddr, tc.in, tc.closes); got != want {
			t.Errorf("%.80q:\n guard %.200q\n redis %.200q", tc.in, got, want)
		}
	}
}
