package resp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/redcon"
)

// chunkConn is a client connection whose input arrives in the given chunks and
// whose writes go to a shared transcript.
type chunkConn struct {
	chunks [][]byte
	log    *[]string
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *chunkConn) Write(p []byte) (int, error) {
	*c.log = append(*c.log, "reply "+strconv.Quote(string(p)))
	return len(p), nil
}

func (c *chunkConn) Close() error                     { return nil }
func (c *chunkConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *chunkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *chunkConn) SetDeadline(time.Time) error      { return nil }
func (c *chunkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }

// split cuts in into chunks ending at the given offsets.
func split(in []byte, cuts ...int) [][]byte {
	var chunks [][]byte
	prev := 0
	for _, c := range cuts {
		if c > prev && c < len(in) {
			chunks = append(chunks, bytes.Clone(in[prev:c]))
			prev = c
		}
	}
	return append(chunks, bytes.Clone(in[prev:]))
}

// drive runs chunks through Guard into redcon's own command reader, the way
// redcon's server loop does, and returns the transcript: each command redcon
// parsed, each write to the client, and how it ended. A command named AUTH
// authenticates the client when requireAuth is set.
func drive(chunks [][]byte, lim Limits, requireAuth bool) []string {
	log, _ := driveStats(chunks, lim, requireAuth)
	return log
}

// guardStats is what a guarded connection cost.
type guardStats struct {
	passed  int // bytes passed on to redcon
	maxHeld int // largest hold buffer
}

func driveStats(chunks [][]byte, lim Limits, requireAuth bool) ([]string, guardStats) {
	var log []string
	var st guardStats
	authed := !requireAuth
	g := Guard(&chunkConn{chunks: chunks, log: &log}, lim, func() bool { return authed }).(*guard)
	rd := redcon.NewReader(readFunc(func(p []byte) (int, error) {
		n, err := g.Read(p)
		st.passed += n
		st.maxHeld = max(st.maxHeld, cap(g.hold))
		return n, err
	}))
	for {
		cmds, err := rd.ReadCommands()
		if err != nil {
			switch {
			case errors.Is(err, ErrRefused):
				return append(log, "end refused"), st
			case err == io.EOF:
				return append(log, "end eof"), st
			}
			return append(log, "end error "+err.Error()), st
		}
		for _, cmd := range cmds {
			log = append(log, fmt.Sprintf("cmd %q", cmd.Args))
			if strings.EqualFold(string(cmd.Args[0]), "auth") {
				authed = true
			}
		}
	}
}

// driveReader is drive with CommandReader, the proxy's reader, in place of
// redcon's: the transcripts must be the same.
func driveReader(chunks [][]byte, lim Limits, requireAuth bool) []string {
	var log []string
	authed := !requireAuth
	g := Guard(&chunkConn{chunks: chunks, log: &log}, lim, func() bool { return authed })
	rd := NewCommandReader(g)
	for {
		cmds, err := rd.Read()
		if err != nil {
			switch {
			case errors.Is(err, ErrRefused):
				return append(log, "end refused")
			case err == io.EOF:
				return append(log, "end eof")
			}
			return append(log, "end error "+err.Error())
		}
		for _, cmd := range cmds {
			if !bytes.HasPrefix(cmd.Raw, []byte("*")) || len(cmd.Raw) == 0 || cmd.Raw[len(cmd.Raw)-1] != '\n' {
				return append(log, fmt.Sprintf("end bad raw %q", cmd.Raw))
			}
			if c, err := redcon.Parse(cmd.Raw); err != nil || fmt.Sprint(c.Args) != fmt.Sprint(cmd.Args) {
				return append(log, fmt.Sprintf("end raw %q does not parse into %q", cmd.Raw, cmd.Args))
			}
			log = append(log, fmt.Sprintf("cmd %q", cmd.Args))
			if strings.EqualFold(string(cmd.Args[0]), "auth") {
				authed = true
			}
		}
	}
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// reference is what Redis 7.0 does with in, given the guard's deterministic
// reading of its size limits (as if the input arrived a byte at a time) and
// its MaxArgs and MaxQueryBuffer, written as a plain parser over the whole
// input in the shape of Redis's own processMultibulkBuffer.
func reference(in []byte, lim Limits, requireAuth bool) []string {
	lim = lim.withDefaults()
	var log []string
	authed := !requireAuth
	refuse := func(msg string) []string {
		return append(log, "reply "+strconv.Quote("-ERR "+msg+"\r\n"), "end refused")
	}
	const (
		found = iota
		more
		tooBig
	)
	// findTerm is strchr(line, term) with Redis's check for a line that
	// grew too big without one.
	findTerm := func(from int, term byte) (int, int) {
		for k := from; k < len(in); k++ {
			if in[k] == 0 {
				if len(in)-from > inlineMax {
					return 0, tooBig
				}
				return 0, more
			}
			if in[k] == term {
				return k, found
			}
			if k-from+1 > inlineMax {
				return 0, tooBig
			}
		}
		return 0, more
	}
	pos := 0
	for pos < len(in) {
		var args [][]byte
		if in[pos] != '*' {
			e, st := findTerm(pos, '\n')
			switch st {
			case tooBig:
				return refuse("Protocol error: too big inline request")
			case more:
				return append(log, "end eof")
			}
			line := in[pos:e]
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			arena, ends, ok := inlineArgs(line, nil, nil)
			if !ok {
				return refuse("Protocol error: unbalanced quotes in request")
			}
			for i, end := range ends {
				start := 0
				if i > 0 {
					start = ends[i-1]
				}
				args = append(args, arena[start:end])
			}
			pos = e + 1
		} else {
			e, st := findTerm(pos, '\r')
			switch {
			case st == tooBig:
				return refuse("Protocol error: too big mbulk count string")
			case st == more || e+1 >= len(in):
				return append(log, "end eof")
			}
			n, ok := parseLL(in[pos+1 : e])
			switch {
			case !ok || n > 1<<31-1:
				return refuse("Protocol error: invalid multibulk length")
			case n > unauthMaxArgs && !authed:
				return refuse("Protocol error: unauthenticated multibulk length")
			case n <= 0:
				pos = e + 2
				continue
			case n > lim.MaxArgs:
				return refuse("Protocol error: invalid multibulk length")
			case int64(e+2-pos)+minArgBytes*n > lim.MaxQueryBuffer:
				return append(log, "end refused")
			}
			p := e + 2
			for left := n; left > 0; left-- {
				e, st := findTerm(p, '\r')
				switch {
				case st == tooBig:
					return refuse("Protocol error: too big bulk count string")
				case st == more || e+1 >= len(in):
					return append(log, "end eof")
				}
				if in[p] != '$' {
					got := in[p]
					if got == '\r' || got == '\n' {
						got = ' '
					}
					return refuse("Protocol error: expected '$', got '" + string([]byte{got}) + "'")
				}
				l, ok := parseLL(in[p+1 : e])
				switch {
				case !ok || l < 0 || l > lim.MaxBulkLen:
					return refuse("Protocol error: invalid bulk length")
				case l > unauthMaxBulk && !authed:
					return refuse("Protocol error: unauthenticated bulk length")
				case int64(e+2-pos)+l+2+minArgBytes*(left-1) > lim.MaxQueryBuffer:
					return append(log, "end refused")
				}
				body := e + 2
				if int64(len(in)-body) < l+2 {
					return append(log, "end eof")
				}
				args = append(args, in[body:body+int(l)])
				p = body + int(l) + 2
			}
			pos = p
		}
		if len(args) > 0 {
			log = append(log, fmt.Sprintf("cmd %q", args))
			if strings.EqualFold(string(args[0]), "auth") {
				authed = true
			}
		}
	}
	return append(log, "end eof")
}
