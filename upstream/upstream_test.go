package upstream

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

var bg = context.Background()

func cmd(args ...string) []byte { return appendCommand(nil, args...) }

func newPool(t *testing.T, r *redistest.Server, conns int) *Pool {
	t.Helper()
	p, err := New(Config{Addr: r.Addr(), Conns: conns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestBatchRepliesInOrder(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 1)
	var b Batch
	for i := 0; i < 500; i++ {
		b.Add(cmd("INCR", "n"))
	}
	b.Add(cmd("GET", "missing"))
	b.Add(cmd("NOSUCH"))
	p.Do(bg, 0, 0, &b)
	if b.Err() != nil || b.Answered() != 502 {
		t.Fatalf("answered %d, err %v", b.Answered(), b.Err())
	}
	for i := 0; i < 500; i++ {
		if got, want := string(b.Reply(i)), fmt.Sprintf(":%d\r\n", i+1); got != want {
			t.Fatalf("reply %d = %q, want %q", i, got, want)
		}
	}
	if got := string(b.Reply(500)); got != "$-1\r\n" {
		t.Fatalf("nil reply = %q", got)
	}
	if got := string(b.Reply(501)); !strings.HasPrefix(got, "-ERR unknown command") {
		t.Fatalf("error reply = %q", got)
	}
}

// TestConcurrentBatchesShareConnections runs many clients' batches over two
// shared connections per database; each sees exactly its own replies.
func TestConcurrentBatchesShareConnections(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 2)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for c := 0; c < 40; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			var b Batch
			db := c % 3
			for round := 0; round < 50; round++ {
				b.Reset()
				key := fmt.Sprintf("c%d", c)
				b.Add(cmd("SET", key, fmt.Sprint(round)))
				b.Add(cmd("GET", key))
				p.Do(bg, db, uint64(c), &b)
				want := fmt.Sprintf("$%d\r\n%d\r\n", len(fmt.Sprint(round)), round)
				if b.Err() != nil || string(b.Reply(1)) != want {
					errs <- fmt.Errorf("client %d round %d: %q, %v", c, round, b.Reply(1), b.Err())
					return
				}
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Databases were kept apart by the connections' SELECT.
	if n := r.Client(1).Exists(bg, "c1").Val(); n != 1 {
		t.Fatalf("db 1 lacks c1")
	}
	if n := r.Client(0).Exists(bg, "c1").Val(); n != 0 {
		t.Fatalf("db 0 has c1")
	}
}

// TestBrokenConnectionFailsBatchesAndRedials: killing the upstream side fails
// the batch in flight (it is not retried: it may have run), and the next batch
// gets a fresh connection.
func TestBrokenConnectionFailsBatchesAndRedials(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 1)
	var b Batch
	b.Add(cmd("SET", "k", "v"))
	p.Do(bg, 0, 0, &b)
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	// The batch itself kills every cacheproxy connection, including its own.
	b.Reset()
	b.Add(cmd("INCR", "n"))
	b.Add(cmd("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"))
	b.Add(cmd("INCR", "n"))
	p.Do(bg, 0, 0, &b)
	// Redis answers the kill itself, then closes: the last INCR never runs.
	if b.Err() == nil || b.Answered() != 2 {
		t.Fatalf("after the kill: answered %d, err %v; want 2 answered and an error", b.Answered(), b.Err())
	}
	b.Reset()
	b.Add(cmd("GET", "n"))
	p.Do(bg, 0, 0, &b)
	if b.Err() != nil || string(b.Reply(0)) != "$1\r\n1\r\n" {
		t.Fatalf("after redial: %q, %v (INCR must have run exactly once)", b.Reply(0), b.Err())
	}
}

func TestUnreachableUpstream(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 1)
	r.Stop()
	var b Batch
	b.Add(cmd("PING"))
	p.Do(bg, 0, 0, &b)
	if b.Err() == nil || !strings.Contains(b.Err().Error(), r.Addr()) {
		t.Fatalf("err = %v, want one naming %s", b.Err(), r.Addr())
	}
	p.Do(bg, 99, 0, &b)
	if b.Err() == nil {
		t.Fatal("db 99 accepted")
	}
}

func TestDedicatedAndClose(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p, err := New(Config{Addr: r.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Dedicated(bg, 2)
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	b.Add(cmd("MULTI"))
	b.Add(cmd("SET", "d", "2"))
	b.Add(cmd("EXEC"))
	c.Do(&b)
	if b.Err() != nil || string(b.Reply(2)) != "*1\r\n+OK\r\n" {
		t.Fatalf("EXEC = %q, %v", b.Reply(2), b.Err())
	}
	if v := r.Client(2).Get(bg, "d").Val(); v != "2" {
		t.Fatalf("dedicated connection not in db 2: %q", v)
	}
	p.Close()
	b.Reset()
	b.Add(cmd("PING"))
	c.Do(&b)
	if b.Err() == nil {
		t.Fatal("a dedicated connection outlived Close")
	}
	if _, err := p.Dedicated(bg, 0); err != ErrClosed {
		t.Fatalf("Dedicated after Close: %v", err)
	}
}
