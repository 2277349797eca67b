package resp

import (
	"fmt"
	"io"
	"net"
	"time"
)

const (
	// A held tail up to this size is moved into the caller's buffer so that
	// the next read lands there directly instead of in the hold buffer.
	smallTail = 4 << 10
	// Reads into the hold buffer ask for at least this much.
	minRead = 16 << 10
	// An empty hold or rewrite buffer larger than this is given back.
	maxIdleBuf = 64 << 10
	// How long the refusal reply may take to write.
	refusalWriteTimeout = time.Second
)

// Guard wraps an accepted client connection so that its Read passes input on
// (to redcon) only after every request header in it has been checked against
// lim and Redis 7.0's fixed limits. Write, Close and the rest go to c.
//
// When a command breaks a limit, Read passes on everything before it; on the
// following Read, by which time redcon has answered and flushed those commands,
// it writes Redis's error reply straight to c and returns an error wrapping
// ErrRefused, and redcon closes the connection. A command over MaxQueryBuffer
// gets no reply, as in Redis.
//
// Input Redis ignores or reads leniently is rewritten into plain multibulk:
// empty and negative multibulks and blank inline lines are dropped, inline
// commands are split the way Redis splits them, and the bytes Redis skips
// unread after a header's '\r' and after an argument become "\n" and "\r\n".
// So redcon only ever sees headers it parses correctly, and never re-parses an
// incomplete command enough to cost more than the bytes it is given.
//
// authenticated reports whether the client has authenticated; nil means it
// always has. It is asked only when a command exceeds a pre-auth limit (more
// than 10 arguments or one over 16 KiB), and a "no" is final only once every
// command before that one has been handled, so an AUTH pipelined ahead of a big
// command counts, as in Redis; a "yes" lets the command through at once. It
// runs on the reading goroutine.
//
// Read must not be called concurrently with itself. Guard panics if lim fails
// Validate.
func Guard(c net.Conn, lim Limits, authenticated func() bool) net.Conn {
	if err := lim.Validate(); err != nil {
		panic(err)
	}
	return &guard{Conn: c, authenticated: authenticated, m: machine{lim: lim.withDefaults()}}
}

type guard struct {
	net.Conn
	authenticated func() bool
	m             machine

	// buf[r:w] is input read from Conn and not yet passed on or dropped;
	// buf[r:s] has been fed to m. buf[r:ready] may be passed on now. After it,
	// skip bytes are dropped and out[outPos:] is passed on in their place.
	// buf is hold, except inside readDirect, where it is the caller's buffer.
	buf, hold   []byte
	r, s, w     int
	ready, skip int
	out         []byte
	outPos      int

	// pause: a command broke a pre-auth limit, and the commands before it
	// must be handled before asking whether the client has authenticated.
	pause bool

	arena []byte // inline arguments being split
	ends  []int

	rerr    error  // Conn's read error, returned once what came before it is passed on
	fail    error  // why the input was refused
	reply   string // what to tell the client on refusal; empty for nothing
	refused bool   // the refusal has been delivered
}

func (g *guard) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if g.r < g.ready {
			n := copy(p, g.buf[g.r:g.ready])
			g.r += n
			g.tidy()
			return n, nil
		}
		if g.skip > 0 {
			g.r += g.skip
			g.ready, g.skip = g.r, 0
			g.tidy()
		}
		if g.outPos < len(g.out) {
			n := copy(p, g.out[g.outPos:])
			if g.outPos += n; g.outPos == len(g.out) {
				g.out, g.outPos = g.out[:0], 0
				if cap(g.out) > maxIdleBuf {
					g.out = nil
				}
			}
			return n, nil
		}
		// Nothing has been passed on in this call, so redcon has handled
		// every complete command it was given before.
		if g.fail != nil {
			return 0, g.refuse()
		}
		if g.pause {
			g.pause = false
			if !g.isAuthenticated() {
				g.refuseFrom(g.r, g.m.reason, true)
				continue
			}
			g.m.authOK = true
		}
		if g.s < g.w {
			g.scan()
			continue
		}
		if err := g.rerr; err != nil {
			g.rerr = nil
			return 0, err
		}
		if tail := g.w - g.r; tail <= smallTail && tail <= len(p)/2 {
			if n := g.readDirect(p); n > 0 {
				return n, nil
			}
			continue
		}
		g.readHeld()
	}
}

// scan feeds buf[s:w] to the machine up to its first event and decides what
// may be passed on.
func (g *guard) scan() {
	for g.s < g.w {
		n, ev := g.m.feed(g.buf[g.s:g.w])
		g.s += n
		// Where the current command starts, or r if redcon already has part of it.
		start := max(g.r, g.s-int(g.m.cmdLen))
		switch ev {
		case evNone:
			g.ready = g.releasable(start)
		case evDrop:
			g.ready, g.skip = start, g.s-start
		case evInline:
			g.ready, g.skip = start, g.s-start
			g.rewriteInline(g.buf[start:g.s])
		case evRefuse:
			g.refuseFrom(start, g.m.reason, !g.m.silent)
		case evUnauth:
			// A client that has authenticated (or never needs to) goes on
			// at once: pausing here would end the batch at every command
			// of more than 10 arguments, and answer a pipeline of MGETs
			// one write per command.
			if g.isAuthenticated() {
				g.m.authOK = true
				continue
			}
			if start > g.r {
				g.ready, g.pause = start, true
				return
			}
			g.refuseFrom(start, g.m.reason, true)
			return
		}
		return
	}
}

// releasable returns how much of buf may be passed on when it ends inside a
// command that starts at start. A complete command always may. An incomplete
// one is held back, because redcon re-parses an incomplete command from its
// start on every read: given one in small pieces, it would do work quadratic in
// the command's size. Part of a command is passed on only once the new part
// outweighs that re-parse, so a large argument streams through while a command
// with many small arguments reaches redcon in few pieces.
func (g *guard) releasable(start int) int {
	if g.m.st == sIdle {
		return g.s
	}
	if g.m.partialOK() && int64(g.s-start) >= g.m.work() {
		return g.s
	}
	return start
}

// readDirect reads from Conn straight into p, behind the held tail of an
// incomplete command, and returns how much of p may be passed on. Whatever may
// not stays in the hold buffer.
func (g *guard) readDirect(p []byte) int {
	k := copy(p, g.buf[g.r:g.w])
	n, err := g.Conn.Read(p[k:])
	g.rerr = err
	g.buf, g.r, g.s, g.w, g.ready = p, 0, k, k+n, 0
	g.scan()
	d := g.ready
	g.hold = append(g.hold[:0], p[d:g.w]...)
	g.buf, g.r, g.s, g.w, g.ready = g.hold, 0, g.s-d, g.w-d, 0
	return d
}

// readHeld reads from Conn into the hold buffer, behind what it holds.
func (g *guard) readHeld() {
	if cap(g.hold)-g.w < minRead && g.r > 0 {
		copy(g.hold, g.hold[g.r:g.w])
		g.s, g.w, g.ready, g.r = g.s-g.r, g.w-g.r, g.ready-g.r, 0
	}
	if cap(g.hold)-g.w < minRead {
		grown := make([]byte, g.w, max(2*cap(g.hold), g.w+minRead))
		copy(grown, g.hold[:g.w])
		g.hold = grown
	}
	g.hold = g.hold[:cap(g.hold)]
	n, err := g.Conn.Read(g.hold[g.w:])
	g.buf = g.hold
	g.w += n
	g.rerr = err
	if int64(g.w-g.r) > g.m.lim.MaxQueryBuffer {
		// Input held and not yet passed on outgrew the query buffer
		// limit (a command's own bound is the machine's).
		g.refuseFrom(g.r, g.m.queryBufferReason(), false)
	}
}

// tidy rewinds the hold buffer once everything in it has been passed on.
func (g *guard) tidy() {
	if g.r < g.w || g.skip > 0 {
		return
	}
	g.r, g.s, g.w, g.ready = 0, 0, 0, 0
	if cap(g.hold) > maxIdleBuf {
		g.hold = nil
	}
	g.buf = g.hold
}

// rewriteInline replaces a complete inline command with its multibulk form,
// or with nothing if it has no arguments.
func (g *guard) rewriteInline(line []byte) {
	line = line[:len(line)-1] // the '\n'
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	var ok bool
	g.arena, g.ends, ok = inlineArgs(line, g.arena[:0], g.ends[:0])
	if !ok {
		g.refuseFrom(g.ready, "Protocol error: unbalanced quotes in request", true)
		return
	}
	if len(g.ends) > 0 {
		g.out = appendCommand(g.out, g.arena, g.ends)
	}
	if cap(g.arena) > maxIdleBuf {
		g.arena = nil
	}
}

func (g *guard) isAuthenticated() bool {
	return g.authenticated == nil || g.authenticated()
}

// refuseFrom stops the input at start, the refused command's first byte (or
// the first byte not yet passed on); what comes before is still passed on.
func (g *guard) refuseFrom(start int, reason string, reply bool) {
	g.fail = fmt.Errorf("%w: %s", ErrRefused, reason)
	if !reply {
		// Only a command over the query buffer limit gets no reply.
		g.fail = fmt.Errorf("%w: %w: %s", ErrRefused, ErrQueryBuffer, reason)
	}
	if reply {
		g.reply = "-ERR " + reason + "\r\n"
	}
	g.ready, g.s, g.w, g.skip = start, start, start, 0
}

// refuse tells the client once why its input was refused, and returns the
// error for the reader, which closes the connection.
func (g *guard) refuse() error {
	if !g.refused {
		g.refused = true
		g.hold, g.buf, g.out, g.arena, g.ends = nil, nil, nil, nil, nil
		if g.reply != "" {
			// Best effort: the connection is about to be closed either way.
			_ = g.Conn.SetWriteDeadline(time.Now().Add(refusalWriteTimeout))
			_, _ = io.WriteString(g.Conn, g.reply)
		}
	}
	return g.fail
}
