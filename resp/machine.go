package resp

import (
	"math"
	"strconv"
)

// Redis 7.0's fixed request limits (server.h, networking.c).
const (
	inlineMax     = 64 << 10 // PROTO_INLINE_MAX_SIZE: longest line without its terminator
	unauthMaxArgs = 10       // arguments allowed before AUTH
	unauthMaxBulk = 16 << 10 // argument bytes allowed before AUTH
	minArgBytes   = 6        // "$0\r\n\r\n": the smallest argument on the wire
)

// redconArgCost is what redcon spends per argument of an incomplete command each
// time it re-parses it (it starts over on every read): two ints of marks plus
// its counting loop. See guard.releasable.
const redconArgCost = 16

type mstate uint8

const (
	sIdle    mstate = iota // between commands
	sInline                // inside an inline line, before its '\n'
	sCount                 // inside "*<count>", before its '\r'
	sCountLF               // after the count's '\r': the next byte ends the line
	sBulkHdr               // inside "$<len>", before its '\r'
	sBulkLF                // after the length's '\r'
	sBody                  // inside an argument and its two trailing bytes
)

type event uint8

const (
	evNone   event = iota // everything fed was consumed
	evDrop                // a command Redis ignores just ended: drop its bytes
	evInline              // an inline command just ended: rewrite it
	evRefuse              // the current command breaks a limit: reason says which
	evUnauth              // the current command breaks a pre-auth limit, unless the client has authenticated by now
)

// machine follows Redis 7.0's request parser (processMultibulkBuffer and
// processInlineBuffer) as the bytes arrive, keeping only counters, so it never
// looks at a byte twice and never buffers. It skips argument bodies unread.
//
// Where Redis reads leniently it normalises the bytes in place for redcon: the
// byte after a header's '\r' and the two bytes after a body are skipped unread
// by Redis, so they become "\n" and "\r\n".
type machine struct {
	lim Limits
	st  mstate

	// The current line or header.
	line    int64    // bytes so far, without the terminator
	stalled bool     // a NUL hid the terminator from Redis's strchr: the line never ends
	first   byte     // a bulk header's first byte, which should be '$'
	num     [20]byte // the number after '*' or '$'; Redis rejects anything longer
	nlen    int      // bytes of the number so far, len(num)+1 once too long

	// The current command.
	cmdLen int64 // bytes so far
	body   int64 // of which argument bytes
	count  int64 // arguments announced
	args   int64 // arguments still to come
	rem    int64 // bytes left of the current argument plus its "\r\n"
	authOK bool  // pre-auth limits are lifted for this command

	reason string // why the last evRefuse or evUnauth
	silent bool   // the last evRefuse gets no reply, only a closed connection
}

func (m *machine) startLine() {
	m.line, m.stalled, m.nlen = 0, false, 0
}

// work bounds what redcon spends re-parsing the part of the current command it
// has been given: it walks every header byte and counts through every argument.
func (m *machine) work() int64 {
	return m.cmdLen - m.body + redconArgCost*m.count
}

// partialOK reports whether redcon may be given part of the current command:
// only a multibulk whose count is known and positive, so that nothing already
// given can turn out to be a command the guard has to drop or rewrite.
func (m *machine) partialOK() bool {
	return m.st >= sBulkHdr
}

func (m *machine) refuse(reason string) event {
	m.reason, m.silent = reason, false
	return evRefuse
}

func (m *machine) refuseSilently(reason string) event {
	m.reason, m.silent = reason, true
	return evRefuse
}

// feed consumes b until an event or its end and returns how many bytes it
// consumed. After evUnauth the byte that completed the header is left
// unconsumed, so that feeding it again, with authOK set, carries on.
func (m *machine) feed(b []byte) (int, event) {
	i := 0
	for i < len(b) {
		switch m.st {
		case sIdle:
			m.cmdLen, m.body, m.count, m.authOK = 0, 0, 0, false
			m.startLine()
			if b[i] == '*' {
				m.st = sCount
				m.line, m.cmdLen = 1, 1
				i++
			} else {
				m.st = sInline
			}

		case sInline:
			for i < len(b) {
				c := b[i]
				i++
				m.cmdLen++
				if c == '\n' && !m.stalled {
					m.st = sIdle
					return i, evInline
				}
				if c == 0 {
					m.stalled = true
				}
				if m.line++; m.line > inlineMax {
					return i, m.refuse("Protocol error: too big inline request")
				}
			}

		case sCount, sBulkHdr:
			if m.st == sBulkHdr && m.line == 0 {
				m.first = b[i]
			}
			if i = m.shortHeader(b, i); m.st == sCountLF || m.st == sBulkLF {
				continue
			}
			for i < len(b) {
				c := b[i]
				i++
				m.cmdLen++
				if c == '\r' && !m.stalled {
					m.st++ // to sCountLF or sBulkLF
					break
				}
				if c == 0 {
					m.stalled = true
				}
				if m.line > 0 {
					if m.nlen < len(m.num) {
						m.num[m.nlen] = c
					}
					if m.nlen <= len(m.num) {
						m.nlen++
					}
				}
				if m.line++; m.line > inlineMax {
					if m.st == sCount {
						return i, m.refuse("Protocol error: too big mbulk count string")
					}
					return i, m.refuse("Protocol error: too big bulk count string")
				}
			}

		case sCountLF:
			b[i] = '\n'
			n, ok := m.number()
			if !ok || n > math.MaxInt32 {
				return i, m.refuse("Protocol error: invalid multibulk length")
			}
			if n > unauthMaxArgs && !m.authOK {
				m.reason = "Protocol error: unauthenticated multibulk length"
				return i, evUnauth
			}
			i++
			m.cmdLen++
			if n <= 0 {
				m.st = sIdle
				return i, evDrop
			}
			if n > m.lim.MaxArgs {
				return i, m.refuse("Protocol error: invalid multibulk length")
			}
			if m.cmdLen+minArgBytes*n > m.lim.MaxQueryBuffer {
				return i, m.refuseSilently(m.queryBufferReason())
			}
			m.count, m.args = n, n
			m.st = sBulkHdr
			m.startLine()

		case sBulkLF:
			b[i] = '\n'
			if m.first != '$' {
				got := m.first
				if got == '\r' || got == '\n' {
					got = ' ' // Redis blanks line breaks in error messages
				}
				return i, m.refuse("Protocol error: expected '$', got '" + string([]byte{got}) + "'")
			}
			n, ok := m.number()
			if !ok || n < 0 || n > m.lim.MaxBulkLen {
				return i, m.refuse("Protocol error: invalid bulk length")
			}
			if n > unauthMaxBulk && !m.authOK {
				m.reason = "Protocol error: unauthenticated bulk length"
				return i, evUnauth
			}
			i++
			m.cmdLen++
			if m.cmdLen+n+2+minArgBytes*(m.args-1) > m.lim.MaxQueryBuffer {
				return i, m.refuseSilently(m.queryBufferReason())
			}
			m.rem = n + 2
			m.st = sBody

		case sBody:
			if m.rem > 2 {
				k := min(m.rem-2, int64(len(b)-i))
				i += int(k)
				m.rem -= k
				m.cmdLen += k
				m.body += k
			}
			for m.rem > 0 && i < len(b) {
				if m.rem == 2 {
					b[i] = '\r'
				} else {
					b[i] = '\n'
				}
				m.rem--
				m.cmdLen++
				i++
			}
			if m.rem == 0 {
				if m.args--; m.args == 0 {
					m.st = sIdle
				} else {
					m.st = sBulkHdr
					m.startLine()
				}
			}
		}
	}
	return i, evNone
}

// shortHeader consumes a fresh header at b[i:] in one step when it is short,
// all digits and complete up to its '\r', which is nearly always; otherwise it
// leaves it to the byte-by-byte loop.
func (m *machine) shortHeader(b []byte, i int) int {
	start := i
	switch {
	case m.st == sCount && m.line == 1:
	case m.st == sBulkHdr && m.line == 0 && b[i] != '\r' && b[i] != 0:
		start++ // the type byte
	default:
		return i
	}
	end := start
	for end < len(b) && end-start < len(m.num) && (b[end] >= '0' && b[end] <= '9' || b[end] == '-') {
		end++
	}
	if end == len(b) || b[end] != '\r' {
		return i
	}
	m.nlen = copy(m.num[:], b[start:end])
	m.line += int64(end - i)
	m.cmdLen += int64(end + 1 - i)
	m.st++ // to sCountLF or sBulkLF
	return end + 1
}

func (m *machine) number() (int64, bool) {
	if m.nlen > len(m.num) {
		return 0, false
	}
	return parseLL(m.num[:m.nlen])
}

func (m *machine) queryBufferReason() string {
	return "command cannot fit in the query buffer limit of " + strconv.FormatInt(m.lim.MaxQueryBuffer, 10) + " bytes"
}

// parseLL is Redis's string2ll: the strict decimal form Redis accepts in
// request headers (no '+', no leading zeros, no "-0", at most 20 characters).
func parseLL(s []byte) (int64, bool) {
	if len(s) == 0 || len(s) > 20 {
		return 0, false
	}
	if len(s) == 1 && s[0] == '0' {
		return 0, true
	}
	neg := s[0] == '-'
	if neg {
		s = s[1:]
		if len(s) == 0 {
			return 0, false
		}
	}
	if s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	var v uint64
	for k, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		// Up to 19 digits cannot overflow 64 bits.
		if k >= 19 && v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return int64(-v), true
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}
