package resp

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// replySeeds are complete replies of every type, alone and nested.
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
	// RESP3 scalars, in the forms Redis 7.0 sends them.
	"_\r\n",
	",1.5\r\n",
	",-0\r\n",
	",1.0000000000000001e+300\r\n",
	",1e-05\r\n",
	",inf\r\n",
	",-inf\r\n",
	",nan\r\n",
	",-nan\r\n",
	"#t\r\n",
	"#f\r\n",
	"(123456789012345678901234567890\r\n",
	"(-12\r\n",
	"(not a number\r\n", // a Lua script's big_number, passed through as is
	"!21\r\nSYNTAX invalid syntax\r\n",
	"!0\r\n\r\n",
	"=15\r\ntxt:Some string\r\n",
	"=4\r\ntxt:\r\n",
	"=6\r\n   :\r\n\r\n", // a format of spaces, a body of CRLF
	// RESP3 aggregates: a map's n counts pairs.
	"%0\r\n",
	"~0\r\n",
	">0\r\n",
	"%2\r\n+first\r\n:1\r\n+second\r\n_\r\n",
	"~3\r\n:1\r\n,2.5\r\n#f\r\n",
	">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
	"%1\r\n~1\r\n%1\r\n:1\r\n:2\r\n*1\r\n>1\r\n_\r\n",
	// Attributes: with the reply that follows, one reply or element.
	"|1\r\n+key\r\n+val\r\n:5\r\n",
	"|0\r\n:5\r\n",
	"|0\r\n|1\r\n+a\r\n+b\r\n*0\r\n",
	"|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n$39\r\nSome real reply following the attribute\r\n",
	"|1\r\n+k\r\n|1\r\n+a\r\n+b\r\n%1\r\n+c\r\n+d\r\n*2\r\n:1\r\n:2\r\n",
	"*3\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n$1\r\na\r\n:2\r\n",
	"%1\r\n|1\r\n+a\r\n+b\r\n+k\r\n|0\r\n*1\r\n|0\r\n+v\r\n",
}

// replyIncomplete are beginnings of replies.
var replyIncomplete = []string{
	"",
	"*2\r\n$3\r\nfoo\r\n",
	"$3\r\nfo",
	"+OK\r",
	"_\r",
	"#t",
	",1.5",
	"=6\r\ntxt:h",
	"!3\r\nab\r\n",
	"%1\r\n+k\r\n",       // a pair is two elements
	"|1\r\n+k\r\n+v\r\n", // an attribute without its reply
	"*1\r\n|0\r\n",       // likewise, nested
	"~2\r\n:1\r\n|1\r\n",
	"*9223372036854775807\r\n" + strings.Repeat(":1\r\n", 5),
	"%4611686018427387903\r\n" + strings.Repeat(":1\r\n", 5),
	"|4611686018427387903\r\n" + strings.Repeat(":1\r\n", 5),
}

// replyMalformed are invalid replies, or beginnings that cannot become valid.
var replyMalformed = []string{
	"+OK\n",
	":x\r\n",
	":\r\n",
	"$-2\r\n",
	"$+1\r\na\r\n",
	"$3\r\nfooXY",
	"*-2\r\n",
	"*1\r\n\r\n",
	"?\r\n",
	"_x\r\n", "_ \r\n", "_\n",
	",\r\n", ",1.\r\n", ",.5\r\n", ",1e\r\n", ",1e+\r\n", ",-\r\n", ",abc\r\n", ",1.5x\r\n", ",infinity\r\n", ",1.5\n",
	"#\r\n", "#x\r\n", "#tt\r\n", "#T\r\n", "#t\n",
	"(12\n",
	"!-1\r\n", "!x\r\n", "!3\r\nfooXY", "!3\nfoo\r\n",
	"=3\r\ntxt\r\n", "=0\r\n\r\n", "=-1\r\n", "=6\r\ntxt;hi\r\n", "=6\r\ntxt:hiXY",
	"%-1\r\n", "~-1\r\n", ">-1\r\n", "|-1\r\n", "%x\r\n",
	"%4611686018427387904\r\n", "|4611686018427387904\r\n",
	"*?\r\n", "$?\r\n", "%?\r\n", "~?\r\n", ">?\r\n", "|?\r\n", "!?\r\n", "=?\r\n",
	";3\r\nfoo\r\n", ".\r\n",
	"*1\r\n#x\r\n",
	"%1\r\n+k\r\n,\r\n",
	"|1\r\n+k\r\n_1\r\n:1\r\n",
	"*2\r\n|0\r\n:1\r\n=2\r\nab\r\n",
}

var refDouble = regexp.MustCompile(`^[+-]?(inf|nan|[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?)$`)

// refReply is a plain recursive RESP2 and RESP3 parser: the length of the
// reply b starts with, or more if it is incomplete, or bad.
func refReply(b []byte) (n int, more, bad bool) {
	if len(b) == 0 {
		return 0, true, false
	}
	if !strings.ContainsRune("+-:$*_,#(!=%~>|", rune(b[0])) {
		return 0, false, true
	}
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return 0, true, false
	}
	if b[nl-1] != '\r' {
		return 0, false, true
	}
	typ, content, pos := b[0], string(b[1:nl-1]), nl+1
	switch typ {
	case '+', '-', '(':
		return pos, false, false
	case ':':
		if _, ok := parseLL([]byte(content)); !ok {
			return 0, false, true
		}
		return pos, false, false
	case '_', '#', ',':
		if typ == '_' && content != "" || typ == '#' && content != "t" && content != "f" ||
			typ == ',' && !refDouble.MatchString(content) {
			return 0, false, true
		}
		return pos, false, false
	case '$', '!', '=':
		l, ok := parseLL([]byte(content))
		least := map[byte]int64{'$': -1, '!': 0, '=': 4}[typ]
		if !ok || l < least || l > maxReplyBulk {
			return 0, false, true
		}
		if l == -1 {
			return pos, false, false
		}
		if int64(len(b)-pos) < l+2 {
			return 0, true, false
		}
		end := pos + int(l)
		if b[end] != '\r' || b[end+1] != '\n' || typ == '=' && b[pos+3] != ':' {
			return 0, false, true
		}
		return end + 2, false, false
	}
	l, ok := parseLL([]byte(content))
	if !ok || l < -1 || l == -1 && typ != '*' {
		return 0, false, true
	}
	if typ == '%' || typ == '|' {
		if l > math.MaxInt64/2 {
			return 0, false, true
		}
		l *= 2
		if typ == '|' {
			l++
		}
	}
	for ; l > 0; l-- {
		n, more, bad := refReply(b[pos:])
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
	type tc struct {
		in  string
		n   int // 0: incomplete
		bad bool
	}
	var tcs []tc
	for _, r := range replySeeds {
		// What follows a reply is not part of it.
		tcs = append(tcs, tc{in: r, n: len(r)}, tc{in: r + "+next\r\n", n: len(r)}, tc{in: r + "?", n: len(r)})
	}
	for _, r := range replyIncomplete {
		tcs = append(tcs, tc{in: r})
	}
	for _, r := range replyMalformed {
		tcs = append(tcs, tc{in: r, bad: true})
	}
	for _, tc := range tcs {
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
		if rn, _, rbad := refReply([]byte(tc.in)); rn != n || rbad != tc.bad {
			t.Errorf("reference(%.60q) = %d, bad=%v; scanner %d, %v", tc.in, rn, rbad, n, err)
		}
	}
	// After a complete reply and after an error, a scanner starts afresh.
	var s ReplyScanner
	if _, err := s.Scan([]byte("?")); err == nil {
		t.Fatal("no error on '?'")
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

// TestReplyScannerPrefixes feeds each sample reply one growing prefix at a
// time, to one scanner as a read buffer would and to a fresh scanner each
// time: every proper prefix is incomplete, and only the whole is a reply.
func TestReplyScannerPrefixes(t *testing.T) {
	t.Parallel()
	for _, r := range replySeeds {
		b := []byte(r)
		var s ReplyScanner
		for end := range len(b) {
			if n, err := s.Scan(b[:end]); n != 0 || err != nil {
				t.Fatalf("Scan(%q) after shorter prefixes = %d, %v; want 0, nil", b[:end], n, err)
			}
			if n, err := ReplyLen(b[:end]); n != 0 || err != nil {
				t.Fatalf("ReplyLen(%q) = %d, %v; want 0, nil", b[:end], n, err)
			}
		}
		if n, err := s.Scan(b); n != len(b) || err != nil {
			t.Fatalf("Scan(%q) after every prefix = %d, %v; want %d", b, n, err, len(b))
		}
	}
}

func TestReplyScannerErrors(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"*?\r\n":           "streamed array (*?) not supported",
		"$?\r\n":           "streamed bulk string ($?) not supported",
		"=3\r\ntxt\r\n":    `invalid verbatim string length "3"`,
		"=6\r\ntxt;hi\r\n": "verbatim string format not followed by ':' at offset 7",
		"#x\r\n":           `invalid boolean "x"`,
		",\r\n":            `invalid double ""`,
		"%-1\r\n":          `invalid map length "-1"`,
		"!1\r\nxyz":        "blob not followed by CRLF at offset 5",
	} {
		if _, err := ReplyLen([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReplyLen(%q) error %v; want it to say %q", in, err, want)
		}
	}
}

// deepReply nests aggregates of every kind levels deep, with elements before
// and after each nested one, around the error Redis ends its deepest replies
// with. It returns the reply and the length of its part before that error.
func deepReply(levels int) ([]byte, int) {
	// A prefix and a suffix per kind of level; an attribute and the reply it
	// annotates make two levels.
	kinds := [][2]string{
		{"*1\r\n", ""},
		{"*3\r\n:1\r\n", "$1\r\nx\r\n"},
		{"%2\r\n+k\r\n", "+k2\r\n_\r\n"},
		{"~2\r\n", ",1.5\r\n"},
		{">1\r\n", ""},
		{"|1\r\n+a\r\n+b\r\n*1\r\n", ""},
		{"|0\r\n~1\r\n", ""},
	}
	var prefix, suffix []byte
	var suffixes []string
	for i := range levels {
		k := kinds[i*7919%len(kinds)]
		prefix = append(prefix, k[0]...)
		suffixes = append(suffixes, k[1])
	}
	inner := len(prefix)
	prefix = append(prefix, "-ERR reached lua stack limit\r\n"...)
	for i := len(suffixes) - 1; i >= 0; i-- {
		suffix = append(suffix, suffixes[i]...)
	}
	return append(prefix, suffix...), inner
}

// TestReplyScannerDeep follows aggregates nested 100000 deep, the kind of
// reply Redis sends (some 8000 deep) for a Lua table that holds itself,
// whole, byte by byte and in random pieces, and checks what its stack costs.
// It does not run in parallel, so that it can count the bytes it allocates.
func TestReplyScannerDeep(t *testing.T) {
	const levels = 100000
	reply, inner := deepReply(levels)
	var s ReplyScanner
	if n, err := s.Scan(append(reply[:len(reply):len(reply)], "+next\r\n"...)); n != len(reply) || err != nil {
		t.Fatalf("Scan = %d, %v; want %d", n, err, len(reply))
	}
	if n, err := scanGrowing(&s, reply, 1); n != len(reply) || err != nil {
		t.Fatalf("byte by byte: Scan = %d, %v; want %d", n, err, len(reply))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10 {
		end := 0
		for end < len(reply) {
			end = min(end+1+rng.IntN(256), len(reply))
			n, err := s.Scan(reply[:end])
			if want := map[bool]int{true: len(reply)}[end == len(reply)]; n != want || err != nil {
				t.Fatalf("in random pieces, at %d bytes of %d: Scan = %d, %v; want %d", end, len(reply), n, err, want)
			}
		}
	}
	if n, _, bad := refReply(reply); n != len(reply) || bad {
		t.Fatalf("reference = %d, bad=%v; want %d", n, bad, len(reply))
	}

	// At the deepest point, the stack holds one count a level, in at most
	// twice the space.
	if n, err := s.Scan(reply[:inner]); n != 0 || err != nil {
		t.Fatalf("Scan of the part before the innermost reply = %d, %v", n, err)
	}
	depth := s.depth
	if depth < levels || cap(s.deep) > 2*depth {
		t.Fatalf("at the deepest point: depth %d (want >= %d), stack capacity %d", depth, levels, cap(s.deep))
	}
	// A deep reply's stack is not kept once the reply is done.
	if n, err := s.Scan(reply); n != len(reply) || err != nil || cap(s.deep) != 0 {
		t.Fatalf("Scan = %d, %v, leaving a stack of capacity %d", n, err, cap(s.deep))
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if n, err := ReplyLen(reply); n != len(reply) || err != nil {
		t.Fatalf("ReplyLen = %d, %v", n, err)
	}
	runtime.ReadMemStats(&after)
	// append grows a large slice by a quarter at a time, so building a stack
	// allocates about five times its final size in all, most of it garbage.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 6*8*uint64(depth) {
		t.Fatalf("ReplyLen of a reply %d deep allocated %d bytes", depth, alloc)
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
	for _, r := range []string{
		"*2\r\n*2\r\n$1\r\na\r\n:1\r\n$-1\r\n",
		"*1\r\n%1\r\n+k\r\n~1\r\n>1\r\n|1\r\n+a\r\n+b\r\n*1\r\n*1\r\n*2\r\n,1.5\r\n=5\r\ntxt:x\r\n", // 8 deep
	} {
		reply := []byte(r)
		if allocs := testing.AllocsPerRun(100, func() {
			if n, err := ReplyLen(reply); n != len(reply) || err != nil {
				t.Fatal(n, err)
			}
		}); allocs != 0 {
			t.Fatalf("ReplyLen(%q) allocates %v times", r, allocs)
		}
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
		// RESP3
		{"*4\r\n$1\r\na\r\n_\r\n$-1\r\n,1.5\r\n", []string{"$1\r\na\r\n", "_\r\n", "$-1\r\n", ",1.5\r\n"}, true},
		{
			"*5\r\n#t\r\n(123\r\n!3\r\nERR\r\n=5\r\ntxt:x\r\n-ERR y\r\n",
			[]string{"#t\r\n", "(123\r\n", "!3\r\nERR\r\n", "=5\r\ntxt:x\r\n", "-ERR y\r\n"}, true,
		},
		{"*1\r\n%0\r\n", nil, false},
		{"*1\r\n~0\r\n", nil, false},
		{"*1\r\n>0\r\n", nil, false},
		{"*1\r\n|0\r\n:1\r\n", nil, false},
		{"*2\r\n:1\r\n|1\r\n+a\r\n+b\r\n:1\r\n", nil, false},
		{"~1\r\n:1\r\n", nil, false},
		{">1\r\n:1\r\n", nil, false},
		{"%1\r\n:1\r\n:2\r\n", nil, false},
		{"|0\r\n*1\r\n:1\r\n", nil, false},
		{"_\r\n", nil, false},
		{"*1\r\n_x\r\n", nil, false},
		{"*1\r\n#x\r\n", nil, false},
		{"*1\r\n,\r\n", nil, false},
		{"*1\r\n,1.5\n", nil, false},
		{"*1\r\n=3\r\ntxt\r\n", nil, false},
		{"*1\r\n=5\r\ntxt;x\r\n", nil, false},
		{"*1\r\n!-1\r\n", nil, false},
		{"*1\r\n!1\r\nxyz", nil, false},
		{"*1\r\n$?\r\n", nil, false},
		{"*1\r\n?\r\n", nil, false},
	} {
		dst := make([][]byte, 1, 4) // stale contents must go
		got, ok := ArrayElems([]byte(tc.in), dst)
		if ok != tc.ok || (ok && fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want)) {
			t.Errorf("ArrayElems(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCommandArgs(t *testing.T) {
	for _, tc := range []struct {
		req  string
		want []string
	}{
		{"*1\r\n$4\r\nPING\r\n", []string{"PING"}},
		{"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", []string{"SET", "k", ""}},
		{"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n", []string{"GET", "a\r\nb"}},
		{"*2\r\n$3\r\nGET\r\n", nil},   // short
		{"*1\r\n$4\r\nPING\r\nx", nil}, // trailing bytes
		{"*1\r\n:4\r\n", nil},          // not a bulk
		{"*0\r\n", nil},                // no name
		{"$4\r\nPING\r\n", nil},        // not an array
		{"*1\r\n$5\r\nPING\r\n", nil},  // length past the end
		{"*1\r\n$-1\r\n", nil},         // null
	} {
		got, ok := CommandArgs([]byte(tc.req), nil)
		if ok != (tc.want != nil) {
			t.Errorf("CommandArgs(%q) ok = %v", tc.req, ok)
			continue
		}
		if !ok {
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("CommandArgs(%q) = %q; want %q", tc.req, got, tc.want)
			continue
		}
		for i := range got {
			if string(got[i]) != tc.want[i] {
				t.Errorf("CommandArgs(%q) = %q; want %q", tc.req, got, tc.want)
			}
		}
	}
}
