package proxy

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// streamLineRe is a line of a MONITOR stream: the time, the database and
// client, the command.
var streamLineRe = regexp.MustCompile(`^\+\d+\.\d{6} \[\d+ [^\]]+\] ".*"\r\n$`)

// streamConn is a raw client that may be monitoring: it keeps the stream's
// lines apart from the replies to its own commands.
type streamConn struct {
	t     testing.TB
	cc    *compatConn
	lines []string
	seq   []string // everything read, in order
}

func dialStream(t testing.TB, addr string) *streamConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &streamConn{t: t, cc: &compatConn{c: c}}
}

func (s *streamConn) send(req string) {
	s.t.Helper()
	if _, err := s.cc.c.Write([]byte(req)); err != nil {
		s.t.Fatal(err)
	}
}

// next reads one reply or stream line.
func (s *streamConn) next() string {
	s.t.Helper()
	r := s.cc.read(1)[0]
	if strings.HasPrefix(r, "<") { // compatConn's mark of a timeout or a close
		s.t.Fatalf("reading %s: %s", s.cc.c.RemoteAddr(), r)
	}
	s.seq = append(s.seq, r)
	return r
}

// linesAfter counts the stream lines read after the reply r.
func (s *streamConn) linesAfter(r string) int {
	n, after := 0, false
	for _, x := range s.seq {
		switch {
		case x == r:
			after = true
		case after && streamLineRe.MatchString(x):
			n++
		}
	}
	return n
}

// replies reads until n replies have arrived and returns them; the stream's
// lines on the way are kept in lines.
func (s *streamConn) replies(n int) string {
	s.t.Helper()
	var b strings.Builder
	for n > 0 {
		r := s.next()
		if streamLineRe.MatchString(r) {
			s.lines = append(s.lines, r)
			continue
		}
		b.WriteString(r)
		n--
	}
	return b.String()
}

// awaitLines reads the stream until, for each of want, a line containing it
// has arrived. Replies on the way fail the test.
func (s *streamConn) awaitLines(want ...string) {
	s.t.Helper()
	seen := func() bool {
		for _, w := range want {
			found := false
			for _, l := range s.lines {
				found = found || strings.Contains(l, w)
			}
			if !found {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for !seen() {
		if time.Now().After(deadline) {
			s.t.Fatalf("no stream line with each of %q within 10s; got:\n%s", want, strings.Join(s.lines, ""))
		}
		r := s.next()
		if !streamLineRe.MatchString(r) {
			s.t.Fatalf("a reply in the stream: %q", r)
		}
		s.lines = append(s.lines, r)
	}
}

// TestMonitorStreamsUpstream: a client that monitors through the proxy gets
// Redis's stream, byte for byte: writes made through another client of the
// proxy and directly on Redis both show in it. SUBSCRIBE and MULTI are
// refused meanwhile.
func TestMonitorStreamsUpstream(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	m := dialStream(t, e.addr)
	m.send("MONITOR\r\n")
	if got := m.replies(1); got != "+OK\r\n" {
		t.Fatalf("MONITOR = %q", got)
	}
	if err := e.client(0).Set(bg, "mon:proxy", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.direct.Set(bg, "mon:direct", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	m.awaitLines(`"mon:proxy" "v1"`, `"mon:direct" "v2"`)
	if n := len(e.upstreamClients("flags=O", "cmd=monitor")); n != 1 {
		t.Fatalf("%d monitor connections upstream, want 1", n)
	}

	// Subscriptions and transactions would be the monitor connection's.
	m.send("SUBSCRIBE ch\r\nMULTI\r\nPING\r\n")
	want := crlf("-ERR cacheproxy: SUBSCRIBE in monitor mode is not supported through the proxy\n" +
		"-ERR cacheproxy: MULTI in monitor mode is not supported through the proxy\n+PONG\n")
	if got := m.replies(3); got != want {
		t.Fatalf("SUBSCRIBE, MULTI, PING while monitoring:\n got  %q\n want %q", got, want)
	}
}

// TestMonitorRepliesAsRedis: a monitoring client's commands get Redis's
// replies in Redis's order, whether Redis answers them on the monitor
// connection (refusing those that touch the keyspace) or the proxy answers
// them itself; MONITOR again is ignored; RESET ends monitor mode and the
// connection then serves commands as usual. The stream's lines are set aside:
// they come when they come.
func TestMonitorRepliesAsRedis(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	steps := []struct {
		req     string
		replies int
	}{
		{"MONITOR", 1},
		{"PING", 1},
		{"PING hi", 1},
		{"ECHO x", 1},
		{"GET {p}k", 1},
		{"SET {p}k v", 1},
		{"MGET {p}k {p}j", 1},
		{"DBSIZE", 1},
		{"GET", 1},
		{"NOSUCH a", 1},
		{"EXEC", 1},
		{"UNSUBSCRIBE a b", 2},
		{"PUNSUBSCRIBE", 1},
		{"MONITOR", 0},
		{"MONITOR x", 1},
		{"RESET x", 1},
		{"MULTI x", 1},
		{"CLIENT NOSUCH", 1},
		{"CLIENT SETNAME mon", 1},
		{"CLIENT GETNAME", 1},
		{"AUTH x", 1},
		{"PING", 1},
		{"SELECT 1", 1},
		{"RESET", 1},
		{"CLIENT GETNAME", 1},
		{"SET {p}k v", 1},
		{"GET {p}k", 1},
		{"PING", 1},
	}
	run := func(addr, prefix string, pipelined bool) []string {
		s := dialStream(t, addr)
		var replies []string
		var all strings.Builder
		total := 0
		for _, st := range steps {
			req := strings.ReplaceAll(st.req, "{p}", prefix) + "\r\n"
			if !pipelined {
				s.send(req)
				replies = append(replies, s.replies(st.replies))
				continue
			}
			all.WriteString(req)
			total += st.replies
		}
		if pipelined {
			s.send(all.String())
			replies = append(replies, s.replies(total))
		}
		if len(s.lines) == 0 {
			t.Errorf("%s, pipelined %v: no stream line reached the client", addr, pipelined)
		}
		if n := s.linesAfter("+RESET\r\n"); n > 0 {
			t.Errorf("%s, pipelined %v: %d stream lines after RESET", addr, pipelined, n)
		}
		return replies
	}
	for _, pipelined := range []bool{false, true} {
		prefix := fmt.Sprintf("pipe%v:", pipelined)
		want := run(e.redis.Addr(), prefix, pipelined)
		got := run(e.addr, prefix, pipelined)
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("pipelined %v, reply %d:\n redis %q\n proxy %q", pipelined, i, want[i], got[i])
			}
		}
	}
	eventually(t, 5*time.Second, "monitor connections closed after RESET", func() bool {
		return len(e.upstreamClients("flags=O")) == 0
	})
}

// TestMonitorWithRedisCli: redis-cli's MONITOR through the proxy prints
// Redis's stream, and when it is killed its upstream connection goes too.
func TestMonitorWithRedisCli(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli is not installed (it comes with redis-server: apt-get install -y redis-server): %v", err)
	}
	e := startEnv(t, envOptions{})
	host, port, _ := net.SplitHostPort(e.addr)
	cli := exec.Command("redis-cli", "-h", host, "-p", port, "MONITOR")
	out, err := cli.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cli.Process.Kill()
			_ = cli.Wait()
		}
	})
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("redis-cli's output ended")
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("redis-cli printed nothing within 10s")
		}
		return ""
	}
	if l := next(); l != "OK" {
		t.Fatalf("redis-cli MONITOR printed %q first", l)
	}
	eventually(t, 5*time.Second, "monitor connection upstream", func() bool {
		return len(e.upstreamClients("flags=O")) == 1
	})
	if err := e.client(0).Set(bg, "cli:proxy", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.direct.Set(bg, "cli:direct", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var sawProxy, sawDirect bool
	for !sawProxy || !sawDirect {
		l := next()
		if !streamLineRe.MatchString("+" + l + "\r\n") {
			t.Fatalf("redis-cli printed %q, not a stream line", l)
		}
		sawProxy = sawProxy || strings.Contains(l, `"cli:proxy" "v1"`)
		sawDirect = sawDirect || strings.Contains(l, `"cli:direct" "v2"`)
	}
	_ = cli.Process.Kill()
	_ = cli.Wait()
	killed = true
	eventually(t, 5*time.Second, "the killed redis-cli's monitor connection gone", func() bool {
		return len(e.upstreamClients("flags=O")) == 0
	})
}

// TestMonitorClientLeavingFreesUpstream: a monitoring client that closes its
// socket, is killed through the proxy, or sends QUIT takes its monitor
// connection with it at once.
func TestMonitorClientLeavingFreesUpstream(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	for _, how := range []string{"closes", "killed", "quits"} {
		m := dialStream(t, e.addr)
		m.send("MONITOR\r\n")
		if got := m.replies(1); got != "+OK\r\n" {
			t.Fatalf("MONITOR = %q", got)
		}
		eventually(t, 5*time.Second, how+": monitor connection upstream", func() bool {
			return len(e.upstreamClients("flags=O")) == 1
		})
		switch how {
		case "closes":
			m.cc.c.Close()
		case "killed":
			killer := e.client(0)
			var id int64
			for _, line := range strings.Split(killer.ClientList(bg).Val(), "\n") {
				if strings.Contains(line, " flags=O ") {
					fmt.Sscanf(line, "id=%d", &id)
				}
			}
			if n, err := killer.ClientKillByFilter(bg, "ID", fmt.Sprint(id)).Result(); err != nil || n != 1 {
				t.Fatalf("CLIENT KILL ID %d of the monitor = %d, %v", id, n, err)
			}
		case "quits":
			m.send("QUIT\r\n")
			if got := m.replies(1); got != "+OK\r\n" {
				t.Fatalf("QUIT = %q", got)
			}
		}
		if how != "closes" {
			_ = m.cc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, err := m.cc.c.Read(make([]byte, 4096)); err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Fatalf("%s: the client's connection is still open", how)
					}
					break
				}
			}
		}
		eventually(t, 5*time.Second, how+": monitor connection gone", func() bool {
			return len(e.upstreamClients("flags=O")) == 0
		})
	}
}

// TestMonitorRefusedUpstream: when Redis refuses the proxy's MONITOR (here an
// ACL), the client gets Redis's error and stays an ordinary client; inside
// MULTI the proxy refuses MONITOR while queueing, where Redis would queue it
// and fail it at EXEC.
func TestMonitorRefusedUpstream(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	if err := e.direct.Do(bg, "ACL", "SETUSER", "default", "-monitor").Err(); err != nil {
		t.Fatal(err)
	}
	want := dialRaw(t, e.redis.Addr()).roundTrip("MONITOR\r\nSET k v\r\nGET k\r\n", 3)
	got := dialRaw(t, e.addr).roundTrip("MONITOR\r\nSET k v\r\nGET k\r\n", 3)
	if got != want || !strings.HasPrefix(want, "-NOPERM") {
		t.Fatalf("MONITOR refused by Redis:\n redis %q\n proxy %q", want, got)
	}
	if n := len(e.upstreamClients("flags=O")); n != 0 {
		t.Fatalf("%d monitor connections upstream", n)
	}

	got = dialRaw(t, e.addr).roundTrip("MULTI\r\nMONITOR\r\nEXEC\r\n", 3)
	if want := crlf("+OK\n-ERR cacheproxy: MONITOR inside MULTI is not supported through the proxy\n" +
		"-EXECABORT Transaction discarded because of previous errors.\n"); got != want {
		t.Fatalf("MONITOR inside MULTI:\n got  %q\n want %q", got, want)
	}
}
