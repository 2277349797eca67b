package resp

import (
	"strings"
	"testing"
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
