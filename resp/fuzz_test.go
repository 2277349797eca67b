package resp

import (
	"slices"
	"strings"
	"testing"
)

// fuzzLimits are the smallest limits allowed, so that short inputs reach them.
var fuzzLimits = Limits{MaxBulkLen: 1 << 20, MaxQueryBuffer: 1<<20 + 64, MaxArgs: 1024}

// guardSeeds are inputs that reach every state and every refusal.
var guardSeeds = []string{
	"*1\r\n$4\r\nPING\r\n",
	"*1\r\n$9223372036854775807\r\n",
	"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
	"PING\r\nECHO \"a\\x41\\tb\" 'c\\'d'\r\n\r\n  \t\r\nECHO a\"b\"\n",
	"*0\r\n*-1\r\n*-5\r\n*1\r\n$4\r\nPING\r\n",
	"*1\rX$4\r\nPINGxy*1\r\n$4\r\nPING\r\n",
	"*1\r\n$4\x00\r\nPING\r\n",
	"PI\x00NG\r\n",
	"*+1\r\n", "*01\r\n", "*-0\r\n", "*\r\n", "*1\r\n$+4\r\n", "*1\r\n$04\r\n", "*1\r\n$-1\r\n",
	"*1\r\n\r\n", "*1\r\n\n$4\r\n", "*1\r\nX3\r\n",
	"ECHO \"a\"b\r\n", "ECHO 'a\r\n", "ECHO \"abc\\\r\n",
	"*2147483648\r\n", "*2147483647\r\n", "*1025\r\n", "*200000\r\n",
	"*11\r\n", "*1\r\n$16385\r\n",
	"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*11\r\n$4\r\nPING\r\n",
	"*1\r\n$1048577\r\n", "*2\r\n$1048576\r\n",
	"*2\r\n$4\r\nECHO\r\n$3\r\nab",
}

func FuzzGuard(f *testing.F) {
	for i, s := range guardSeeds {
		f.Add([]byte(s), uint64(i)*0x9e3779b97f4a7c15)
	}
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		requireAuth := seed&1 == 1
		want := reference(in, fuzzLimits, requireAuth)
		if got := drive(split(in), fuzzLimits, requireAuth); !slices.Equal(got, want) {
			t.Fatalf("whole input %q:\n got  %q\n want %q", in, got, want)
		}
		// Cut at pseudo-random points drawn from seed.
		var cuts []int
		for x, at := seed|1, 0; at < len(in); {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			at += 1 + int(x%7)
			cuts = append(cuts, at)
		}
		got, st := driveStats(split(in, cuts...), fuzzLimits, requireAuth)
		if !slices.Equal(got, want) {
			t.Fatalf("input %q cut at %v:\n got  %q\n want %q", in, cuts, got, want)
		}
		if got := driveReader(split(in, cuts...), fuzzLimits, requireAuth); !slices.Equal(got, want) {
			t.Fatalf("input %q cut at %v, through CommandReader:\n got  %q\n want %q", in, cuts, got, want)
		}
		// Rewrites grow the input at most 5.5 times (the inline "x\n" becomes
		// "*1\r\n$1\r\nx\r\n"); the hold buffer holds at most the input and
		// one read, doubled by growth.
		if 2*st.passed > 11*len(in) || st.maxHeld > 2*(len(in)+minRead) {
			t.Fatalf("input of %d bytes: passed %d bytes, held up to %d", len(in), st.passed, st.maxHeld)
		}
	})
}

func FuzzReplyScanner(f *testing.F) {
	for i, s := range slices.Concat(replySeeds, replyIncomplete, replyMalformed) {
		f.Add([]byte(s), uint8(i))
	}
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		rn, more, bad := refReply(in)
		var s ReplyScanner
		n, err := s.Scan(in)
		if n != rn || (err != nil) != bad || (n == 0 && err == nil) != more {
			t.Fatalf("Scan(%q) = %d, %v; reference %d, more=%v, bad=%v", in, n, err, rn, more, bad)
		}
		if n > len(in) {
			t.Fatalf("Scan(%q) = %d, more than its %d bytes", in, n, len(in))
		}
		// A reply is complete at its last byte and not before.
		if n > 0 {
			if pn, perr := ReplyLen(in[:n-1]); pn != 0 || perr != nil {
				t.Fatalf("ReplyLen(%q) = %d, %v; want 0, nil: Scan(%q) = %d", in[:n-1], pn, perr, in, n)
			}
			if pn, perr := ReplyLen(in[:n]); pn != n || perr != nil {
				t.Fatalf("ReplyLen(%q) = %d, %v; want %d", in[:n], pn, perr, n)
			}
		}
		var g ReplyScanner
		if gn, gerr := scanGrowing(&g, in, 1+int(step)); gn != n || (gerr != nil) != (err != nil) {
			t.Fatalf("Scan(%q) %d bytes at a time = %d, %v; whole %d, %v", in, 1+int(step), gn, gerr, n, err)
		}
		if rl, rerr := ReplyLen(in); rl != n || (rerr != nil) != (err != nil) {
			t.Fatalf("ReplyLen(%q) = %d, %v; Scan %d, %v", in, rl, rerr, n, err)
		}
		// A flat array splits into elements that are each one reply.
		if elems, ok := ArrayElems(in, nil); ok {
			if n != len(in) {
				t.Fatalf("ArrayElems accepted %q, which is not exactly one reply", in)
			}
			for _, e := range elems {
				if l, err := ReplyLen(e); l != len(e) || err != nil || strings.IndexByte("*%~>|", e[0]) >= 0 {
					t.Fatalf("ArrayElems(%q) element %q is not one flat reply", in, e)
				}
			}
		}
	})
}
