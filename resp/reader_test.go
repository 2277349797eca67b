package resp

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// repeatReader hands out the same input on every read, like a client that
// pipelines the same batch again and again.
type repeatReader struct{ in []byte }

func (r *repeatReader) Read(p []byte) (int, error) { return copy(p, r.in), nil }

// TestCommandReaderAllocs checks that reading a steady stream of pipelined
// commands costs no allocation once the reader's buffers have grown.
func TestCommandReaderAllocs(t *testing.T) {
	// Not parallel: AllocsPerRun refuses to run beside parallel tests.
	in := strings.Repeat(mbulk("GET", "user:1"), 16)
	rd := NewCommandReader(&repeatReader{in: []byte(in)})
	read := func() {
		cmds, err := rd.Read()
		if err != nil || len(cmds) != 16 || string(cmds[15].Args[1]) != "user:1" {
			t.Fatalf("Read = %d commands, %v; want 16", len(cmds), err)
		}
	}
	read()
	if allocs := testing.AllocsPerRun(1000, read); allocs != 0 {
		t.Errorf("Read allocated %v times per batch, want 0", allocs)
	}
}

// TestCommandReaderErrors checks that input the guard would never pass on
// stops the reader with a protocol error rather than a wrong command.
func TestCommandReaderErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"PING\r\n", "*0\r\n", "*-1\r\n", "*1\r\nX4\r\n", "*1\r\n$-1\r\n", "*1\r\n$4\r\nPINGxy",
		"*1\r\n$x\r\n", "*1x\r\n", "*1\r\n$1234567890123456789\r\n",
	} {
		rd := NewCommandReader(strings.NewReader(in))
		cmds, err := rd.Read()
		if !errors.Is(err, ErrProtocol) || !strings.HasPrefix(err.Error(), "Protocol error") {
			t.Errorf("Read(%q) = %q, %v; want a protocol error", in, cmds, err)
		}
	}
}

// TestCommandReaderBigCommand checks a command larger than the buffer, read
// a little at a time, and that the buffer it grew is let go afterwards.
func TestCommandReaderBigCommand(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("v", 1<<20)
	in := mbulk("SET", "k", big) + mbulk("GET", "k")
	var cuts []int
	for i := 1000; i < len(in); i += 1000 {
		cuts = append(cuts, i)
	}
	log := new([]string)
	rd := NewCommandReader(&chunkConn{chunks: split([]byte(in), cuts...), log: log})
	var got []string
	for len(got) < 2 {
		cmds, err := rd.Read()
		if err != nil {
			t.Fatalf("Read after %d commands: %v", len(got), err)
		}
		for _, c := range cmds {
			got = append(got, fmt.Sprintf("%s %d", c.Args[0], len(c.Raw)))
		}
	}
	if want := []string{fmt.Sprintf("SET %d", len(mbulk("SET", "k", big))), fmt.Sprintf("GET %d", len(mbulk("GET", "k")))}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := rd.Read(); err == nil {
		t.Fatal("Read past the end succeeded")
	}
	if cap(rd.buf) > 16*readerBuf {
		t.Errorf("the reader keeps a %d-byte buffer after its big command", cap(rd.buf))
	}
}
