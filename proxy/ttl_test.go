package proxy

import (
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/policy"
)

func TestFillTTL(t *testing.T) {
	t.Parallel()
	p := &policy.Policy{Cache: true, TTL: 30 * time.Second, CacheNil: true}
	noNil := &policy.Policy{Cache: true, TTL: 30 * time.Second}
	cases := []struct {
		name    string
		p       *policy.Policy
		reply   string
		pttl    string
		elapsed time.Duration
		ttl     time.Duration
		store   bool
	}{
		{"no expiry", p, "$1\r\nv\r\n", ":-1\r\n", 0, 30 * time.Second, true},
		{"capped by the key's TTL", p, "$1\r\nv\r\n", ":1000\r\n", 0, time.Second, true},
		{"minus the time since the read left", p, "$1\r\nv\r\n", ":1000\r\n", 200 * time.Millisecond, 800 * time.Millisecond, true},
		{"key expires before the reply is back", p, "$1\r\nv\r\n", ":5\r\n", 10 * time.Millisecond, 0, false},
		{"longer key TTL keeps the policy's", p, "$1\r\nv\r\n", ":99000000\r\n", 0, 30 * time.Second, true},
		{"nil cached", p, "$-1\r\n", ":-2\r\n", 0, 30 * time.Second, true},
		{"nil not cached", noNil, "$-1\r\n", ":-2\r\n", 0, 0, false},
		{"errors never cached", p, "-WRONGTYPE x\r\n", ":-1\r\n", 0, 0, false},
		{"PTTL failed", p, "$1\r\nv\r\n", "-ERR cacheproxy: upstream unavailable\r\n", 0, 0, false},
	}
	for _, tc := range cases {
		ttl, store := fillTTL(tc.p, []byte(tc.reply), []byte(tc.pttl), tc.elapsed)
		if store != tc.store || (store && ttl != tc.ttl) {
			t.Errorf("%s: fillTTL = %v, %v; want %v, %v", tc.name, ttl, store, tc.ttl, tc.store)
		}
	}
}
