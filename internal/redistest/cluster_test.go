package redistest

import (
	"context"
	"fmt"
	"testing"
)

func TestCluster(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, ClusterOptions{})
	ctx := context.Background()
	shards := c.Shards()
	covered := 0
	for _, s := range shards {
		if len(s.Replicas) != 1 {
			t.Errorf("master %s has replicas %v; want one", s.Master, s.Replicas)
		}
		for _, r := range s.Slots {
			covered += r[1] - r[0] + 1
		}
	}
	if len(shards) != 3 || covered != 16384 {
		t.Fatalf("shards %+v: want 3 masters covering 16384 slots, got %d", shards, covered)
	}
	cc := c.Client()
	for i := 0; i < 50; i++ {
		if err := cc.Set(ctx, fmt.Sprint("k", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// A failover: the replica of the first master takes over.
	old := shards[0]
	c.Failover(old.Replicas[0])
	now := c.Shards()
	if now[0].Master != old.Replicas[0] || len(now[0].Replicas) != 1 || now[0].Replicas[0] != old.Master {
		t.Fatalf("after failover of %s: %+v", old.Replicas[0], now[0])
	}

	// A slot moved by hand, keys first, then the slot.
	key := "k7"
	slot := c.Slot(key)
	from := c.Owner(slot)
	to := now[0].Master
	if to == from {
		to = now[1].Master
	}
	m := c.MigrateSlot(slot, to)
	m.Move(key)
	err := c.NodeClient(from).Get(ctx, key).Err()
	if err == nil || err.Error()[:3] != "ASK" {
		t.Errorf("GET %s on the source during the migration: %v; want ASK", key, err)
	}
	m.Finish()
	if got := c.Owner(slot); got != to {
		t.Fatalf("slot %d served by %s after its migration to %s", slot, got, to)
	}

	// Slots moved by redis-cli.
	c.Reshard(now[1].Master, now[2].Master, 10)
	for i := 0; i < 50; i++ {
		if v, err := cc.Get(ctx, fmt.Sprint("k", i)).Int(); err != nil || v != i {
			t.Fatalf("GET k%d after the moves = %v, %v", i, v, err)
		}
	}
}
