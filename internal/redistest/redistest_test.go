package redistest

import (
	"context"
	"testing"
)

func TestStartRestart(t *testing.T) {
	s := Start(t, Options{})
	c := s.Client(0)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	ev, err := c.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil || ev["notify-keyspace-events"] == "" {
		t.Fatalf("notify-keyspace-events = %v, %v", ev, err)
	}
	s.Restart()
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("after restart EXISTS k = %d, %v; want 0", n, err)
	}
}
