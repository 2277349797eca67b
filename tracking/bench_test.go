package tracking

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

type discard struct{}

func (discard) Invalidate(int64, []byte) bool { return true }
func (discard) InvalidateAll(int64) bool      { return true }
func (discard) RedirectBroken(_, _ int64)     {}

func benchTable(b *testing.B, maxKeys int) *Table {
	b.Helper()
	tbl, err := New(Config{Sink: discard{}, MaxKeys: maxKeys})
	if err != nil {
		b.Fatal(err)
	}
	return tbl
}

// benchKeys are keys shaped like an application's: "user:<n>:profile".
func benchKeys(prefix string, n int) [][]byte {
	ks := make([][]byte, n)
	for i := range ks {
		ks[i] = fmt.Appendf(nil, "%s:%d:profile", prefix, i)
	}
	return ks
}

// BenchmarkRemember: each goroutine is a tracking client reading. "again"
// rereads keys it is already remembered for (the steady state of a hot
// cache); "new" reads keys never seen, against a full table that evicts one
// key per read.
func BenchmarkRemember(b *testing.B) {
	b.Run("again", func(b *testing.B) {
		tbl := benchTable(b, DefaultMaxKeys)
		clients := benchClients(b, tbl, 1024)
		for id, ks := range clients {
			tbl.Remember(id, ks)
		}
		var ids atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			id := ids.Add(1)
			ks := clients[id]
			for i := 0; pb.Next(); i++ {
				tbl.Remember(id, ks[i%len(ks):][:1])
			}
		})
	})
	b.Run("new", func(b *testing.B) {
		const max = 100_000
		tbl := benchTable(b, max)
		clients := benchClients(b, tbl, 2*max)
		for id, ks := range clients {
			tbl.Remember(id, ks[max:]) // fills the table
		}
		var ids atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			id := ids.Add(1)
			ks := clients[id]
			for i := 0; pb.Next(); i++ {
				tbl.Remember(id, ks[i%len(ks):][:1])
			}
		})
	})
}

// benchClients turns tracking on for one client per goroutine of RunParallel,
// ids from 1, and gives each n keys of its own.
func benchClients(b *testing.B, tbl *Table, n int) map[int64][][]byte {
	b.Helper()
	clients := map[int64][][]byte{}
	for id := range int64(runtime.GOMAXPROCS(0)) {
		if err := tbl.Tracking(id+1, keys("on"), anyID); err != nil {
			b.Fatal(err)
		}
		clients[id+1] = benchKeys(fmt.Sprint("user", id+1), n)
	}
	return clients
}

// BenchmarkInvalidateUntracked is the cost of a keyspace event for a key no
// client remembered, in a table holding 100k other keys, without and then with
// BCAST clients whose prefixes do not match.
func BenchmarkInvalidateUntracked(b *testing.B) {
	for _, bcast := range []int{0, 16} {
		b.Run(fmt.Sprintf("bcast=%d", bcast), func(b *testing.B) {
			tbl := benchTable(b, 0)
			if err := tbl.Tracking(1, keys("on"), anyID); err != nil {
				b.Fatal(err)
			}
			tbl.Remember(1, benchKeys("user", 100_000))
			for i := range bcast {
				line := fmt.Sprintf("on BCAST PREFIX session:%d:", i)
				if err := tbl.Tracking(int64(100+i), keys(words(line)...), anyID); err != nil {
					b.Fatal(err)
				}
			}
			ks := benchKeys("order", 4096)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					tbl.Invalidate(ks[i%len(ks)], 0)
				}
			})
		})
	}
}

// BenchmarkRememberInvalidate is one read and then one write of a key by a
// tracking client: a key entering the table and leaving it with its message.
func BenchmarkRememberInvalidate(b *testing.B) {
	tbl := benchTable(b, DefaultMaxKeys)
	clients := benchClients(b, tbl, 1024)
	var ids atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := ids.Add(1)
		ks := clients[id]
		for i := 0; pb.Next(); i++ {
			k := ks[i%len(ks):][:1]
			tbl.Remember(id, k)
			tbl.Invalidate(k[0], 0)
		}
	})
}
