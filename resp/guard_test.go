package resp

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/redcon"
)

// The frame that makes redcon v1.6.2 index past its buffer and panic.
const killer = "*1\r\n$9223372036854775807\r\n"

func cmd(args ...string) string {
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	return fmt.Sprintf("cmd %q", b)
}

func refusal(msg string) string {
	return "reply " + strconv.Quote("-ERR Protocol error: "+msg+"\r\n")
}

func mbulk(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

const (
	eof     = "end eof"
	refused = "end refused"
)

type guardCase struct {
	name string
	in   string
	auth bool // the client must AUTH to lift the pre-auth limits
	lim  Limits
	want []string
}

var guardCases = []guardCase{
	{name: "plain pipeline", in: mbulk("SET", "k", "v") + mbulk("GET", "k"), want: []string{cmd("SET", "k", "v"), cmd("GET", "k"), eof}},
	{name: "killer frame", in: killer, want: []string{refusal("invalid bulk length"), refused}},
	{name: "replies before the bad frame stay first", in: mbulk("PING") + "ECHO a\r\n" + mbulk("GET", "k") + killer + mbulk("PING"),
		want: []string{cmd("PING"), cmd("ECHO", "a"), cmd("GET", "k"), refusal("invalid bulk length"), refused}},
	{name: "bad frame after a partial one", in: "*2\r\n$3\r\nGET\r\n$-1\r\n", want: []string{refusal("invalid bulk length"), refused}},

	// Multibulk counts.
	{name: "count overflows int64", in: "*9223372036854775808\r\n", want: []string{refusal("invalid multibulk length"), refused}},
	{name: "count above INT_MAX", in: "*2147483648\r\n", want: []string{refusal("invalid multibulk length"), refused}},
	{name: "count above MaxArgs", in: "*1048577\r\n", want: []string{refusal("invalid multibulk length"), refused}},
	{name: "count at MaxArgs waits", in: "*1048576\r\n$1\r\nx\r\n", want: []string{eof}},
	{name: "INT_MAX count cannot fit the query buffer", in: "*2147483647\r\n", lim: Limits{MaxArgs: math.MaxInt32}, want: []string{refused}},
	{name: "count with plus", in: "*+1\r\n", want: []string{refusal("invalid multibulk length"), refused}},
	{name: "count with leading zero", in: "*01\r\n", want: []string{refusal("invalid multibulk length"), refused}},
	{name: "count minus zero", in: "*-0\r\n", want: []string{refusal("invalid multibulk length"), refused}},
	{name: "empty count", in: "*\r\n", want: []string{refusal("invalid multibulk length"), refused}},
	{name: "count of 21 digits", in: "*000000000000000000001\r\n", want: []string{refusal("invalid multibulk length"), refused}},
	{name: "LF without CR in count", in: "*1\n$4\r\nPING\r\n", want: []string{refusal("invalid multibulk length"), refused}},
	{name: "count line too big", in: "*" + strings.Repeat("1", inlineMax), want: []string{refusal("too big mbulk count string"), refused}},
	{name: "count line at the limit waits", in: "*" + strings.Repeat("1", inlineMax-1), want: []string{eof}},
	{name: "empty and negative multibulks are ignored", in: "*0\r\n*-1\r\n*-9223372036854775808\r\n" + mbulk("PING") + "*0\r\n",
		want: []string{cmd("PING"), eof}},

	// Bulk lengths.
	{name: "bulk above MaxBulkLen", in: "*1\r\n$536870913\r\n", want: []string{refusal("invalid bulk length"), refused}},
	{name: "bulk at MaxBulkLen waits", in: "*1\r\n$536870912\r\n", want: []string{eof}},
	{name: "nil bulk in a request", in: "*1\r\n$-1\r\n", want: []string{refusal("invalid bulk length"), refused}},
	{name: "bulk with plus", in: "*1\r\n$+4\r\nPING\r\n", want: []string{refusal("invalid bulk length"), refused}},
	{name: "bulk with leading zero", in: "*1\r\n$04\r\nPING\r\n", want: []string{refusal("invalid bulk length"), refused}},
	{name: "bulk not a number", in: "*1\r\n$4x\r\nPING\r\n", want: []string{refusal("invalid bulk length"), refused}},
	{name: "LF without CR in bulk header", in: "*1\r\n$4\nPING\r\n", want: []string{refusal("invalid bulk length"), refused}},
	{name: "bulk line too big", in: "*1\r\n$" + strings.Repeat("1", inlineMax), want: []string{refusal("too big bulk count string"), refused}},
	{name: "bulk line too big before its type is checked", in: "*1\r\nX" + strings.Repeat("1", inlineMax), want: []string{refusal("too big bulk count string"), refused}},
	{name: "expected dollar", in: "*1\r\n:1\r\n", want: []string{refusal("expected '$', got ':'"), refused}},
	{name: "expected dollar got CR", in: "*1\r\n\r\n", want: []string{refusal("expected '$', got ' '"), refused}},
	{name: "expected dollar got LF", in: "*1\r\n\n$4\r\n", want: []string{refusal("expected '$', got ' '"), refused}},
	{name: "expected dollar got a high byte", in: "*1\r\n\xff3\r\n", want: []string{refusal("expected '$', got '\xff'"), refused}},
	{name: "command that cannot fit the query buffer", in: "*2\r\n$4\r\nECHO\r\n$1048576\r\n",
		lim: Limits{MaxBulkLen: 1 << 20, MaxQueryBuffer: 1 << 20}, want: []string{refused}},

	// What Redis reads leniently.
	{name: "any byte after a header CR", in: "*1\rX$4\r_PING\r\n", want: []string{cmd("PING"), eof}},
	{name: "any two bytes after a body", in: "*1\r\n$4\r\nPINGxy" + mbulk("PING"), want: []string{cmd("PING"), cmd("PING"), eof}},
	{name: "NUL hides the header end", in: "*1\r\n$4\x00\r\nPING\r\n" + mbulk("PING"), want: []string{eof}},
	{name: "NUL header grows too big", in: "*1\x00\r\n" + strings.Repeat("x", inlineMax), want: []string{refusal("too big mbulk count string"), refused}},

	// Inline commands.
	{name: "inline", in: "PING\r\nECHO hello\nSET k v\r\n", want: []string{cmd("PING"), cmd("ECHO", "hello"), cmd("SET", "k", "v"), eof}},
	{name: "blank inline lines are ignored", in: "\r\n\n  \t \r\n" + mbulk("PING") + "\n", want: []string{cmd("PING"), eof}},
	{name: "inline quoting", in: "ECHO \"a\\x41\\tb\\\"\" 'c\\'d\\n' a\"b\" \"\"\r\n",
		want: []string{cmd("ECHO", "aA\tb\"", "c'd\\n", "ab", ""), eof}},
	{name: "inline separators", in: "ECHO\ta\vb\x0bc\rd  e\r\n", want: []string{cmd("ECHO", "a\vb\vc", "d", "e"), eof}},
	{name: "inline runs of spaces", in: "ECHO" + strings.Repeat(" ", 60000) + "x\r\n", want: []string{cmd("ECHO", "x"), eof}},
	{name: "inline at the size limit", in: strings.Repeat("x", inlineMax-1) + "\r\n", want: []string{cmd(strings.Repeat("x", inlineMax-1)), eof}},
	{name: "inline too big", in: strings.Repeat("x", inlineMax+1), want: []string{refusal("too big inline request"), refused}},
	{name: "inline with NUL never ends", in: "PI\x00NG\r\n" + mbulk("PING"), want: []string{eof}},
	{name: "unbalanced double quote", in: "PING\r\nECHO \"a\r\n", want: []string{cmd("PING"), refusal("unbalanced quotes in request"), refused}},
	{name: "escaped closing quote", in: "ECHO \"abc\\\"\r\n", want: []string{refusal("unbalanced quotes in request"), refused}},
	{name: "text after a closing quote", in: "ECHO \"a\"b\r\n", want: []string{refusal("unbalanced quotes in request"), refused}},
	{name: "unbalanced single quote", in: "ECHO 'a\r\n", want: []string{refusal("unbalanced quotes in request"), refused}},

	// Before AUTH.
	{name: "too many args before auth", in: "*11\r\n", auth: true, want: []string{refusal("unauthenticated multibulk length"), refused}},
	{name: "ten args before auth", in: mbulk("a", "b", "c", "d", "e", "f", "g", "h", "i", "j"), auth: true,
		want: []string{cmd("a", "b", "c", "d", "e", "f", "g", "h", "i", "j"), eof}},
	{name: "negative count before auth is ignored", in: "*-1\r\n" + mbulk("PING"), auth: true, want: []string{cmd("PING"), eof}},
	{name: "big bulk before auth", in: "*1\r\n$16385\r\n", auth: true, want: []string{refusal("unauthenticated bulk length"), refused}},
	{name: "bulk at the pre-auth limit", in: mbulk("ECHO", strings.Repeat("v", unauthMaxBulk)), auth: true,
		want: []string{cmd("ECHO", strings.Repeat("v", unauthMaxBulk)), eof}},
	{name: "invalid count before auth is invalid", in: "*2147483648\r\n", auth: true, want: []string{refusal("invalid multibulk length"), refused}},
	{name: "AUTH pipelined ahead lifts the limits", in: mbulk("AUTH", "pw") + mbulk("ECHO", strings.Repeat("v", 20000)) + mbulk("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"),
		auth: true, want: []string{cmd("AUTH", "pw"), cmd("ECHO", strings.Repeat("v", 20000)), cmd("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"), eof}},
	{name: "commands before an unauthenticated frame are answered", in: mbulk("PING") + mbulk("PING") + "*11\r\n", auth: true,
		want: []string{cmd("PING"), cmd("PING"), refusal("unauthenticated multibulk length"), refused}},
	{name: "long inline before auth is fine", in: "ECHO " + strings.Repeat("v", 20000) + "\r\n", auth: true, want: []string{cmd("ECHO", strings.Repeat("v", 20000)), eof}},
	{name: "authenticated big bulk", in: mbulk("ECHO", strings.Repeat("v", 20000)), want: []string{cmd("ECHO", strings.Repeat("v", 20000)), eof}},
}

// TestGuard runs every case whole, against the reference parser, and split at
// every byte boundary (or at a spread of them, for long inputs): the outcome
// must not depend on how the input arrives.
func TestGuard(t *testing.T) {
	t.Parallel()
	for _, tc := range guardCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := []byte(tc.in)
			if got := drive(split(in), tc.lim, tc.auth); !slices.Equal(got, tc.want) {
				t.Fatalf("got  %.300q\nwant %.300q", got, tc.want)
			}
			if ref := reference(in, tc.lim, tc.auth); !slices.Equal(ref, tc.want) {
				t.Fatalf("reference disagrees with the case:\n ref  %.300q\n want %.300q", ref, tc.want)
			}
			var cutSets [][]int
			if len(in) <= 1024 {
				var every []int
				for i := 1; i < len(in); i++ {
					cutSets = append(cutSets, []int{i})
					every = append(every, i)
				}
				cutSets = append(cutSets, every)
			} else {
				var spread []int
				for i := 1; i < len(in); i += 4093 {
					spread = append(spread, i)
				}
				cutSets = append(cutSets, []int{1}, []int{len(in) / 2}, []int{len(in) - 1}, spread)
			}
			for _, cuts := range cutSets {
				if got := drive(split(in, cuts...), tc.lim, tc.auth); !slices.Equal(got, tc.want) {
					t.Fatalf("cut at %v:\n got  %.300q\n want %.300q", cuts, got, tc.want)
				}
				if got := driveReader(split(in, cuts...), tc.lim, tc.auth); !slices.Equal(got, tc.want) {
					t.Fatalf("through CommandReader, cut at %v:\n got  %.300q\n want %.300q", cuts, got, tc.want)
				}
			}
		})
	}
}

// TestGuardPassesBigPipelines checks that an authenticated client's pipeline
// of commands over the pre-auth limits is passed on whole, as one batch, not
// a command per read.
func TestGuardPassesBigPipelines(t *testing.T) {
	t.Parallel()
	keys := []string{"MGET"}
	for i := range 10 {
		keys = append(keys, fmt.Sprintf("key:%d", i))
	}
	in := strings.Repeat(mbulk(keys...), 16)
	for _, authed := range []func() bool{nil, func() bool { return true }} {
		g := Guard(&chunkConn{chunks: split([]byte(in)), log: new([]string)}, Limits{}, authed)
		p := make([]byte, 64<<10)
		if n, err := g.Read(p); n != len(in) || err != nil {
			t.Errorf("Read = %d, %v; want the whole pipeline of %d bytes", n, err, len(in))
		}
	}
}

// TestGuardHoldsManyArgs checks that a command with many small arguments
// reaches redcon whole rather than in pieces it would re-parse each time.
func TestGuardHoldsManyArgs(t *testing.T) {
	t.Parallel()
	args := make([]string, 100000)
	for i := range args {
		args[i] = "k"
	}
	in := []byte(mbulk(args...))
	var cuts []int
	for i := 4096; i < len(in); i += 4096 {
		cuts = append(cuts, i)
	}
	conn := &chunkConn{chunks: split(in, cuts...), log: new([]string)}
	g := Guard(conn, Limits{}, nil)
	p := make([]byte, 64<<10)
	for passed := 0; passed < len(in); {
		n, err := g.Read(p)
		if err != nil {
			t.Fatalf("Read after %d bytes: %v", passed, err)
		}
		if len(conn.chunks) > 0 {
			t.Fatalf("%d bytes passed on with %d chunks still to come", n, len(conn.chunks))
		}
		passed += n
	}
}

// TestGuardStreamsBigArgs checks that a large argument is passed on as it
// arrives instead of piling up in the guard.
func TestGuardStreamsBigArgs(t *testing.T) {
	t.Parallel()
	in := []byte(mbulk("SET", "k", strings.Repeat("v", 4<<20)))
	var cuts []int
	for i := 4096; i < len(in); i += 4096 {
		cuts = append(cuts, i)
	}
	conn := &chunkConn{chunks: split(in, cuts...), log: new([]string)}
	g := Guard(conn, Limits{}, nil).(*guard)
	p := make([]byte, 16<<10)
	var out []byte
	for len(out) < len(in) {
		n, err := g.Read(p)
		if err != nil {
			t.Fatalf("Read after %d bytes: %v", len(out), err)
		}
		out = append(out, p[:n]...)
		if held := g.w - g.r; held > 4096 {
			t.Fatalf("holding %d bytes after passing on %d", held, len(out))
		}
	}
	if string(out) != string(in) {
		t.Fatal("the command was altered")
	}
}

func TestParseLL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"1", 1, true}, {"-1", -1, true}, {"10", 10, true},
		{"9223372036854775807", math.MaxInt64, true}, {"-9223372036854775808", math.MinInt64, true},
		{"9223372036854775808", 0, false}, {"-9223372036854775809", 0, false},
		{"18446744073709551616", 0, false}, {"99999999999999999999", 0, false},
		{"", 0, false}, {"-", 0, false}, {"+1", 0, false}, {"01", 0, false}, {"-0", 0, false},
		{"00", 0, false}, {"1 ", 0, false}, {" 1", 0, false}, {"1x", 0, false},
		{"100000000000000000000", 0, false},
	} {
		if got, ok := parseLL([]byte(tc.in)); got != tc.want || ok != tc.ok {
			t.Errorf("parseLL(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	d := DefaultLimits()
	if d.MaxBulkLen != 512<<20 || d.MaxQueryBuffer != 1<<30 || d.MaxArgs != 1<<20 {
		t.Fatalf("DefaultLimits() = %+v", d)
	}
	if err := (Limits{}).Validate(); err != nil {
		t.Fatalf("zero Limits: %v", err)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("DefaultLimits: %v", err)
	}
	for _, tc := range []struct {
		lim   Limits
		field string
	}{
		{Limits{MaxBulkLen: 1<<20 - 1}, "MaxBulkLen"},
		{Limits{MaxBulkLen: -1}, "MaxBulkLen"},
		{Limits{MaxBulkLen: 2 << 30}, "MaxBulkLen"},
		{Limits{MaxQueryBuffer: 1<<20 - 1, MaxBulkLen: 1 << 20}, "MaxQueryBuffer"},
		{Limits{MaxQueryBuffer: 1<<40 + 1}, "MaxQueryBuffer"},
		{Limits{MaxArgs: 1023}, "MaxArgs"},
		{Limits{MaxArgs: math.MaxInt32 + 1}, "MaxArgs"},
	} {
		err := tc.lim.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate(%+v) = %v; want an error naming %s", tc.lim, err, tc.field)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("Guard accepted invalid limits")
		}
	}()
	Guard(&chunkConn{log: new([]string)}, Limits{MaxArgs: 1}, nil)
}

// TestRedconNeedsGuard pins why the guard exists: redcon's own parser panics
// on the killer frame. Should an upgrade fix that, its spin and unbounded
// buffering still need checking before the guard can shrink.
func TestRedconNeedsGuard(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("redcon parsed the killer frame without panicking")
		}
	}()
	_, _ = redcon.Parse([]byte(killer))
}
