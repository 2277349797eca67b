package upstream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/redis/go-redis/v9"
)

const (
	busyLine    = "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n"
	loadingLine = "-LOADING Redis is loading the dataset in memory\r\n"
)

func TestRefusedForNow(t *testing.T) {
	t.Parallel()
	for reply, want := range map[string]bool{
		busyLine: true,
		"-BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.\r\n": true,
		"-BUSY Redis is busy running a module command.\r\n":                                             true,
		"-BUSY\r\n":    true,
		loadingLine:    true,
		"-LOADING\r\n": true,
		"-BUSYKEY Target key name already exists.\r\n":      false,
		"-BUSYGROUP Consumer Group name already exists\r\n": false,
		"-ERR BUSY\r\n":                        false,
		"-LOADINGX whatever\r\n":               false,
		"-NOAUTH Authentication required.\r\n": false,
	} {
		if got := refusedForNow([]byte(reply)); got != want {
			t.Errorf("refusedForNow(%q) = %v, want %v", reply, got, want)
		}
	}
}

// TestHandshakeJudgesReplies plays the upstream's side of handshakes whose
// replies no Redis 7.0 can be made to give (it serves SELECT and CLIENT
// SETNAME while loading) or that are faults: each handshake must send exactly
// the commands listed, and end as the case says.
func TestHandshakeJudgesReplies(t *testing.T) {
	t.Parallel()
	setname := []string{"CLIENT", "SETNAME", "cacheproxy"}
	for _, tc := range []struct {
		name    string
		cfg     Config
		db      int
		req     [][]string
		replies string
		refusal string // a *ReplyError with this Line is wanted
		err     string // another error containing this is wanted
	}{
		{name: "SETNAME refused while busy", req: [][]string{setname}, replies: busyLine},
		{name: "SETNAME refused while loading", req: [][]string{setname}, replies: loadingLine},
		{
			name: "SELECT refused while busy", db: 3,
			req:     [][]string{{"SELECT", "3"}, setname},
			replies: busyLine + busyLine, refusal: busyLine,
		},
		{
			name: "SELECT refused while loading", db: 3,
			req:     [][]string{{"SELECT", "3"}, setname},
			replies: loadingLine + "+OK\r\n", refusal: loadingLine,
		},
		{
			name: "AUTH refused while loading", cfg: Config{Password: "pw"}, db: 3,
			req:     [][]string{{"AUTH", "pw"}, {"SELECT", "3"}, setname},
			replies: loadingLine + "-NOAUTH Authentication required.\r\n" + loadingLine, refusal: loadingLine,
		},
		{
			name: "ACL user", cfg: Config{Username: "u", Password: "pw"}, db: 2,
			req:     [][]string{{"AUTH", "u", "pw"}, {"SELECT", "2"}, setname},
			replies: "+OK\r\n+OK\r\n+OK\r\n",
		},
		{
			name: "wrong password", cfg: Config{Password: "pw"},
			req:     [][]string{{"AUTH", "pw"}, setname},
			replies: "-WRONGPASS invalid username-password pair or user is disabled.\r\n-NOAUTH Authentication required.\r\n",
			err:     "handshake: AUTH: -WRONGPASS invalid",
		},
		{
			name: "SELECT fails", db: 3,
			req:     [][]string{{"SELECT", "3"}, setname},
			replies: "-ERR DB index is out of range\r\n+OK\r\n",
			err:     "handshake: SELECT 3: -ERR DB index is out of range",
		},
		{
			name: "a BUSYKEY is no BUSY", db: 3,
			req:     [][]string{{"SELECT", "3"}, setname},
			replies: "+OK\r\n-BUSYKEY Target key name already exists.\r\n",
			err:     "handshake: CLIENT SETNAME: -BUSYKEY",
		},
		{
			name: "HELLO unknown", cfg: Config{Protocol: 3},
			req:     [][]string{{"HELLO", "3", "SETNAME", "cacheproxy"}},
			replies: "-ERR unknown command 'HELLO', with args beginning with: '3' 'SETNAME' 'cacheproxy' \r\n",
			err:     "handshake: HELLO 3: -ERR unknown command 'HELLO'",
		},
		{
			name: "HELLO answered in RESP2", cfg: Config{Protocol: 3, Password: "pw"}, db: 1,
			req:     [][]string{{"HELLO", "3", "AUTH", "default", "pw", "SETNAME", "cacheproxy"}, {"SELECT", "1"}},
			replies: "*4\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:2\r\n+OK\r\n",
			err:     "does not speak RESP3",
		},
		{
			name: "reply to no request", req: [][]string{setname},
			replies: "+OK\r\n+OK\r\n", err: "handshake: unexpected data",
		},
		{
			name: "not RESP", req: [][]string{setname},
			replies: "HTTP/1.1 400 Bad Request\r\n\r\n", err: "handshake: CLIENT SETNAME: resp: malformed reply",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			cfg.Addr = "upstream"
			p, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			deadline := time.Now().Add(10 * time.Second)
			_ = client.SetDeadline(deadline)
			_ = server.SetDeadline(deadline)
			var want []byte
			for _, args := range tc.req {
				want = resp.AppendCommand(want, args...)
			}
			served := make(chan error, 1)
			go func() {
				got := make([]byte, len(want))
				if _, err := io.ReadFull(server, got); err != nil {
					served <- fmt.Errorf("reading the handshake: %w", err)
					return
				}
				if string(got) != string(want) {
					served <- fmt.Errorf("handshake sent %q, want %q", got, want)
					return
				}
				_, err := server.Write([]byte(tc.replies))
				served <- err
			}()
			err = p.handshake(client, tc.db)
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			var re *ReplyError
			switch {
			case tc.refusal != "":
				if !errors.As(err, &re) || string(re.Line) != tc.refusal {
					t.Fatalf("handshake: %v; want a *ReplyError with %q", err, tc.refusal)
				}
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) || errors.As(err, &re) {
					t.Fatalf("handshake: %v; want an error containing %q, not a *ReplyError", err, tc.err)
				}
			case err != nil:
				t.Fatalf("handshake: %v", err)
			}
		})
	}
}

func TestProtocolConfig(t *testing.T) {
	t.Parallel()
	for proto, ok := range map[int]bool{0: true, 2: true, 3: true, 1: false, 4: false, -1: false} {
		if _, err := New(Config{Addr: "upstream", Protocol: proto}); (err == nil) != ok {
			t.Errorf("Protocol %d: err %v", proto, err)
		}
	}
}

// TestProtocol3 checks that every kind of connection a Protocol 3 pool makes
// is in RESP3, with and without credentials, and that a Protocol 2 pool's
// connections to the same server stay in RESP2.
func TestProtocol3(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, user, pass string
		setup            []any // run on the server first
	}{
		{name: "no password"},
		{name: "requirepass", pass: "pw", setup: []any{"CONFIG", "SET", "requirepass", "pw"}},
		{name: "ACL user", user: "u", pass: "pw", setup: []any{"ACL", "SETUSER", "u", "on", ">pw", "~*", "&*", "+@all"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := redistest.Start(t, redistest.Options{})
			if tc.setup != nil {
				if err := r.Client(0).Do(bg, tc.setup...).Err(); err != nil {
					t.Fatal(err)
				}
			}
			admin := redis.NewClient(&redis.Options{Addr: r.Addr(), Username: tc.user, Password: tc.pass, Protocol: 2})
			t.Cleanup(func() { admin.Close() })
			cfg := Config{Addr: r.Addr(), Username: tc.user, Password: tc.pass, Conns: 1, Protocol: 3}
			p3, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p3.Close)

			var b Batch
			b.Add(cmd("HSET", "h", "f", "v"))
			b.Add(cmd("HGETALL", "h"))
			b.Add(cmd("GET", "missing"))
			p3.Do(bg, 0, 0, &b)
			expectReplies(t, "shared", &b, ":1\r\n", "%1\r\n$1\r\nf\r\n$1\r\nv\r\n", "_\r\n")

			c, err := p3.Dedicated(bg, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			b.Reset()
			b.Add(cmd("HSET", "h2", "a", "b"))
			b.Add(cmd("HGETALL", "h2"))
			c.Do(&b)
			expectReplies(t, "dedicated", &b, ":1\r\n", "%1\r\n$1\r\na\r\n$1\r\nb\r\n")

			raw, err := p3.Raw(bg, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := raw.Write(cmd("HGETALL", "h2")); err != nil {
				t.Fatal(err)
			}
			want := "%1\r\n$1\r\na\r\n$1\r\nb\r\n"
			got := make([]byte, len(want))
			if _, err := io.ReadFull(raw, got); err != nil || string(got) != want {
				t.Fatalf("raw HGETALL = %q, %v; want %q", got, err, want)
			}

			// HELLO named every connection.
			named := 0
			for _, line := range strings.Split(admin.ClientList(bg).Val(), "\n") {
				if strings.Contains(line, " name=cacheproxy ") {
					named++
					if !strings.Contains(line, " resp=3") {
						t.Errorf("a RESP2 connection: %s", line)
					}
				}
			}
			if named != 3 {
				t.Errorf("%d connections named cacheproxy, want 3", named)
			}

			cfg.Protocol = 2
			p2, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p2.Close)
			b.Reset()
			b.Add(cmd("HGETALL", "h"))
			b.Add(cmd("GET", "missing"))
			p2.Do(bg, 0, 0, &b)
			expectReplies(t, "RESP2 pool", &b, "*2\r\n$1\r\nf\r\n$1\r\nv\r\n", "$-1\r\n")
		})
	}
}

func expectReplies(t *testing.T, what string, b *Batch, want ...string) {
	t.Helper()
	if b.Err() != nil || b.Answered() != len(want) {
		t.Fatalf("%s: answered %d of %d, %v", what, b.Answered(), len(want), b.Err())
	}
	for i, w := range want {
		if got := string(b.Reply(i)); got != w {
			t.Fatalf("%s: reply %d = %q, want %q", what, i, got, w)
		}
	}
}
