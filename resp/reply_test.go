package resp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/redis/go-redis/v9"
)

var replySeeds = []string{
	"+OK\r\n",
	"+\r\n",
	"-ERR unknown command 'x'\r\n",
	":0\r\n",
	":-9223372036854775808\r\n",
	"$0\r\n\r\n",
	"$-1\r\n",
	"$5\r\nhe\r\no\r\n",
	"*-1\r\n",
	"*0\r\n",
	"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n",
	"*2\r\n*2\r\n+a\r\n*0\r\n*1\r\n*-1\r\n",
	"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
	"*2\r\n$3\r\nfoo\r\n-ERR x\r\n",
}

// refReply is a plain recursive RESP2 parser: the length of the reply b starts
// with, or more if it is incomplete, or bad.
func refReply(b []byte, depth int) (n int, more, bad bool) {
	if len(b) == 0 {
		return 0, true, false
	}
	if !strings.ContainsRune("+-:$*", rune(b[0])) {
		return 0, false, true
	}
	nl := strings.IndexByte(string(b), '\n')
	if nl < 0 {
		return 0, true, false
	}
	if b[nl-1] != '\r' {
		return 0, false, true
	}
	content, pos := b[1:nl-1], nl+1
	switch b[0] {
	case '+', '-':
		return pos, false, false
	case ':':
		if _, ok := parseLL(content); !ok {
			return 0, false, true
		}
		return pos, false, false
	case '$':
		l, ok := parseLL(content)
		if !ok || l < -1 || l > maxReplyBulk {
			return 0, false, true
		}
		if l == -1 {
			return pos, false, false
		}
		if int64(len(b)-pos) < l+2 {
			return 0, true, false
		}
		end := pos + int(l)
		if b[end] != '\r' || b[end+1] != '\n' {
			return 0, false, true
		}
		return end + 2, false, false
	}
	l, ok := parseLL(content)
	if !ok || l < -1 {
		return 0, false, true
	}
	if l > 0 && depth == maxReplyDepth {
		return 0, false, true
	}
	for ; l > 0; l-- {
		n, more, bad := refReply(b[pos:], depth+1)
		if more || bad {
			return 0, more, bad
		}
		pos += n
	}
	return pos, false, false
}

// scanGrowing feeds s ever longer prefixes of b, step bytes more each time,
// as reads into a buffer would.
func scanGrowing(s *ReplyScanner, b []byte, step int) (int, error) {
	for end := min(step, len(b)); ; end = min(end+step, len(b)) {
		n, err := s.Scan(b[:end])
		if n > 0 || err != nil || end == len(b) {
			return n, err
		}
	}
}

func TestReplyScanner(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("*1\r\n", maxReplyDepth) + ":1\r\n"
	tooDeep := strings.Repeat("*1\r\n", maxReplyDepth+1) + ":1\r\n"
	for _, tc := range []struct {
		in  string
		n   int // 0: incomplete
		bad bool
	}{
		{in: "+OK\r\n+next\r\n", n: 5},
		{in: "$5\r\nhe\r\no\r\n", n: 11},
		{in: "*3\r\n$1\r\na\r\n$-1\r\n:7\r\n", n: 20},
		{in: "*2\r\n*2\r\n+a\r\n*0\r\n*1\r\n*-1\r\n:9\r\n", n: 25},
		{in: deep, n: len(deep)},
		{in: "*2\r\n$3\r\nfoo\r\n", n: 0},
		{in: "$3\r\nfo", n: 0},
		{in: "+OK\r", n: 0},
		{in: tooDeep, bad: true},
		{in: "!3\r\nfoo\r\n", bad: true},
		{in: "+OK\n", bad: true},
		{in: ":x\r\n", bad: true},
		{in: ":\r\n", bad: true},
		{in: "$-2\r\n", bad: true},
		{in: "$+1\r\na\r\n", bad: true},
		{in: "$3\r\nfooXY", bad: true},
		{in: "*-2\r\n", bad: true},
		{in: "*1\r\n\r\n", bad: true},
	} {
		var s ReplyScanner
		n, err := s.Scan([]byte(tc.in))
		if n != tc.n || (err != nil) != tc.bad {
			t.Errorf("Scan(%.60q) = %d, %v; want %d, bad=%v", tc.in, n, err, tc.n, tc.bad)
		}
		// Byte by byte, the scanner must reach the same answer.
		var g ReplyScanner
		if n2, err2 := scanGrowing(&g, []byte(tc.in), 1); n2 != n || (err2 != nil) != (err != nil) {
			t.Errorf("Scan(%.60q) byte by byte = %d, %v; whole = %d, %v", tc.in, n2, err2, n, err)
		}
		if rn, _, rbad := refReply([]byte(tc.in), 0); rn != n || rbad != tc.bad {
			t.Errorf("reference(%.60q) = %d, bad=%v; scanner %d, %v", tc.in, rn, rbad, n, err)
		}
	}
	// After a complete reply and after an error, a scanner starts afresh.
	var s ReplyScanner
	if _, err := s.Scan([]byte("!")); err == nil {
		t.Fatal("no error on '!'")
	}
	if n, err := s.Scan([]byte("*1\r\n+a\r\n")); n != 8 || err != nil {
		t.Fatalf("after an error: %d, %v", n, err)
	}
	if n, err := s.Scan([]byte(":1\r\n")); n != 4 || err != nil {
		t.Fatalf("after a reply: %d, %v", n, err)
	}
	// Reset drops a half-scanned reply.
	s.Scan([]byte("*2\r\n+a\r\n"))
	s.Reset()
	if n, err := s.Scan([]byte("+b\r\n")); n != 4 || err != nil {
		t.Fatalf("after Reset: %d, %v", n, err)
	}
}

// TestReplyScannerLinear feeds large replies 4 KiB at a time. A scanner that
// re-read what it had already seen would take minutes here.
func TestReplyScannerLinear(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	const elems = 500000
	fmt.Fprintf(&b, "*%d\r\n", elems)
	for range elems {
		b.WriteString("$3\r\nval\r\n")
	}
	bulk := "$" + fmt.Sprint(32<<20) + "\r\n" + strings.Repeat("x", 32<<20) + "\r\n"
	for _, in := range []string{b.String(), bulk} {
		var s ReplyScanner
		if n, err := scanGrowing(&s, []byte(in), 4096); n != len(in) || err != nil {
			t.Fatalf("Scan = %d, %v; want %d", n, err, len(in))
		}
	}
}

func TestReplyLenAllocs(t *testing.T) {
	reply := []byte("*2\r\n*2\r\n$1\r\na\r\n:1\r\n$-1\r\n")
	if allocs := testing.AllocsPerRun(100, func() {
		if n, err := ReplyLen(reply); n != len(reply) || err != nil {
			t.Fatal(n, err)
		}
	}); allocs != 0 {
		t.Fatalf("ReplyLen allocates %v times", allocs)
	}
}

func TestArrayElems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want []string
		ok   bool
	}{
		{"*3\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n", []string{"$1\r\na\r\n", "$-1\r\n", "$0\r\n\r\n"}, true},
		{"*3\r\n:1\r\n+OK\r\n-ERR x\r\n", []string{":1\r\n", "+OK\r\n", "-ERR x\r\n"}, true},
		{"*0\r\n", nil, true},
		{"*-1\r\n", nil, false},
		{"$1\r\na\r\n", nil, false},
		{"*1\r\n*0\r\n", nil, false},
		{"*2\r\n$1\r\na\r\n", nil, false},
		{"*1\r\n$1\r\na\r\n:1\r\n", nil, false},
		{"*1\r\n$3\r\na\r\n", nil, false},
		{"*1\r\n$1\r\naXY", nil, false},
		{"*1\r\n$x\r\na\r\n", nil, false},
		{"*1\r\n:1\n", nil, false},
		{"*1\r\n:\r\n", nil, false},
		{"*1\r\n:x\r\n", nil, false},
		{"*1\n", nil, false},
		{"*9223372036854775807\r\n:1\r\n", nil, false},
		{"", nil, false},
	} {
		dst := make([][]byte, 1, 4) // stale contents must go
		got, ok := ArrayElems([]byte(tc.in), dst)
		if ok != tc.ok || (ok && fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want)) {
			t.Errorf("ArrayElems(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestReplyScannerRedis splits the replies of a real Redis to a pipeline, read
// in small pieces, and expects one reply per command, each as long as the
// reference parser says.
func TestReplyScannerRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	rc := srv.Client(0)
	if err := rc.Set(ctx, "big", strings.Repeat("b", 300000), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.HSet(ctx, "h", "f1", "v1", "f2", "v2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []string{"a", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	cmds := [][]string{
		{"PING"}, {"GET", "big"}, {"GET", "missing"}, {"MGET", "big", "missing", "h"},
		{"HGETALL", "h"}, {"XRANGE", "s", "-", "+"}, {"INCR", "n"}, {"GET", "h"}, {"NOSUCH"},
		{"EVAL", "return {1, {2, {3, {'x', {}}}}, redis.status_reply('OK')}", "0"},
		{"INFO"}, {"COMMAND", "INFO", "GET", "SET"}, {"LRANGE", "nolist", "0", "-1"},
	}
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var req strings.Builder
	for _, args := range cmds {
		req.WriteString(mbulk(args...))
	}
	if _, err := io.WriteString(c, req.String()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReaderSize(c, 16)
	var buf []byte
	var s ReplyScanner
	p := make([]byte, 7) // odd, small reads
	for i := range cmds {
		for {
			n, err := s.Scan(buf)
			if err != nil {
				t.Fatalf("reply to %v: %v", cmds[i], err)
			}
			if n > 0 {
				if rn, _, _ := refReply(buf, 0); rn != n {
					t.Fatalf("reply to %v: scanner %d bytes, reference %d", cmds[i], n, rn)
				}
				if cmds[i][0] == "MGET" {
					if elems, ok := ArrayElems(buf[:n], nil); !ok || len(elems) != 3 || string(elems[1]) != "$-1\r\n" {
						t.Fatalf("MGET elements %q, %v", elems, ok)
					}
				}
				buf = buf[n:]
				break
			}
			m, err := r.Read(p)
			if err != nil {
				t.Fatalf("reading the reply to %v: %v", cmds[i], err)
			}
			buf = append(buf, p[:m]...)
		}
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left over", len(buf))
	}
}
