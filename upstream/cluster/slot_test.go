package cluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// TestSlotMatchesRedis compares Slot with CLUSTER KEYSLOT on a real node for
// keys with and without hash tags, the odd cases of the tag rule included.
func TestSlotMatchesRedis(t *testing.T) {
	t.Parallel()
	node := redistest.Start(t, redistest.Options{Cluster: true})
	c := node.Client(0)
	keys := []string{
		"", "a", "foo", "user:1000", "123456789",
		"{user1000}.following", "{user1000}.followers", "foo{}{bar}", "foo{{bar}}zap",
		"foo{bar}{zap}", "{", "}", "{}", "}{", "x{y", "x}y{z}", "{a}{b}", "\x00{\xff}\x01",
		"a{b}", "{b}", "b",
	}
	for i := 0; i < 500; i++ {
		keys = append(keys, fmt.Sprintf("key:%d", i), fmt.Sprintf("p{%d}s", i%37), string(rune(i)))
	}
	ctx := context.Background()
	for _, k := range keys {
		want, err := c.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
		}
		if got := Slot([]byte(k)); got != int(want) {
			t.Errorf("Slot(%q) = %d; CLUSTER KEYSLOT says %d", k, got, want)
		}
	}
}

func TestSlotKnownValues(t *testing.T) {
	t.Parallel()
	// From the Redis Cluster specification: crc16("123456789") is 0x31C3.
	if got := crc16([]byte("123456789")); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#x; want 0x31c3", got)
	}
	if Slot([]byte("{user1000}.following")) != Slot([]byte("{user1000}.followers")) {
		t.Fatal("keys with one hash tag hash apart")
	}
}

func BenchmarkSlot(b *testing.B) {
	key := []byte("user:{12345}:profile")
	for b.Loop() {
		Slot(key)
	}
}

func TestSlotTag(t *testing.T) {
	t.Parallel()
	for slot := 0; slot < Slots; slot++ {
		if got := Slot([]byte("canary:" + SlotTag(slot) + ":1")); got != slot {
			t.Fatalf("a key holding SlotTag(%d) = %q is in slot %d", slot, SlotTag(slot), got)
		}
	}
}
