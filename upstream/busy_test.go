package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/resp"
)

const loopScript = "while true do end"

// roundTrip sends one command to addr on a connection of its own (in
// database 0, RESP2) and returns the reply, within 30 seconds.
func roundTrip(addr string, args ...string) (string, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := nc.Write(cmd(args...)); err != nil {
		return "", err
	}
	var sc resp.ReplyScanner
	buf := make([]byte, 0, 4096)
	for {
		m, err := nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if n, err := sc.Scan(buf); err != nil || n > 0 {
			return string(buf[:n]), err
		}
		if err != nil {
			return "", err
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf))
		}
	}
}

// sendAsync runs roundTrip in a goroutine; the channel gets the reply, or
// what went wrong.
func sendAsync(addr string, args ...string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		reply, err := roundTrip(addr, args...)
		if err != nil {
			reply = fmt.Sprintf("%s: %v", args[0], err)
		}
		ch <- reply
	}()
	return ch
}

func call(t *testing.T, addr string, args ...string) string {
	t.Helper()
	reply, err := roundTrip(addr, args...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return reply
}

// busyAfter100ms makes Redis refuse commands -BUSY once a script has run for
// 100 ms instead of 5 s.
func busyAfter100ms(t *testing.T, r *redistest.Server) {
	t.Helper()
	if got := call(t, r.Addr(), "CONFIG", "SET", "busy-reply-threshold", "100"); got != "+OK\r\n" {
		t.Fatalf("CONFIG SET busy-reply-threshold: %q", got)
	}
}

func waitBusy(t *testing.T, r *redistest.Server) {
	t.Helper()
	waitFor(t, "Redis to be busy", func() bool { return call(t, r.Addr(), "PING") == busyLine })
}

func receive(t *testing.T, what string, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s", what)
		return ""
	}
}

// TestBusyRedis readies connections while Redis is busy running a script.
// Those to database 0 need no SELECT and carry their batches, which Redis
// answers -BUSY itself; those to another database cannot be readied, and
// their batches get Redis's -BUSY as a *ReplyError instead of an opaque
// failure. Once the script is killed, that database serves again.
func TestBusyRedis(t *testing.T) {
	t.Parallel()
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			t.Parallel()
			if proto == 3 {
			}
			r := redistest.Start(t, redistest.Options{})
			busyAfter100ms(t, r)
			script := sendAsync(r.Addr(), "EVAL", loopScript, "0")
			waitBusy(t, r)
			p, err := New(Config{Addr: r.Addr(), Conns: 1, Protocol: proto})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)

			var b Batch
			b.Add(cmd("SET", "k", "0"))
			b.Add(cmd("GET", "k"))
			p.Do(bg, 0, 0, &b)
			expectReplies(t, "db 0", &b, busyLine, busyLine)
			c, err := p.Dedicated(bg, 0)
			if err != nil {
				t.Fatalf("Dedicated(0): %v", err)
			}
			b.Reset()
			b.Add(cmd("PING"))
			c.Do(&b)
			expectReplies(t, "dedicated db 0", &b, busyLine)
			c.Close()

			b.Reset()
			b.Add(cmd("SET", "k", "3"))
			b.Add(cmd("GET", "k"))
			p.Do(bg, 3, 0, &b)
			var re *ReplyError
			if !errors.As(b.Err(), &re) || string(re.Line) != busyLine || b.Answered() != 0 {
				t.Fatalf("db 3: answered %d, err %v; want a *ReplyError with %q", b.Answered(), b.Err(), busyLine)
			}
			if !strings.Contains(b.Err().Error(), "SELECT 3: -BUSY Redis is busy") {
				t.Errorf("db 3: err %q does not say what happened", b.Err())
			}
			if _, err := p.Dedicated(bg, 3); !errors.As(err, &re) || string(re.Line) != busyLine {
				t.Fatalf("Dedicated(3): %v; want a *ReplyError", err)
			}
			if _, err := p.Raw(bg, 3); !errors.As(err, &re) || string(re.Line) != busyLine {
				t.Fatalf("Raw(3): %v; want a *ReplyError", err)
			}

			if got := call(t, r.Addr(), "SCRIPT", "KILL"); got != "+OK\r\n" {
				t.Fatalf("SCRIPT KILL = %q", got)
			}
			if got := receive(t, "EVAL reply", script); !strings.HasPrefix(got, "-ERR Script killed by user with SCRIPT KILL") {
				t.Fatalf("EVAL = %q", got)
			}

			// The refused connection was not kept: db 3 dials again.
			b.Reset()
			b.Add(cmd("SET", "k", "3"))
			b.Add(cmd("GET", "k"))
			p.Do(bg, 3, 0, &b)
			expectReplies(t, "db 3 after the kill", &b, "+OK\r\n", "$1\r\n3\r\n")
			// db 0's connection, readied while busy, carries on in db 0.
			b.Reset()
			b.Add(cmd("GET", "k"))
			p.Do(bg, 0, 0, &b)
			expectReplies(t, "db 0 after the kill", &b, nullReply(proto))
		})
	}
}

func nullReply(proto int) string {
	if proto == 3 {
		return "_\r\n"
	}
	return "$-1\r\n"
}

// TestUrgentKillsScriptHoldingSharedConnection runs a script through the
// pool's only shared connection and queues a GET behind it, which Redis does
// not read while the script runs. SCRIPT KILL must not wait there: Urgent
// gets Redis's +OK at once, then the script's call fails with Redis's error
// and the GET is answered.
func TestUrgentKillsScriptHoldingSharedConnection(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	busyAfter100ms(t, r)
	p := newPool(t, r, 1)
	var script, behind, kill Batch
	script.Add(cmd("EVAL", loopScript, "0"))
	scriptDone := make(chan struct{})
	go func() {
		defer close(scriptDone)
		p.Do(bg, 0, 0, &script)
	}()
	waitBusy(t, r)
	c := conn(t, p, 0)
	behind.Add(cmd("GET", "k"))
	behindDone := doAsync(c, &behind)
	waitFor(t, "GET to wait behind the script", func() bool { return parked(c) == 1 })

	start := time.Now()
	kill.Add(cmd("SCRIPT", "KILL"))
	p.Urgent(bg, &kill)
	if took := time.Since(start); took > time.Second {
		t.Errorf("SCRIPT KILL took %v", took)
	}
	expectReplies(t, "SCRIPT KILL", &kill, "+OK\r\n")
	waitClosed(t, "EVAL", scriptDone)
	if script.Err() != nil || !strings.HasPrefix(string(script.Reply(0)), "-ERR Script killed by user with SCRIPT KILL") {
		t.Fatalf("EVAL = %q, %v", script.Reply(0), script.Err())
	}
	waitClosed(t, "GET", behindDone)
	expectReplies(t, "GET", &behind, "$-1\r\n")
}

// TestUrgentShutdownNoSave: a script that has written cannot be killed, only
// the server, and SHUTDOWN NOSAVE gets through while the script holds the
// shared connection. Redis exits without a reply.
func TestUrgentShutdownNoSave(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	busyAfter100ms(t, r)
	p := newPool(t, r, 1)
	var script, b Batch
	script.Add(cmd("EVAL", "redis.call('SET', 'x', '1') "+loopScript, "0"))
	scriptDone := make(chan struct{})
	go func() {
		defer close(scriptDone)
		p.Do(bg, 0, 0, &script)
	}()
	waitBusy(t, r)
	b.Add(cmd("SCRIPT", "KILL"))
	p.Urgent(bg, &b)
	if b.Err() != nil || !strings.HasPrefix(string(b.Reply(0)), "-UNKILLABLE ") {
		t.Fatalf("SCRIPT KILL = %q, %v", b.Reply(0), b.Err())
	}
	b.Reset()
	b.Add(cmd("SHUTDOWN", "NOSAVE"))
	p.Urgent(bg, &b)
	if b.Err() == nil || b.Answered() != 0 {
		t.Fatalf("SHUTDOWN NOSAVE: answered %d, err %v; want the connection closed", b.Answered(), b.Err())
	}
	waitClosed(t, "EVAL", scriptDone)
	if script.Err() == nil || script.Answered() != 0 {
		t.Fatalf("EVAL: answered %d, err %v; want its connection closed", script.Answered(), script.Err())
	}
}

// TestUrgentBoundedByContext: Urgent gives up when its context ends, and
// after Close it sends nothing.
func TestUrgentBoundedByContext(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p, err := New(Config{Addr: r.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	b.Add(cmd("BLPOP", "never", "0"))
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	p.Urgent(ctx, &b)
	if !errors.Is(b.Err(), context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("after %v: err %v; want the context's", time.Since(start), b.Err())
	}
	waitFor(t, "the connection to close", func() bool { return blocked(t, r.Client(0)) == 0 })
	p.Close()
	b.Reset()
	b.Add(cmd("PING"))
	p.Urgent(bg, &b)
	if !errors.Is(b.Err(), ErrClosed) {
		t.Fatalf("after Close: %v", b.Err())
	}
}

// TestLoadingRedis readies a connection to database 3 while Redis loads its
// dataset, slowed down to seconds. Redis serves SELECT meanwhile, so the
// connection is kept, and the batch gets Redis's own -LOADING replies.
func TestLoadingRedis(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{Args: []string{"--enable-debug-command", "yes"}})
	for _, c := range [][]string{
		{"DEBUG", "POPULATE", "300", "k", "100"},
		{"CONFIG", "SET", "key-load-delay", "10000"}, // µs per key: 3 s in all
		{"CONFIG", "SET", "loading-process-events-interval-bytes", "1024"},
	} {
		if got := call(t, r.Addr(), c...); got != "+OK\r\n" {
			t.Fatalf("%v: %q", c, got)
		}
	}
	reload := sendAsync(r.Addr(), "DEBUG", "RELOAD")
	waitFor(t, "Redis to load", func() bool {
		return strings.Contains(call(t, r.Addr(), "INFO", "persistence"), "\r\nloading:1\r\n")
	})
	p := newPool(t, r, 1)
	var b Batch
	b.Add(cmd("GET", "k:1"))
	p.Do(bg, 3, 0, &b)
	expectReplies(t, "db 3", &b, loadingLine)
	if got := receive(t, "DEBUG RELOAD reply", reload); got != "+OK\r\n" {
		t.Fatalf("DEBUG RELOAD = %q", got)
	}
	b.Reset()
	b.Add(cmd("GET", "k:1"))
	p.Do(bg, 3, 0, &b)
	expectReplies(t, "db 3 once loaded", &b, "$-1\r\n")
}
