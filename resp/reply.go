package resp

import (
	"bytes"
	"fmt"
	"math"
)

// maxReplyDepth bounds how deeply reply arrays may nest. Redis's own replies
// nest a handful of levels (and hiredis long refused more than seven); the bound
// keeps a broken or hostile upstream from driving anything that recurses over
// replies, such as a client library, arbitrarily deep.
const maxReplyDepth = 1024

// maxReplyBulk keeps offset arithmetic far from overflow; no real reply comes
// anywhere near it.
const maxReplyBulk = math.MaxInt64 / 4

// ReplyScanner finds where the first RESP2 reply in a buffer ends, when that
// buffer grows by reads between calls. It remembers how far it got, so a reply
// of any size costs time linear in its bytes however it is split, and it keeps
// the remaining element counts of open arrays in an explicit stack rather than
// recursing. The zero value is ready to use; it does not allocate for replies
// nested up to 8 deep.
type ReplyScanner struct {
	pos    int  // next byte to examine
	line   int  // first byte of the current header line, while inLine
	inLine bool //
	body   int  // offset where the current bulk string's "\r\n" must be, while inBody
	inBody bool //
	depth  int  // open arrays
	top    [8]int64
	deep   []int64 // remaining elements of open arrays beyond the first len(top)
}

// Scan returns the length of the complete reply that b starts with, or 0 if b
// holds only part of one. After 0, call it again with the same bytes plus more;
// after a length or an error, the scanner starts afresh on the next call. An
// error means b does not start with a well-formed RESP2 reply.
func (s *ReplyScanner) Scan(b []byte) (int, error) {
	for {
		if s.inBody {
			if len(b)-s.body < 2 {
				return 0, nil
			}
			if b[s.body] != '\r' || b[s.body+1] != '\n' {
				return s.fail("bulk string not followed by CRLF at offset %d", s.body)
			}
			s.pos, s.inBody = s.body+2, false
			if s.elemDone() {
				return s.complete()
			}
			continue
		}
		if !s.inLine {
			if s.pos >= len(b) {
				return 0, nil
			}
			switch b[s.pos] {
			case '+', '-', ':', '$', '*':
			default:
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
		switch typ {
		case ':':
			if _, ok := parseLL(content); !ok {
				return s.fail("invalid integer %q", content)
			}
		case '$':
			n, ok := parseLL(content)
			if !ok || n < -1 || n > maxReplyBulk {
				return s.fail("invalid bulk length %q", content)
			}
			if n >= 0 {
				s.body, s.inBody = s.pos+int(n), true
				continue
			}
		case '*':
			n, ok := parseLL(content)
			if !ok || n < -1 {
				return s.fail("invalid array length %q", content)
			}
			if n > 0 {
				if s.depth == maxReplyDepth {
					return s.fail("arrays nested deeper than %d", maxReplyDepth)
				}
				s.push(n)
				continue
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

// elemDone counts one finished element against the open arrays, closing every
// array it completes, and reports whether the whole reply is complete.
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

// ReplyLen returns the length of the complete reply b starts with, or 0 if b
// holds only part of one.
func ReplyLen(b []byte) (int, error) {
	var s ReplyScanner
	return s.Scan(b)
}

// ArrayElems splits reply, one complete array reply and nothing more, whose
// elements are not arrays (such as MGET's), into its elements' raw bytes,
// appended to dst[:0]. The elements share reply's memory. It reports false if
// reply is anything else, including a nil array.
func ArrayElems(reply []byte, dst [][]byte) ([][]byte, bool) {
	dst = dst[:0]
	if len(reply) == 0 || reply[0] != '*' {
		return dst, false
	}
	content, pos, ok := replyLine(reply, 0)
	if !ok {
		return dst, false
	}
	n, ok := parseLL(content)
	if !ok || n < 0 {
		return dst, false
	}
	for ; n > 0; n-- {
		if pos >= len(reply) {
			return dst, false
		}
		start := pos
		switch reply[pos] {
		case '+', '-':
			if _, pos, ok = replyLine(reply, pos); !ok {
				return dst, false
			}
		case ':':
			if content, pos, ok = replyLine(reply, pos); !ok {
				return dst, false
			}
			if _, ok := parseLL(content); !ok {
				return dst, false
			}
		case '$':
			if content, pos, ok = replyLine(reply, pos); !ok {
				return dst, false
			}
			l, ok := parseLL(content)
			if !ok || l < -1 {
				return dst, false
			}
			if l >= 0 {
				if l > int64(len(reply)-pos-2) || reply[pos+int(l)] != '\r' || reply[pos+int(l)+1] != '\n' {
					return dst, false
				}
				pos += int(l) + 2
			}
		default:
			return dst, false
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
