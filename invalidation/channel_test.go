package invalidation

import (
	"strconv"
	"testing"
)

func TestParseChannel(t *testing.T) {
	for _, tc := range []struct {
		ch  string
		db  int
		key string
		ok  bool
	}{
		{"__keyspace@0__:k", 0, "k", true},
		{"__keyspace@15__:user:1", 15, "user:1", true},
		{"__keyspace@2147483647__:k", 2147483647, "k", true},
		{"__keyspace@0__:", 0, "", true},
		{"__keyspace@3__:a@b__:c\n\x00", 3, "a@b__:c\n\x00", true},
		{"__keyspace@1__:__keyspace@2__:x", 1, "__keyspace@2__:x", true},
		{"__keyspace@__:k", 0, "", false},
		{"__keyspace@x__:k", 0, "", false},
		{"__keyspace@-1__:k", 0, "", false},
		{"__keyspace@01__:k", 0, "", false},
		{"__keyspace@2147483648__:k", 0, "", false},
		{"__keyspace@99999999999999999999__:k", 0, "", false},
		{"__keyspace@1_:k", 0, "", false},
		{"__keyspace@1__k", 0, "", false},
		{"__keyspace@1", 0, "", false},
		{"__keyspace@", 0, "", false},
		{"__keyevent@0__:set", 0, "", false},
		{"", 0, "", false},
	} {
		db, key, ok := parseChannel(tc.ch)
		if db != tc.db || key != tc.key || ok != tc.ok {
			t.Errorf("parseChannel(%q) = %d, %q, %v; want %d, %q, %v", tc.ch, db, key, ok, tc.db, tc.key, tc.ok)
		}
	}
}

// FuzzParseChannel checks that parsing never panics and accepts exactly the
// channels Redis would publish: whatever it accepts must rebuild to the input.
func FuzzParseChannel(f *testing.F) {
	for _, s := range []string{"__keyspace@0__:k", "__keyspace@12__:a:b", "__keyspace@00__:k", "__keyspace@9999999999__:k", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ch string) {
		db, key, ok := parseChannel(ch)
		if !ok {
			return
		}
		if got := channelPrefix + strconv.Itoa(db) + "__:" + key; got != ch {
			t.Fatalf("parseChannel(%q) = %d, %q, which rebuilds to %q", ch, db, key, got)
		}
	})
}

func BenchmarkParseChannel(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := parseChannel("__keyspace@12__:session:8f2a61c0"); !ok {
			b.Fatal("rejected")
		}
	}
}
