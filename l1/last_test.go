package l1

import (
	"testing"
	"time"
)

func TestLastKeepsThroughSuspendUntilResume(t *testing.T) {
	last, err := NewLast(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	last.now = func() time.Time { return now }
	c, err := New(Config{MaxBytes: 4 << 20, Last: last})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fill := func(key, reply string, keep bool) *Fill {
		f, _ := c.Begin(0, []byte(key), []byte("get"))
		if keep {
			f.KeepLast()
		}
		c.Complete(f, []byte(reply), time.Minute, true)
		return f
	}
	get := func(key string, maxAge time.Duration) (string, bool) {
		f, leader := c.Begin(0, []byte(key), []byte("get"))
		defer func() {
			if leader {
				c.Complete(f, nil, 0, false)
			}
		}()
		r, _, ok := last.Get(f, maxAge)
		return string(r), ok
	}
	fill("a", "$1\r\n1\r\n", true)
	fill("b", "$1\r\n2\r\n", false)
	fill("c", "$1\r\n3\r\n", true)
	c.Suspend()
	if r, ok := get("a", time.Second); !ok || r != "$1\r\n1\r\n" {
		t.Fatalf("a after Suspend: %q %v", r, ok)
	}
	if _, ok := get("b", time.Second); ok {
		t.Fatal("b was not marked KeepLast")
	}
	now = now.Add(2 * time.Second)
	if _, ok := get("a", time.Second); ok {
		t.Fatal("a served past its age")
	}
	if _, ok := get("a", 3*time.Second); !ok {
		t.Fatal("a not served within its age")
	}
	// Nothing enters while suspended.
	fill("d", "$1\r\n4\r\n", true)
	if _, ok := get("d", time.Second); ok {
		t.Fatal("d kept while suspended")
	}
	// Invalidations reach it even while suspended.
	c.Invalidate(0, []byte("c"))
	if _, ok := get("c", time.Minute); ok {
		t.Fatal("c kept after Invalidate")
	}
	c.Resume()
	if last.Len() != 0 {
		t.Fatalf("%d entries after Resume", last.Len())
	}
	fill("a", "$1\r\n5\r\n", true)
	c.FlushDB(0)
	if _, ok := get("a", time.Minute); ok {
		t.Fatal("a kept after FlushDB")
	}
}

func TestLastBound(t *testing.T) {
	last, _ := NewLast(4 << 10)
	c, err := New(Config{MaxBytes: 4 << 20, Last: last})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 100 {
		f, _ := c.Begin(0, []byte{byte(i)}, nil)
		f.KeepLast()
		c.Complete(f, make([]byte, 100), time.Minute, true)
	}
	if last.bytes > 4<<10 || last.Len() == 0 || last.Len() >= 100 {
		t.Fatalf("%d entries, %d bytes", last.Len(), last.bytes)
	}
}
