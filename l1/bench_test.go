package l1

import (
	"fmt"
	"sync/atomic"
	"testing"
)

func benchKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "user:%d:profile", i)
	}
	return keys
}

// BenchmarkGetHit reads 1024 stored keys from all goroutines.
func BenchmarkGetHit(b *testing.B) {
	c, err := New(Config{MaxBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	keys := benchKeys(1024)
	variant := []byte("GET")
	reply := make([]byte, 100)
	for _, k := range keys {
		f, _ := c.Begin(0, k, variant)
		c.Complete(f, reply, hour, true)
	}
	c.Wait()
	var misses, seed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(1)) * 7919
		for pb.Next() {
			if _, ok := c.Get(0, keys[i%len(keys)], variant); !ok {
				misses.Add(1)
			}
			i++
		}
	})
	b.StopTimer()
	if n := misses.Load(); n > 0 {
		b.Fatalf("%d misses on stored keys", n)
	}
}

// BenchmarkMissFill runs the miss path of a read after a write: Invalidate, a
// missing Get, Begin and a storing Complete, on 1024 keys.
func BenchmarkMissFill(b *testing.B) {
	c, err := New(Config{MaxBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	keys := benchKeys(1024)
	variant := []byte("GET")
	reply := make([]byte, 100)
	var seed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seed.Add(1)) * 7919
		for pb.Next() {
			k := keys[i%len(keys)]
			c.Invalidate(0, k)
			if _, ok := c.Get(0, k, variant); !ok {
				if f, leader := c.Begin(0, k, variant); leader {
					c.Complete(f, reply, hour, true)
				} else {
					f.Wait()
				}
			}
			i++
		}
	})
}
