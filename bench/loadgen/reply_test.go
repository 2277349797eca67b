package loadgen

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReplyReaderReadsEveryRESP2Type(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 3*readBufSize+17) // payload spanning several buffer fills
	stream := "+OK\r\n" +
		"-ERR wrong number of arguments\r\n" +
		":42\r\n" +
		"$5\r\nhello\r\n" +
		"$0\r\n\r\n" +
		"$-1\r\n" +
		"*-1\r\n" +
		"*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n$-1\r\n" +
		"*0\r\n" +
		"$" + strconv.Itoa(len(big)) + "\r\n" + big + "\r\n" +
		"-WRONGTYPE Operation against a key\r\n"
	wantKinds := []replyKind{replyOK, replyError, replyOK, replyOK, replyOK, replyOK, replyOK, replyOK, replyOK, replyOK, replyError}
	for _, tc := range []struct {
		name string
		rd   func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte at a time", iotest.OneByteReader},
		{"half reads", iotest.HalfReader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := newReplyReader(tc.rd(strings.NewReader(stream)))
			var errs []string
			for i, want := range wantKinds {
				kind, err := rr.next()
				if err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				if kind != want {
					t.Fatalf("reply %d: kind %d, want %d", i, kind, want)
				}
				if kind == replyError {
					errs = append(errs, string(rr.errLine))
				}
			}
			if rr.nils != 4 {
				t.Errorf("nils = %d, want 4 ($-1, *-1 and two inside an array)", rr.nils)
			}
			if want := []string{"ERR wrong number of arguments", "WRONGTYPE Operation against a key"}; strings.Join(errs, "|") != strings.Join(want, "|") {
				t.Errorf("error lines = %q, want %q", errs, want)
			}
			if _, err := rr.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("read past the end: %v, want unexpected EOF", err)
			}
		})
	}
}

func TestReplyReaderRejectsMalformedReplies(t *testing.T) {
	t.Parallel()
	for name, input := range map[string]string{
		"unknown type":         "?x\r\n",
		"bare LF":              "+OK\n",
		"empty line":           "\r\n",
		"bad bulk length":      "$abc\r\n",
		"negative length":      "$-2\r\n",
		"huge length":          "$99999999999999999999\r\n",
		"bulk without CRLF":    "$3\r\nabcXY",
		"nesting too deep":     strings.Repeat("*1\r\n", maxReplyNest+2) + ":1\r\n",
		"line longer than cap": "+" + strings.Repeat("a", maxLineLen+10) + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := newReplyReader(strings.NewReader(input)).next()
			if !errors.Is(err, errProtocol) {
				t.Fatalf("next() = %v, want a protocol error", err)
			}
		})
	}
}

func TestReplyReaderTruncatedReplyIsUnexpectedEOF(t *testing.T) {
	t.Parallel()
	for _, input := range []string{"$5\r\nhel", "*2\r\n:1\r\n", "+OK", "$5\r\nhello"} {
		_, err := newReplyReader(strings.NewReader(input)).next()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("next(%q) = %v, want unexpected EOF", input, err)
		}
	}
}

func TestReplyReaderDoesNotAllocate(t *testing.T) {
	one := "*3\r\n$5\r\nhello\r\n$-1\r\n:7\r\n-ERR x\r\n"
	stream := []byte(strings.Repeat(one, 200))
	src := bytes.NewReader(stream)
	rr := newReplyReader(src)
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(stream)
		rr.r, rr.w = 0, 0
		for range 400 {
			if _, err := rr.next(); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("reading 400 replies allocated %v times, want 0", allocs)
	}
}
