package proxy

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/resp"
)

// The compatibility suite runs the same command scripts against a reference
// redis-server of its own and through the proxy (in front of another one), and
// compares every reply byte for byte. Scripts are lines of commands:
//
//	SET {p}k "a\x00b"        one command; {p} is the run's key prefix,
//	                         "..." a Go-quoted argument (binary safe)
//	@1 SUBSCRIBE ch =2       on connection 1, reading 2 replies (default 1)
//	@1 !read 1               read one more reply on connection 1 (a message)
//	raw "PING\r\n" =1         bytes sent as they are (inline commands)
//	SMEMBERS {p}s #sort      compare after a normalisation: #sort (array,
//	                         set or map elements), #scan (a SCAN reply's
//	                         elements), #ttl (an integer's sign), #any (the
//	                         reply's type), #hello (a HELLO reply but for its
//	                         id and version), #skip (nothing)
//	CLIENT LIST #any:3       the same, in the RESP3 run only (:2, RESP2's)
//	PUBLISH {p}c m =2 #only:3  a line of the RESP3 run only (:2, RESP2's)
//
// Each script runs twice, once per protocol: in the RESP3 run every connection
// starts with HELLO 3, on both sides, and the HELLO replies are compared as
// #hello. In each protocol it runs one command at a time and, if it uses one
// connection and no !read, also as one pipeline; all of them also run from
// several clients at once, each with its own prefix, in both protocols.

type compatLine struct {
	conn  int
	args  [][]byte // nil for !read and raw
	raw   []byte   // bytes sent as they are
	n     int      // replies to read
	norm  string
	proto int // the only protocol whose run norm applies to; 0 for both
	only  int // the only protocol whose run has the line; 0 for both
	input string
}

type compatScript struct {
	name  string
	lines []compatLine
}

func parseScript(t testing.TB, name, text string) compatScript {
	t.Helper()
	s := compatScript{name: name}
	for _, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "//") {
			continue
		}
		l := compatLine{n: 1, input: line}
		toks, err := splitCompat(line)
		if err != nil {
			t.Fatalf("script %s: %q: %v", name, line, err)
		}
		for len(toks) > 0 {
			last := toks[len(toks)-1]
			how, proto, _ := strings.Cut(last, ":")
			switch {
			case how == "#only" && (proto == "2" || proto == "3"):
				l.only, _ = strconv.Atoi(proto)
			case strings.HasPrefix(how, "#") && compatNorms[how[1:]] && (proto == "" || proto == "2" || proto == "3"):
				l.norm = how[1:]
				l.proto, _ = strconv.Atoi(proto)
			case strings.HasPrefix(last, "=") && len(last) > 1:
				l.n, _ = strconv.Atoi(last[1:])
			default:
				goto args
			}
			toks = toks[:len(toks)-1]
		}
	args:
		if strings.HasPrefix(toks[0], "@") {
			l.conn, _ = strconv.Atoi(toks[0][1:])
			toks = toks[1:]
		}
		switch toks[0] {
		case "!read":
			l.n, _ = strconv.Atoi(toks[1])
		case "raw":
			l.raw = []byte(toks[1])
		default:
			for _, tok := range toks {
				l.args = append(l.args, []byte(tok))
			}
		}
		s.lines = append(s.lines, l)
	}
	return s
}

// compatNorms are the normalisations a script line may ask for.
var compatNorms = map[string]bool{"sort": true, "scan": true, "ttl": true, "any": true, "hello": true, "skip": true}

// splitCompat splits on spaces; a token starting with '"' is Go-quoted.
func splitCompat(line string) ([]string, error) {
	var out []string
	for line = strings.TrimLeft(line, " "); line != ""; line = strings.TrimLeft(line, " ") {
		if line[0] == '"' {
			q, err := strconv.QuotedPrefix(line)
			if err != nil {
				return nil, err
			}
			s, _ := strconv.Unquote(q)
			out = append(out, s)
			line = line[len(q):]
			continue
		}
		end := strings.IndexByte(line, ' ')
		if end < 0 {
			end = len(line)
		}
		out = append(out, line[:end])
		line = line[end:]
	}
	return out, nil
}

func (s compatScript) pipelinable() bool {
	for _, l := range s.lines {
		if l.conn != 0 || (l.args == nil && l.raw == nil) {
			return false
		}
	}
	return true
}

// compatConn reads whole replies off a connection.
type compatConn struct {
	c   net.Conn
	buf []byte
}

func (cc *compatConn) read(n int) []string {
	var out []string
	deadline := time.Now().Add(5 * time.Second)
	tmp := make([]byte, 64<<10)
	for len(out) < n {
		if l, err := resp.ReplyLen(cc.buf); err == nil && l > 0 {
			out = append(out, string(cc.buf[:l]))
			cc.buf = cc.buf[l:]
			continue
		}
		_ = cc.c.SetReadDeadline(deadline)
		m, err := cc.c.Read(tmp)
		cc.buf = append(cc.buf, tmp[:m]...)
		if err != nil {
			out = append(out, fmt.Sprintf("<%v after %q>", shortErr(err), cc.buf))
			for len(out) < n {
				out = append(out, "<nothing>")
			}
		}
	}
	return out
}

// deadConn stands for a connection that could not be made.
type deadConn struct{ err error }

func (d deadConn) Read([]byte) (int, error)         { return 0, d.err }
func (d deadConn) Write([]byte) (int, error)        { return 0, d.err }
func (d deadConn) Close() error                     { return nil }
func (d deadConn) LocalAddr() net.Addr              { return nil }
func (d deadConn) RemoteAddr() net.Addr             { return nil }
func (d deadConn) SetDeadline(time.Time) error      { return nil }
func (d deadConn) SetReadDeadline(time.Time) error  { return nil }
func (d deadConn) SetWriteDeadline(time.Time) error { return nil }

func shortErr(err error) string {
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return "no reply within 5s"
	}
	return "connection closed"
}

func encodeCommand(args [][]byte) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n", len(a))
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

// compatRun is what one run of a script saw: the normalised replies, one
// entry per line, and in RESP3 each connection's HELLO 3 reply, as #hello.
type compatRun struct {
	replies []string
	hellos  map[int]string
}

// run runs s against addr in protocol proto, with {p} replaced by prefix.
// It may run on a goroutine of its own: trouble shows in the replies.
func (s compatScript) run(addr, prefix string, pipelined bool, proto int) compatRun {
	conns := map[int]*compatConn{}
	hellos := map[int]string{}
	conn := func(i int) *compatConn {
		if cc := conns[i]; cc != nil {
			return cc
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			c = deadConn{err}
		}
		conns[i] = &compatConn{c: c}
		if proto == 3 {
			_, _ = c.Write(encodeCommand([][]byte{[]byte("HELLO"), []byte("3")}))
			hellos[i] = normalize("hello", conns[i].read(1))
		}
		return conns[i]
	}
	defer func() {
		for _, cc := range conns {
			cc.c.Close()
		}
	}()
	req := func(l compatLine) []byte {
		if l.raw != nil {
			return bytes.ReplaceAll(l.raw, []byte("{p}"), []byte(prefix))
		}
		args := make([][]byte, len(l.args))
		for i, a := range l.args {
			args[i] = bytes.ReplaceAll(a, []byte("{p}"), []byte(prefix))
		}
		return encodeCommand(args)
	}
	out := make([]string, 0, len(s.lines))
	if pipelined {
		var all []byte
		total := 0
		for _, l := range s.lines {
			if l.in(proto) {
				all = append(all, req(l)...)
				total += l.n
			}
		}
		cc := conn(0)
		_, _ = cc.c.Write(all) // a failed write shows as missing replies
		replies := cc.read(total)
		for _, l := range s.lines {
			if !l.in(proto) {
				out = append(out, "")
				continue
			}
			out = append(out, normalize(l.normIn(proto), replies[:l.n]))
			replies = replies[l.n:]
		}
		return compatRun{out, hellos}
	}
	for _, l := range s.lines {
		if !l.in(proto) {
			out = append(out, "")
			continue
		}
		cc := conn(l.conn)
		if l.args != nil || l.raw != nil {
			_, _ = cc.c.Write(req(l))
		}
		out = append(out, normalize(l.normIn(proto), cc.read(l.n)))
	}
	return compatRun{out, hellos}
}

// in reports whether the line is part of a run of protocol proto.
func (l compatLine) in(proto int) bool { return l.only == 0 || l.only == proto }

// normIn is the line's normalisation in a run of protocol proto.
func (l compatLine) normIn(proto int) string {
	if l.proto != 0 && l.proto != proto {
		return ""
	}
	return l.norm
}

// compare runs s on both sides in protocol proto and reports every line whose
// replies differ.
func compare(t *testing.T, s compatScript, direct, proxied string, prefix string, pipelined bool, proto int) {
	t.Helper()
	var ref, prx compatRun
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ref = s.run(direct, prefix, pipelined, proto) }()
	prx = s.run(proxied, prefix, pipelined, proto)
	wg.Wait()
	mode := fmt.Sprintf("RESP%d, one by one", proto)
	if pipelined {
		mode = fmt.Sprintf("RESP%d, pipelined", proto)
	}
	for i, want := range ref.hellos {
		if got := prx.hellos[i]; want != got {
			t.Errorf("%s (%s), connection %d's HELLO 3:\n redis %q\n proxy %q", s.name, mode, i, want, got)
		}
	}
	want, got := ref.replies, prx.replies
	for i, l := range s.lines {
		if strings.Contains(want[i], "<no reply within") {
			t.Errorf("%s (%s), line %d %s: the reference Redis did not answer: the script is wrong", s.name, mode, i+1, l.input)
		}
		if want[i] != got[i] {
			t.Errorf("%s (%s), line %d %s:\n redis %q\n proxy %q", s.name, mode, i+1, l.input, want[i], got[i])
		}
	}
}

// normalize turns replies into what must match: themselves, or what a
// normalisation keeps of them.
func normalize(how string, replies []string) string {
	if how == "" {
		return strings.Join(replies, "")
	}
	var b strings.Builder
	for _, r := range replies {
		if strings.HasPrefix(r, "<") { // the harness's own note: no reply
			b.WriteString(r)
			continue
		}
		switch how {
		case "skip":
		case "hello":
			b.WriteString(helloID.ReplaceAllString(r, "${1}<id>\r\n"))
		case "any":
			b.WriteString(r[:1])
		case "ttl":
			n, err := strconv.ParseInt(strings.TrimSpace(r[1:]), 10, 64)
			if r[0] != ':' || err != nil {
				b.WriteString(r)
			} else {
				fmt.Fprintf(&b, ":sign%d", max(-1, min(n, 1)))
			}
		case "sort":
			b.WriteString(sortedArray(r))
		case "scan":
			elems, ok := splitReply(r)
			if !ok || len(elems) != 2 {
				b.WriteString(r)
				continue
			}
			b.WriteString(elems[0] + sortedArray(elems[1]))
		default:
			panic("unknown normalisation " + how)
		}
	}
	return b.String()
}

// helloID is the field of a HELLO reply that differs between the proxy and
// Redis: the connection's id. The version is the upstream's, and both sides
// run the same redis-server.
var helloID = regexp.MustCompile(`(\$2\r\nid\r\n):\d+\r\n`)

// sortedArray sorts the elements of an array or set reply, or the pairs of a
// map reply.
func sortedArray(r string) string {
	elems, ok := splitReply(r)
	if !ok {
		return r
	}
	if r[0] == '%' {
		pairs := make([]string, 0, len(elems)/2)
		for i := 0; i+1 < len(elems); i += 2 {
			pairs = append(pairs, elems[i]+elems[i+1])
		}
		elems = pairs
	}
	sort.Strings(elems)
	return fmt.Sprintf("%c%d\r\n%s", r[0], len(elems), strings.Join(elems, ""))
}

// splitReply splits an array, set or map reply into its elements' encodings
// (a map's keys and values alike).
func splitReply(r string) ([]string, bool) {
	if len(r) == 0 || r[0] != '*' && r[0] != '~' && r[0] != '%' {
		return nil, false
	}
	nl := strings.IndexByte(r, '\n')
	n, err := strconv.Atoi(r[1 : nl-1])
	if err != nil || n < 0 {
		return nil, false
	}
	if r[0] == '%' {
		n *= 2
	}
	rest := []byte(r[nl+1:])
	var out []string
	for i := 0; i < n; i++ {
		l, err := resp.ReplyLen(rest)
		if err != nil || l == 0 {
			return nil, false
		}
		out = append(out, string(rest[:l]))
		rest = rest[l:]
	}
	return out, true
}

// deaf passes on every invalidation but the per-key ones of notifications:
// nothing writes behind the suite's back, so the proxy's own write path alone
// must keep the L1 coherent, rather than a notification that often arrives
// before the next read.
type deaf struct{ invalidation.Target }

func (deaf) Invalidate(int, []byte)   {}
func (deaf) InvalidateEveryDB([]byte) {}

// compatEnv is a proxy and a reference Redis with the same configuration.
type compatEnv struct {
	e     *env
	proxy string // the proxy's address
	ref   *redistest.Server
	// prefix turns a run's key prefix into the one its keys get: itself,
	// or, in front of a cluster, a hash tag that keeps a run's keys in one
	// slot.
	prefix func(string) string
}

func startCompat(t *testing.T, o envOptions, ref redistest.Options) *compatEnv {
	t.Helper()
	o.canaryInterval = -1 // the canary's keys would show in KEYS and DBSIZE
	o.wrapTarget = func(t invalidation.Target) invalidation.Target { return deaf{t} }
	e := startEnv(t, o)
	e.waitSubscribed()
	return &compatEnv{e: e, proxy: e.addr, ref: redistest.Start(t, ref), prefix: func(p string) string { return p }}
}

func (ce *compatEnv) check(t *testing.T, scripts []compatScript) {
	t.Helper()
	for _, proto := range []int{2, 3} {
		for i, s := range scripts {
			compare(t, s, ce.ref.Addr(), ce.proxy, ce.prefix(fmt.Sprintf("one%d_%d_", proto, i)), false, proto)
			if s.pipelinable() {
				compare(t, s, ce.ref.Addr(), ce.proxy, ce.prefix(fmt.Sprintf("pipe%d_%d_", proto, i)), true, proto)
			}
		}
	}
}

// checkConcurrently runs every script from several clients at once, each
// with its own prefix, on both sides at the same time: one in two pipelines
// what it can, and they take turns at the protocols (clients 0 and 1 speak
// RESP2, 2 and 3 RESP3, and so on).
func (ce *compatEnv) checkConcurrently(t *testing.T, scripts []compatScript, clients int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			proto := 2 + i/2%2
			for j, s := range scripts {
				compare(t, s, ce.ref.Addr(), ce.proxy, ce.prefix(fmt.Sprintf("c%d_%d_", i, j)), s.pipelinable() && i%2 == 1, proto)
			}
		}(i)
	}
	wg.Wait()
}

func scripts(t testing.TB, named map[string]string) []compatScript {
	var names []string
	for n := range named {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []compatScript
	for _, n := range names {
		out = append(out, parseScript(t, n, named[n]))
	}
	return out
}
