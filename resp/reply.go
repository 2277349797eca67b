package resp

import (
	"bytes"
	"fmt"
	"math"
)

// maxReplyBulk keeps offset arithmetic far from overflow; no real reply comes
// anywhere near it.
const maxReplyBulk = math.MaxInt64 / 4

// keptStack is the most elements of a deep stack that Reset keeps for reuse:
// one rare deep reply must not pin its stack for as long as the scanner lives.
const keptStack = 1024

// ReplyScanner finds where the first reply in a buffer ends, when that buffer
// grows by reads between calls. It frames every RESP2 and RESP3 type without
// interpreting any. It remembers how far it got, so a reply of any size costs
// time linear in its bytes however it is split, and it keeps the remaining
// element counts of open aggregates in an explicit stack rather than
// recursing. The zero value is ready to use; it does not allocate for replies
// nested up to 8 deep.
//
// It follows any depth, because Redis sends any depth: a Lua script that
// returns a table holding itself gets arrays nested some 8000 deep, then an
// error. Each level costs the stack 8 bytes, and the reply at least 4.
//
// An attribute ("|") and the reply it annotates count as one element, or one
// reply at top level. Streamed strings and aggregates ("$?", "*?") are refused:
// Redis never sends them.
type ReplyScanner struct {
	pos    int  // next byte to examine
	line   int  // first byte of the current header line, while inLine
	inLine bool //
	body   int  // offset where the current blob's "\r\n" must be, while inBody
	inBody bool //
	colon  int  // offset of the ':' that ends a verbatim string's format, while inBody; 0 for other blobs
	depth  int  // open aggregates
	top    [8]int64
	deep   []int64 // elements left in open aggregates beyond the first len(top)
}

// Scan returns the length of the complete reply that b starts with, or 0 if b
// holds only part of one. After 0, call it again with the same bytes plus more;
// after a length or an error, the scanner starts afresh on the next call. An
// error means b does not start with a well-formed RESP2 or RESP3 reply.
func (s *ReplyScanner) Scan(b []byte) (int, error) {
	for {
		if s.inBody {
			if len(b)-s.body < 2 {
				return 0, nil
			}
			if b[s.body] != '\r' || b[s.body+1] != '\n' {
				return s.fail("blob not followed by CRLF at offset %d", s.body)
			}
			if s.colon > 0 && b[s.colon] != ':' {
				return s.fail("verbatim string format not followed by ':' at offset %d", s.colon)
			}
			s.pos, s.inBody, s.colon = s.body+2, false, 0
			if s.elemDone() {
				return s.complete()
			}
			continue
		}
		if !s.inLine {
			if s.pos >= len(b) {
				return 0, nil
			}
			if replyKinds[b[s.pos]] == notReply {
				return s.fail("unexpected byte %q at offset %d", b[s.pos], s.pos)
			}
			s.line, s.inLine = s.pos, true
			s.pos++
		}
		j := bytes.IndexByte(b[s.pos:], '\n')
		if j < 0 {
			s.pos = len(b)
			return 0, nil
		}
		nl := s.pos + j
		if b[nl-1] != '\r' {
			return s.fail("line not terminated by CRLF at offset %d", nl)
		}
		content := b[s.line+1 : nl-1]
		typ := b[s.line]
		s.pos, s.inLine = nl+1, false
		switch replyKinds[typ] {
		case blobReply:
			n, ok := parseLL(content)
			if !ok || !blobLenOK(typ, n) {
				return s.failLength(typ, content)
			}
			if n >= 0 {
				s.body, s.inBody = s.pos+int(n), true
				if typ == '=' {
					s.colon = s.pos + 3
				}
				continue
			}
		case aggregateReply:
			n, ok := parseLL(content)
			if ok {
				n, ok = aggregateElems(typ, n)
			}
			if !ok {
				return s.failLength(typ, content)
			}
			if n > 0 {
				s.push(n)
				continue
			}
		default:
			if !scalarOK(typ, content) {
				return s.fail("invalid %s %q", replyTypes[typ], content)
			}
		}
		if s.elemDone() {
			return s.complete()
		}
	}
}

// Reset forgets a partly scanned reply, for when its buffer is abandoned.
func (s *ReplyScanner) Reset() {
	deep := s.deep[:0]
	if cap(deep) > keptStack {
		deep = nil
	}
	*s = ReplyScanner{deep: deep}
}

func (s *ReplyScanner) push(n int64) {
	if s.depth < len(s.top) {
		s.top[s.depth] = n
	} else {
		s.deep = append(s.deep[:s.depth-len(s.top)], n)
	}
	s.depth++
}

// elemDone counts one finished element against the open aggregates, closing
// every one it completes, and reports whether the whole reply is complete.
func (s *ReplyScanner) elemDone() bool {
	for s.depth > 0 {
		var left *int64
		if d := s.depth - 1; d < len(s.top) {
			left = &s.top[d]
		} else {
			left = &s.deep[d-len(s.top)]
		}
		if *left--; *left > 0 {
			return false
		}
		s.depth--
	}
	return true
}

func (s *ReplyScanner) complete() (int, error) {
	n := s.pos
	s.Reset()
	return n, nil
}

func (s *ReplyScanner) fail(format string, args ...any) (int, error) {
	s.Reset()
	return 0, fmt.Errorf("resp: malformed reply: "+format, args...)
}

func (s *ReplyScanner) failLength(typ byte, content []byte) (int, error) {
	if string(content) == "?" {
		return s.fail("streamed %s (%c?) not supported: Redis never sends one", replyTypes[typ], typ)
	}
	return s.fail("invalid %s length %q", replyTypes[typ], content)
}

// ReplyLen returns the length of the complete reply b starts with, or 0 if b
// holds only part of one.
func ReplyLen(b []byte) (int, error) {
	var s ReplyScanner
	return s.Scan(b)
}

// ArrayElems splits reply, one complete array reply and nothing more, whose
// elements are neither aggregates nor attributes (such as MGET's, in either
// protocol), into its elements' raw bytes, appended to dst[:0]. The elements
// share reply's memory. It reports false if reply is anything else, including
// a nil array and RESP3's other aggregates.
func ArrayElems(reply []byte, dst [][]byte) ([][]byte, bool) {
	dst = dst[:0]
	n, body, ok := ArrayBody(reply)
	if !ok {
		return dst, false
	}
	pos := len(reply) - len(body)
	var content []byte
	for ; n > 0; n-- {
		if pos >= len(reply) {
			return dst, false
		}
		start, typ := pos, reply[pos]
		kind := replyKinds[typ]
		if kind == notReply || kind == aggregateReply {
			return dst, false
		}
		if content, pos, ok = replyLine(reply, pos); !ok {
			return dst, false
		}
		switch kind {
		case blobReply:
			l, ok := parseLL(content)
			if !ok || !blobLenOK(typ, l) {
				return dst, false
			}
			if l >= 0 {
				if l > int64(len(reply)-pos-2) || reply[pos+int(l)] != '\r' || reply[pos+int(l)+1] != '\n' ||
					typ == '=' && reply[pos+3] != ':' {
					return dst, false
				}
				pos += int(l) + 2
			}
		default:
			if !scalarOK(typ, content) {
				return dst, false
			}
		}
		dst = append(dst, reply[start:pos])
	}
	return dst, pos == len(reply)
}

// replyLine returns the content of the CRLF-terminated line whose type byte is
// at b[at], and the offset just past it.
func replyLine(b []byte, at int) ([]byte, int, bool) {
	j := bytes.IndexByte(b[at+1:], '\n')
	if j < 0 {
		return nil, 0, false
	}
	nl := at + 1 + j
	if b[nl-1] != '\r' {
		return nil, 0, false
	}
	return b[at+1 : nl-1], nl + 1, true
}

// Kinds of reply, by how they are framed.
const (
	notReply       = iota
	lineReply      // one line
	blobReply      // a line with a length, then a body of that length and CRLF
	aggregateReply // a line with a count, then that many elements
)

// replyKinds classifies the first byte of a reply.
var replyKinds = [256]uint8{
	'+': lineReply, '-': lineReply, ':': lineReply, '_': lineReply, ',': lineReply, '#': lineReply, '(': lineReply,
	'$': blobReply, '!': blobReply, '=': blobReply,
	'*': aggregateReply, '%': aggregateReply, '~': aggregateReply, '>': aggregateReply, '|': aggregateReply,
}

// replyTypes names the types of reply by their first byte, for errors.
var replyTypes = [256]string{
	'+': "simple string", '-': "error", ':': "integer", '$': "bulk string", '*': "array",
	'_': "null", ',': "double", '#': "boolean", '(': "big number", '!': "blob error",
	'=': "verbatim string", '%': "map", '~': "set", '>': "push", '|': "attribute",
}

// blobLenOK reports whether n is a valid length for the body of a bulk
// string, blob error or verbatim string, or -1 for a null bulk string (the
// only one of the three with a null form).
func blobLenOK(typ byte, n int64) bool {
	switch {
	case n == -1:
		return typ == '$'
	case typ == '=':
		return n >= 4 && n <= maxReplyBulk // the 3-byte format and its ':', then the text
	}
	return n >= 0 && n <= maxReplyBulk
}

// aggregateElems returns how many elements follow the header of an aggregate
// of length n, counting each map or attribute pair as two. An attribute is
// followed by the reply it annotates, which it counts as one more element, so
// that the two complete together.
func aggregateElems(typ byte, n int64) (int64, bool) {
	switch {
	case n < -1:
		return 0, false
	case n == -1:
		return 0, typ == '*' // RESP2's null array
	case typ == '%':
		return 2 * n, n <= math.MaxInt64/2
	case typ == '|':
		return 2*n + 1, n <= math.MaxInt64/2
	}
	return n, true
}

// scalarOK reports whether content is valid for a one-line reply of type typ.
// Simple strings and errors may hold anything but a line end, and so may big
// numbers: Redis passes a Lua script's big_number text through unchecked.
func scalarOK(typ byte, content []byte) bool {
	switch typ {
	case ':':
		_, ok := parseLL(content)
		return ok
	case '_':
		return len(content) == 0
	case '#':
		return len(content) == 1 && (content[0] == 't' || content[0] == 'f')
	case ',':
		return validDouble(content)
	}
	return true
}

// validDouble reports whether s is a RESP3 double: a decimal number with an
// optional fraction and exponent (all that C's "%.17g", which Redis uses,
// prints for a finite number), or inf or nan, each with an optional sign
// (glibc prints "-nan" for a NaN whose sign bit is set).
func validDouble(s []byte) bool {
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	if string(s) == "inf" || string(s) == "nan" {
		return true
	}
	i := skipDigits(s, 0)
	if i == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		j := skipDigits(s, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '-' || s[i] == '+') {
			i++
		}
		j := skipDigits(s, i)
		if j == i {
			return false
		}
		i = j
	}
	return i == len(s)
}

// skipDigits returns the offset of the first byte at or after i in s that is
// not a decimal digit.
func skipDigits(s []byte, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// CommandArgs splits req, one complete command as clients send it (an array
// of bulk strings, as Guard leaves every command), into its arguments'
// contents, appended to dst[:0]. They share req's memory. It reports false if
// req is anything else.
func CommandArgs(req []byte, dst [][]byte) ([][]byte, bool) {
	dst = dst[:0]
	n, body, ok := ArrayBody(req)
	if !ok || n < 1 {
		return dst, false
	}
	pos := len(req) - len(body)
	var content []byte
	for ; n > 0; n-- {
		if pos >= len(req) || req[pos] != '$' {
			return dst, false
		}
		if content, pos, ok = replyLine(req, pos); !ok {
			return dst, false
		}
		l, ok := parseLL(content)
		if !ok || l < 0 || l > int64(len(req)-pos-2) || req[pos+int(l)] != '\r' || req[pos+int(l)+1] != '\n' {
			return dst, false
		}
		dst = append(dst, req[pos:pos+int(l)])
		pos += int(l) + 2
	}
	return dst, pos == len(req)
}

// Integer reads an integer reply (":12\r\n") and nothing more.
func Integer(reply []byte) (int64, bool) {
	if len(reply) == 0 || reply[0] != ':' {
		return 0, false
	}
	content, pos, ok := replyLine(reply, 0)
	if !ok || pos != len(reply) {
		return 0, false
	}
	return parseLL(content)
}

// ArrayBody splits an array reply into its element count and the bytes of
// its elements, unchecked; a nil array is not one.
func ArrayBody(reply []byte) (int, []byte, bool) {
	if len(reply) == 0 || reply[0] != '*' {
		return 0, nil, false
	}
	content, pos, ok := replyLine(reply, 0)
	if !ok {
		return 0, nil, false
	}
	n, ok := parseLL(content)
	if !ok || n < 0 {
		return 0, nil, false
	}
	return int(n), reply[pos:], true
}

// BulkLen reads the length of the bulk string b starts with (not a nil one).
func BulkLen(b []byte) (int, bool) {
	if len(b) == 0 || b[0] != '$' {
		return 0, false
	}
	content, _, ok := replyLine(b, 0)
	if !ok {
		return 0, false
	}
	n, ok := parseLL(content)
	return int(n), ok && n >= 0
}
