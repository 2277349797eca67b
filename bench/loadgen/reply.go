package loadgen

import (
	"errors"
	"fmt"
	"io"
)

// replyKind is what the load generator needs to know about a reply: nothing of
// its content, only whether it was an error or carried nils (missing keys).
type replyKind uint8

const (
	replyOK replyKind = iota
	replyError
)

const (
	readBufSize  = 64 << 10
	maxLineLen   = 64 << 10 // simple strings, errors and length headers
	maxReplyNest = 32
)

var errProtocol = errors.New("RESP protocol error")

// replyReader reads RESP2 replies from a connection and skips their payloads
// without allocating. It is a benchmark tool's reader: it checks framing, not
// content.
type replyReader struct {
	rd   io.Reader
	buf  []byte
	r, w int // unread bytes are buf[r:w]
	// nils counts nil bulk strings and nil arrays seen at any depth since the
	// last reset: GET of a missing key, MGET elements that do not exist.
	nils int64
	// errLine is the text of the last top-level error reply, valid until the
	// next read.
	errLine []byte
}

func newReplyReader(rd io.Reader) *replyReader {
	return &replyReader{rd: rd, buf: make([]byte, readBufSize)}
}

// next reads one complete reply.
func (rr *replyReader) next() (replyKind, error) {
	line, err := rr.line()
	if err != nil {
		return replyOK, err
	}
	if line[0] == '-' {
		rr.errLine = line[1:]
		return replyError, nil
	}
	return replyOK, rr.rest(line, 0)
}

// rest consumes whatever follows a reply's header line.
func (rr *replyReader) rest(line []byte, depth int) error {
	switch line[0] {
	case '+', '-', ':':
		return nil
	case '$':
		n, err := parseLen(line[1:])
		if err != nil {
			return err
		}
		if n < 0 {
			rr.nils++
			return nil
		}
		return rr.skipBulk(n)
	case '*':
		n, err := parseLen(line[1:])
		if err != nil {
			return err
		}
		if n < 0 {
			rr.nils++
			return nil
		}
		if depth >= maxReplyNest {
			return fmt.Errorf("%w: arrays nested deeper than %d", errProtocol, maxReplyNest)
		}
		for i := int64(0); i < n; i++ {
			el, err := rr.line()
			if err != nil {
				return err
			}
			if err := rr.rest(el, depth+1); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("%w: unexpected reply type %q", errProtocol, line[0])
	}
}

// line returns the next CRLF-terminated line without its CRLF. The slice is
// valid until the next read.
func (rr *replyReader) line() ([]byte, error) {
	scanned := 0
	for {
		for i := rr.r + scanned; i < rr.w; i++ {
			if rr.buf[i] == '\n' {
				if i == rr.r || rr.buf[i-1] != '\r' {
					return nil, fmt.Errorf("%w: line not terminated by CRLF", errProtocol)
				}
				line := rr.buf[rr.r : i-1]
				rr.r = i + 1
				if len(line) == 0 {
					return nil, fmt.Errorf("%w: empty line", errProtocol)
				}
				return line, nil
			}
		}
		scanned = rr.w - rr.r
		if scanned >= maxLineLen {
			return nil, fmt.Errorf("%w: line longer than %d bytes", errProtocol, maxLineLen)
		}
		if err := rr.fill(); err != nil {
			return nil, err
		}
	}
}

// skipBulk discards a bulk payload of n bytes and its CRLF.
func (rr *replyReader) skipBulk(n int64) error {
	for n > 0 {
		if rr.r == rr.w {
			if err := rr.fill(); err != nil {
				return err
			}
		}
		take := int64(rr.w - rr.r)
		if take > n {
			take = n
		}
		rr.r += int(take)
		n -= take
	}
	for rr.w-rr.r < 2 {
		if err := rr.fill(); err != nil {
			return err
		}
	}
	if rr.buf[rr.r] != '\r' || rr.buf[rr.r+1] != '\n' {
		return fmt.Errorf("%w: bulk string not terminated by CRLF", errProtocol)
	}
	rr.r += 2
	return nil
}

// fill reads more bytes, keeping the unread ones.
func (rr *replyReader) fill() error {
	if rr.r == rr.w {
		rr.r, rr.w = 0, 0
	} else if rr.w == len(rr.buf) {
		// line caps unread lines below the buffer size, so r > 0 here.
		rr.w = copy(rr.buf, rr.buf[rr.r:rr.w])
		rr.r = 0
	}
	for range 100 {
		n, err := rr.rd.Read(rr.buf[rr.w:])
		rr.w += n
		if n > 0 {
			return nil
		}
		if err != nil {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return io.ErrNoProgress
}

// parseLen parses a RESP length: -1 or a non-negative decimal.
func parseLen(b []byte) (int64, error) {
	if len(b) == 2 && b[0] == '-' && b[1] == '1' {
		return -1, nil
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, fmt.Errorf("%w: bad length %q", errProtocol, b)
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: bad length %q", errProtocol, b)
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}
