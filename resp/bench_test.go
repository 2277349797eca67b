package resp

import (
	"fmt"
	"strings"
	"testing"
)

// loopConn serves data over and over, in reads as large as asked.
type loopConn struct {
	chunkConn
	data []byte
	off  int
}

func (c *loopConn) Read(p []byte) (int, error) {
	n := copy(p, c.data[c.off:])
	c.off = (c.off + n) % len(c.data)
	return n, nil
}

// BenchmarkGuard measures the guard on pipelined SET and GET traffic with
// 32-byte values, read 16 KiB at a time (so reads end inside commands).
func BenchmarkGuard(b *testing.B) {
	var pipeline strings.Builder
	for i := 0; pipeline.Len() < 1<<20; i++ {
		key := fmt.Sprintf("user:%08d", i)
		pipeline.WriteString(mbulk("SET", key, strings.Repeat("v", 32)))
		pipeline.WriteString(mbulk("GET", key))
	}
	data := []byte(pipeline.String())
	g := Guard(&loopConn{chunkConn: chunkConn{log: new([]string)}, data: data}, Limits{}, nil)
	p := make([]byte, 16<<10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for passed := 0; passed < len(data); {
			n, err := g.Read(p)
			if err != nil {
				b.Fatal(err)
			}
			passed += n
		}
	}
}

// BenchmarkReplyScanner measures finding the end of a 100 MB reply arriving
// 4 KiB at a time, of an MGET reply of 100 values, of a RESP3 HGETALL reply
// of 50 fields, and of the arrays 8000 deep Redis sends for a Lua table that
// holds itself.
func BenchmarkReplyScanner(b *testing.B) {
	big := []byte("$" + fmt.Sprint(100<<20) + "\r\n" + strings.Repeat("x", 100<<20) + "\r\n")
	var mget strings.Builder
	mget.WriteString("*100\r\n")
	for range 100 {
		mget.WriteString("$32\r\n" + strings.Repeat("v", 32) + "\r\n")
	}
	var hgetall strings.Builder
	hgetall.WriteString("%50\r\n")
	for i := range 50 {
		fmt.Fprintf(&hgetall, "$8\r\nfield:%02d\r\n$32\r\n%s\r\n", i, strings.Repeat("v", 32))
	}
	lua := strings.Repeat("*1\r\n", 8000) + "-ERR reached lua stack limit\r\n"
	for _, bc := range []struct {
		name  string
		reply []byte
		step  int
	}{
		{"100MB-bulk-4KiB-reads", big, 4096},
		{"mget-100", []byte(mget.String()), len(mget.String())},
		{"hgetall-resp3-50", []byte(hgetall.String()), len(hgetall.String())},
		{"lua-8000-deep", []byte(lua), len(lua)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var s ReplyScanner
			b.SetBytes(int64(len(bc.reply)))
			b.ReportAllocs()
			for range b.N {
				if n, err := scanGrowing(&s, bc.reply, bc.step); n != len(bc.reply) || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}
