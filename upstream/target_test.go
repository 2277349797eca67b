package upstream

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// TestTargetMoves checks that Set closes every connection to the previous
// address, shared, dedicated and raw alike, and that the next ones reach the
// new address.
func TestTargetMoves(t *testing.T) {
	t.Parallel()
	a, b := redistest.Start(t, redistest.Options{}), redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	a.Client(0).Set(ctx, "who", "a", 0)
	b.Client(0).Set(ctx, "who", "b", 0)
	target := NewTarget(a.Addr())
	p, err := New(Config{Target: target, Conns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	get := func() (string, error) {
		var bt Batch
		bt.Add(cmd("GET", "who"))
		p.Do(ctx, 0, 0, &bt)
		if bt.Err() != nil {
			return "", bt.Err()
		}
		return string(bt.Reply(0)), nil
	}
	if got, err := get(); err != nil || got != "$1\r\na\r\n" {
		t.Fatalf("before the move: %q, %v", got, err)
	}
	ded, err := p.Dedicated(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ded.Close()
	raw, err := p.Raw(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	if n := target.Set(b.Addr()); n != 3 {
		t.Errorf("Set closed %d connections, want 3 (shared, dedicated, raw)", n)
	}
	var bt Batch
	bt.Add(cmd("PING"))
	if ded.Do(&bt); bt.Err() == nil {
		t.Error("the dedicated connection to the old address still works")
	}
	_ = raw.SetReadDeadline(time.Now().Add(time.Second))
	var ne net.Error
	if _, err := raw.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the raw connection to the old address is still open: %v", err)
	}
	if got, err := get(); err != nil || got != "$1\r\nb\r\n" {
		t.Fatalf("after the move: %q, %v", got, err)
	}
	if n := target.Set(b.Addr()); n != 0 {
		t.Errorf("setting the same address closed %d connections", n)
	}
}
