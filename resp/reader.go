package resp

import (
	"errors"
	"fmt"
	"io"
)

// ErrProtocol is wrapped by the errors CommandReader returns for input that
// is not plain multibulk: the connection cannot go on.
var ErrProtocol = errors.New("Protocol error")

// Command is one request as the client sent it: Raw is its whole frame,
// Args its arguments, the name first. Both point into the reader's buffer.
type Command struct {
	Raw  []byte
	Args [][]byte
}

const (
	// A reader's buffer starts at this size and grows by doubling to hold
	// the largest command it has been sent.
	readerBuf = 4 << 10
	// Each read offers the socket at least this much room, so that a Guard
	// below can read straight into it.
	readerMinFree = 2 << 10
)

// CommandReader reads the commands a Guard has passed on: plain multibulk
// with sane headers. Unlike redcon's reader it copies nothing: each command
// and its arguments are slices of its buffer, and the slices of arguments
// come from one list reused from batch to batch, so a steady stream of
// commands costs no allocation. The price is that what Read returns is valid
// only until the next Read.
type CommandReader struct {
	rd   io.Reader
	buf  []byte
	r, w int // buf[r:w] is read and not yet parsed
	err  error
	cmds []Command
	args [][]byte
}

// NewCommandReader reads commands from rd.
func NewCommandReader(rd io.Reader) *CommandReader {
	return &CommandReader{rd: rd}
}

// Read returns the complete commands the input holds, reading until there is
// at least one. They, and every slice in them, are valid until the next Read.
// An incomplete command at the end stays buffered for the next Read.
func (cr *CommandReader) Read() ([]Command, error) {
	clear(cr.cmds)
	clear(cr.args)
	cr.cmds, cr.args = cr.cmds[:0], cr.args[:0]
	for {
		if err := cr.parse(); err != nil {
			return nil, err
		}
		if len(cr.cmds) > 0 {
			return cr.cmds, nil
		}
		if cr.err != nil {
			err := cr.err
			cr.err = nil
			return nil, err
		}
		cr.fill()
	}
}

// Buffered is how many bytes are read and not yet returned in a command.
func (cr *CommandReader) Buffered() int { return cr.w - cr.r }

// fill reads once from rd behind what is buffered, making room first.
func (cr *CommandReader) fill() {
	if cr.r == cr.w {
		cr.r, cr.w = 0, 0
		if cap(cr.buf) > 16*readerBuf {
			cr.buf = nil // one big command is no reason to keep its room
		}
	}
	if len(cr.buf)-cr.w < readerMinFree && cr.r > 0 {
		cr.w = copy(cr.buf, cr.buf[cr.r:cr.w])
		cr.r = 0
	}
	if len(cr.buf)-cr.w < readerMinFree {
		grown := make([]byte, max(2*len(cr.buf), readerBuf, cr.w+readerMinFree))
		copy(grown, cr.buf[cr.r:cr.w])
		cr.buf, cr.w, cr.r = grown, cr.w-cr.r, 0
	}
	n, err := cr.rd.Read(cr.buf[cr.w:])
	cr.w += n
	if err != nil {
		cr.err = err
	}
}

// parse appends every complete command in buf[r:w] to cmds.
func (cr *CommandReader) parse() error {
	for cr.r < cr.w {
		end, err := cr.command(cr.buf[cr.r:cr.w])
		if err != nil || end == 0 {
			return err
		}
		cr.r += end
	}
	return nil
}

// command parses the command at the start of b into cmds and returns its
// length, or 0 if b ends before it does.
func (cr *CommandReader) command(b []byte) (int, error) {
	if b[0] != '*' {
		return 0, fmt.Errorf("%w: expected '*', got '%c'", ErrProtocol, b[0])
	}
	count, i, ok := number(b, 1)
	if i == 0 {
		return 0, nil
	}
	if !ok || count <= 0 {
		return 0, fmt.Errorf("%w: invalid multibulk length", ErrProtocol)
	}
	first := len(cr.args)
	for range count {
		if i >= len(b) {
			cr.args = cr.args[:first]
			return 0, nil
		}
		if b[i] != '$' {
			return 0, fmt.Errorf("%w: expected '$', got '%c'", ErrProtocol, b[i])
		}
		size, j, ok := number(b, i+1)
		if j == 0 {
			cr.args = cr.args[:first]
			return 0, nil
		}
		if !ok || size < 0 {
			return 0, fmt.Errorf("%w: invalid bulk length", ErrProtocol)
		}
		if int64(len(b)-j) < size+2 {
			cr.args = cr.args[:first]
			return 0, nil
		}
		k := j + int(size)
		if b[k] != '\r' || b[k+1] != '\n' {
			return 0, fmt.Errorf("%w: invalid bulk length", ErrProtocol)
		}
		cr.args = append(cr.args, b[j:k:k])
		i = k + 2
	}
	cr.cmds = append(cr.cmds, Command{Raw: b[:i:i], Args: cr.args[first:len(cr.args):len(cr.args)]})
	return i, nil
}

// number parses the decimal number that starts at b[i] and ends with "\r\n".
// It returns the index after the "\r\n", or 0 if b ends first; ok is false if
// the line is not a number of at most 18 digits.
func number(b []byte, i int) (n int64, next int, ok bool) {
	neg := false
	if i < len(b) && b[i] == '-' {
		neg, i = true, i+1
	}
	digits := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
		if i-digits >= 18 {
			return 0, len(b) + 1, false
		}
	}
	if i+1 >= len(b) {
		if i < len(b) && b[i] != '\r' {
			return 0, i + 1, false
		}
		return 0, 0, true
	}
	if i == digits || b[i] != '\r' || b[i+1] != '\n' {
		return 0, i + 2, false
	}
	if neg {
		n = -n
	}
	return n, i + 2, true
}
