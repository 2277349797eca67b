package resp

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// pipeline sends cmds to addr in one write on a new connection, reads the
// replies back in small pieces and splits them with one ReplyScanner. It
// stops after want replies, each checked against the reference parser.
func pipeline(t *testing.T, addr string, cmds [][]string, want int) [][]byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
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
	var replies [][]byte
	for len(replies) < want {
		n, err := s.Scan(buf)
		if err != nil {
			t.Fatalf("reply %d: %v", len(replies), err)
		}
		if n == 0 {
			m, err := r.Read(p)
			if err != nil {
				t.Fatalf("reading reply %d: %v", len(replies), err)
			}
			buf = append(buf, p[:m]...)
			continue
		}
		if rn, _, _ := refReply(buf); rn != n {
			t.Fatalf("reply %d: scanner %d bytes, reference %d", len(replies), n, rn)
		}
		replies = append(replies, buf[:n:n])
		buf = buf[n:]
	}
	if len(buf) != 0 || r.Buffered() != 0 {
		t.Fatalf("%d bytes left over", len(buf)+r.Buffered())
	}
	return replies
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
	replies := pipeline(t, srv.Addr(), cmds, len(cmds))
	if elems, ok := ArrayElems(replies[3], nil); !ok || len(elems) != 3 || string(elems[1]) != "$-1\r\n" {
		t.Fatalf("MGET elements %q, %v", elems, ok)
	}
}

// TestReplyScannerRedisRESP3 splits the replies of a real Redis to a RESP3
// pipeline whose commands get every RESP3 type Redis 7.0 sends, and checks
// that each reply is of the type expected.
func TestReplyScannerRedisRESP3(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Args: []string{"--enable-debug-command", "local"}})
	const selfHolding = "local a = {}; local b = {a}; a[1] = b; return a"
	cmds := []struct {
		args   []string
		starts []string // how each of its replies starts
	}{
		{[]string{"HELLO", "3"}, []string{"%7\r\n$6\r\nserver\r\n"}},
		{[]string{"SET", "big", strings.Repeat("b", 300000)}, []string{"+OK\r\n"}},
		{[]string{"HSET", "h", "f1", "v1", "f2", "v2"}, []string{":2\r\n"}},
		{[]string{"HGETALL", "h"}, []string{"%2\r\n"}},
		{[]string{"CONFIG", "GET", "maxmemory*"}, []string{"%"}},
		{[]string{"SADD", "s", "a", "b", "c"}, []string{":3\r\n"}},
		{[]string{"SMEMBERS", "s"}, []string{"~3\r\n"}},
		{[]string{"ZADD", "z", "1.5", "m"}, []string{":1\r\n"}},
		{[]string{"ZSCORE", "z", "m"}, []string{",1.5\r\n"}},
		{[]string{"ZINCRBY", "z", "inf", "m"}, []string{",inf\r\n"}},
		{[]string{"GET", "missing"}, []string{"_\r\n"}},
		{[]string{"MGET", "big", "missing", "h"}, []string{"*3\r\n$300000\r\n"}},
		{[]string{"XADD", "x", "1-1", "a", "1"}, []string{"$3\r\n1-1\r\n"}},
		{[]string{"XINFO", "STREAM", "x", "FULL"}, []string{"%"}},
		{[]string{"EVAL", "redis.setresp(3); return true", "0"}, []string{"#t\r\n"}},
		{[]string{"EVAL", "redis.setresp(3); return false", "0"}, []string{"#f\r\n"}},
		{[]string{"EVAL", "redis.setresp(3); return {big_number='123456789012345678901234567890'}", "0"},
			[]string{"(123456789012345678901234567890\r\n"}},
		{[]string{"EVAL", "redis.setresp(3); return {big_number='not a number'}", "0"}, []string{"(not a number\r\n"}},
		{[]string{"EVAL", "redis.setresp(3); return {double=0/0}", "0"}, []string{","}},
		{[]string{"EVAL", "redis.setresp(3); return {double=-1/0}", "0"}, []string{",-inf\r\n"}},
		{[]string{"EVAL", "redis.setresp(3); return {verbatim_string={format='', string='hi'}}", "0"}, []string{"=6\r\n   :hi\r\n"}},
		{[]string{"EVAL", "redis.setresp(3); return {map={a={set={b=true}}}}", "0"}, []string{"%1\r\n$1\r\na\r\n~1\r\n"}},
		{[]string{"INFO", "server"}, []string{"="}},
		{[]string{"CLIENT", "INFO"}, []string{"="}},
		{[]string{"EVAL", selfHolding, "0"}, []string{"*1\r\n*1\r\n*1\r\n"}},
		{[]string{"DEBUG", "PROTOCOL", "attrib"}, []string{"|1\r\n"}},
		{[]string{"DEBUG", "PROTOCOL", "bignum"}, []string{"("}},
		{[]string{"DEBUG", "PROTOCOL", "verbatim"}, []string{"=29\r\ntxt:"}},
		{[]string{"DEBUG", "PROTOCOL", "push"}, []string{">2\r\n", "$"}}, // a push, then the reply
		{[]string{"SUBSCRIBE", "ch"}, []string{">3\r\n$9\r\nsubscribe\r\n"}},
		{[]string{"UNSUBSCRIBE", "ch"}, []string{">3\r\n$11\r\nunsubscribe\r\n"}},
		{[]string{"NOSUCH"}, []string{"-ERR unknown command"}},
		{[]string{"PING"}, []string{"+PONG\r\n"}},
	}
	var args [][]string
	var starts []string
	first := make([]int, len(cmds)) // each command's first reply
	for i, c := range cmds {
		args = append(args, c.args)
		first[i] = len(starts)
		starts = append(starts, c.starts...)
	}
	replies := pipeline(t, srv.Addr(), args, len(starts))
	for i, r := range replies {
		if !bytes.HasPrefix(r, []byte(starts[i])) {
			t.Errorf("reply %d starts %.40q; want %q", i, r, starts[i])
		}
	}
	var deep []byte
	for i, c := range cmds {
		switch c.args[0] {
		case "MGET":
			elems, ok := ArrayElems(replies[first[i]], nil)
			if !ok || len(elems) != 3 || string(elems[1]) != "_\r\n" || string(elems[2]) != "_\r\n" {
				t.Errorf("MGET elements %.80q, %v", elems, ok)
			}
		case "EVAL":
			if c.args[1] == selfHolding {
				deep = replies[first[i]]
			}
		}
	}
	// Redis nests the table until Lua's stack runs out, then says so.
	end := []byte("-ERR reached lua stack limit\r\n")
	levels := bytes.Count(deep, []byte("*1\r\n"))
	if !bytes.HasSuffix(deep, end) || len(deep) != 4*levels+len(end) || levels < 1000 {
		t.Errorf("the self-holding table's reply: %d bytes, %d levels, ending %q", len(deep), levels, deep[max(0, len(deep)-40):])
	}
	t.Logf("a Lua table that holds itself: arrays %d deep", levels)
}
