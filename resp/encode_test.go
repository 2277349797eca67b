package resp

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

func TestAppend(t *testing.T) {
	t.Parallel()
	text := []byte("# Server\r\nredis_version:7.0.15\r\n")
	for _, tc := range []struct {
		got   []byte
		want  string
		elems string // what completes the reply
	}{
		{AppendMap(nil, 2), "%2\r\n", "+a\r\n:1\r\n+b\r\n:2\r\n"},
		{AppendMap(nil, 0), "%0\r\n", ""},
		{AppendSet(nil, 1), "~1\r\n", "+a\r\n"},
		{AppendPush(nil, 3), ">3\r\n", "+invalidate\r\n*1\r\n+k\r\n+x\r\n"},
		{AppendMapOrArray(nil, 2, 3), "%2\r\n", "+a\r\n:1\r\n+b\r\n:2\r\n"},
		{AppendMapOrArray(nil, 2, 2), "*4\r\n", "+a\r\n:1\r\n+b\r\n:2\r\n"},
		{AppendMapOrArray(nil, 1, 0), "*2\r\n", "+a\r\n:1\r\n"},
		{AppendNull(nil, 3), "_\r\n", ""},
		{AppendNull(nil, 2), "$-1\r\n", ""},
		{AppendNullArray(nil, 3), "_\r\n", ""},
		{AppendNullArray(nil, 2), "*-1\r\n", ""},
		{AppendBool(nil, true, 3), "#t\r\n", ""},
		{AppendBool(nil, false, 3), "#f\r\n", ""},
		{AppendBool(nil, true, 2), ":1\r\n", ""},
		{AppendBool(nil, false, 0), ":0\r\n", ""},
		{AppendVerbatim(nil, "txt", text, 3), "=36\r\ntxt:" + string(text) + "\r\n", ""},
		{AppendVerbatim(nil, "mkd", nil, 3), "=4\r\nmkd:\r\n", ""},
		{AppendVerbatim(nil, "markdown", []byte("x"), 3), "=5\r\nmar:x\r\n", ""},
		{AppendVerbatim(nil, "", []byte("x"), 3), "=5\r\n   :x\r\n", ""},
		{AppendVerbatim(nil, "txt", text, 2), "$32\r\n" + string(text) + "\r\n", ""},
		{AppendVerbatim(nil, "txt", nil, 2), "$0\r\n\r\n", ""},
		// The buffer is the caller's: encoders only append to it.
		{AppendBool([]byte("*2\r\n"), true, 3), "*2\r\n#t\r\n", "_\r\n"},
	} {
		if string(tc.got) != tc.want {
			t.Errorf("got %q; want %q", tc.got, tc.want)
			continue
		}
		r := []byte(tc.want + tc.elems)
		if n, err := ReplyLen(r); n != len(r) || err != nil {
			t.Errorf("%q is not one reply: ReplyLen = %d, %v", r, n, err)
		}
	}
}

func TestAppendAllocs(t *testing.T) {
	b := make([]byte, 0, 256)
	text := []byte(strings.Repeat("x", 100))
	if allocs := testing.AllocsPerRun(100, func() {
		b = AppendMapOrArray(b[:0], 3, 3)
		b = AppendNull(b, 2)
		b = AppendNullArray(b, 3)
		b = AppendBool(b, true, 3)
		b = AppendVerbatim(b, "txt", text, 3)
		b = AppendSet(b, 0)
		b = AppendPush(b, 0)
		b = AppendMap(b, 0)
	}); allocs != 0 {
		t.Fatalf("encoders allocate %v times into a large enough buffer", allocs)
	}
}

// TestAppendRedis compares what the encoders write with what a real Redis
// sends for the same values, to a client of each protocol.
func TestAppendRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	verbatim := func(format string) []string {
		return []string{"EVAL", "redis.setresp(3); return {verbatim_string={format='" + format + "', string='a\\r\\nb'}}", "0"}
	}
	for _, proto := range []int{2, 3} {
		// RESP2 has no sets or pushes: Redis sends arrays instead.
		header := func(resp3 func([]byte, int) []byte, n int) []byte {
			if proto == 3 {
				return resp3(nil, n)
			}
			return appendHeader(nil, '*', n)
		}
		// One connection, which HELLO switches to proto, then SUBSCRIBE to
		// pub/sub.
		tcs := []struct {
			args []string
			want []byte
		}{
			{[]string{"HELLO", fmt.Sprint(proto)}, AppendMapOrArray(nil, 7, proto)}, // a prefix
			{[]string{"EVAL", "redis.setresp(3); return nil", "0"}, AppendNull(nil, proto)},
			{[]string{"BLPOP", "nolist", "0.01"}, AppendNullArray(nil, proto)},
			{[]string{"EVAL", "redis.setresp(3); return true", "0"}, AppendBool(nil, true, proto)},
			{[]string{"EVAL", "redis.setresp(3); return false", "0"}, AppendBool(nil, false, proto)},
			{verbatim("txt"), AppendVerbatim(nil, "txt", []byte("a\r\nb"), proto)},
			{verbatim("markdown"), AppendVerbatim(nil, "markdown", []byte("a\r\nb"), proto)},
			{verbatim(""), AppendVerbatim(nil, "", []byte("a\r\nb"), proto)},
			{[]string{"EVAL", "redis.setresp(3); return {map={a=1}}", "0"}, append(AppendMapOrArray(nil, 1, proto), "$1\r\na\r\n:1\r\n"...)},
			{[]string{"EVAL", "redis.setresp(3); return {set={a=true}}", "0"}, append(header(AppendSet, 1), "$1\r\na\r\n"...)},
			{[]string{"SUBSCRIBE", "ch"}, append(header(AppendPush, 3), "$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"...)},
		}
		var cmds [][]string
		for _, tc := range tcs {
			cmds = append(cmds, tc.args)
		}
		for i, got := range pipeline(t, srv.Addr(), cmds, len(cmds)) {
			tc := tcs[i]
			if !bytes.HasPrefix(got, tc.want) || i > 0 && len(got) != len(tc.want) {
				t.Errorf("RESP%d: Redis answers %q with %.80q; the encoders write %q", proto, tc.args, got, tc.want)
			}
		}
	}
}
