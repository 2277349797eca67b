package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func mustCompile(t testing.TB, ps []Policy) *Set {
	t.Helper()
	s, err := Compile(ps)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func TestLookup(t *testing.T) {
	t.Parallel()
	s := mustCompile(t, []Policy{
		{Prefix: "user:", Cache: true, TTL: time.Minute},
		{Prefix: "user:admin:", Cache: false},
		{Prefix: "", Cache: true, TTL: 10 * time.Second, CacheNil: true},
		{Prefix: "u", Cache: true, TTL: time.Second},
		{Prefix: "\x00\xff", Cache: true, TTL: time.Hour},
		{Prefix: "\x00\xff\x00", Cache: true, TTL: 2 * time.Hour},
		{Prefix: "session:", Cache: true, TTL: 30 * time.Second},
		{Prefix: "sessions", Cache: false},
	})
	tests := []struct {
		key  string
		want string
	}{
		{"", ""},
		{"x", ""},
		{"u", "u"},
		{"us", "u"},
		{"user", "u"},
		{"user:", "user:"},
		{"user:1", "user:"},
		{"user:admin", "user:"},
		{"user:admin:", "user:admin:"},
		{"user:admin:42", "user:admin:"},
		{"USER:1", ""},
		{"\x00", ""},
		{"\x00\xff", "\x00\xff"},
		{"\x00\xfe", ""},
		{"\x00\xff\x01", "\x00\xff"},
		{"\x00\xff\x00tail", "\x00\xff\x00"},
		{"session", ""},
		{"session:abc", "session:"},
		{"sessions", "sessions"},
		{"sessionx", ""},
		{"sess", ""},
	}
	for _, tt := range tests {
		got := s.Lookup([]byte(tt.key))
		if got.Prefix != tt.want {
			t.Errorf("Lookup(%q) = %q, want %q", tt.key, got.Prefix, tt.want)
		}
	}
	if got := s.Lookup(nil); got.Prefix != "" {
		t.Errorf("Lookup(nil) = %q, want the default", got.Prefix)
	}
}

func TestCompileAddsNonCachingDefault(t *testing.T) {
	t.Parallel()
	s := mustCompile(t, []Policy{{Prefix: "a:", Cache: true, TTL: time.Second, CacheNil: true}})
	all := s.All()
	if len(all) != 2 {
		t.Fatalf("All() has %d policies, want 2", len(all))
	}
	def := s.Lookup([]byte("b:1"))
	if def != all[1] || def.Prefix != "" || def.Cache || def.CacheNil || def.TTL != 0 {
		t.Errorf("default = %+v, want a non-caching \"\" policy at the end", *def)
	}
	if s.Lookup([]byte("a:1")) != all[0] {
		t.Errorf("Lookup(a:1) is not All()[0]")
	}
}

func TestCompileKeepsExplicitDefault(t *testing.T) {
	t.Parallel()
	s := mustCompile(t, []Policy{
		{Prefix: "", Cache: true, TTL: time.Second, CacheNil: true},
		{Prefix: "a:", Cache: false, CacheNil: true},
	})
	all := s.All()
	if len(all) != 2 {
		t.Fatalf("All() has %d policies, want 2", len(all))
	}
	for i, p := range all {
		if p.Index != i {
			t.Errorf("All()[%d].Index = %d", i, p.Index)
		}
	}
	if p := s.Lookup([]byte("zzz")); p != all[0] || !p.Cache || !p.CacheNil {
		t.Errorf("Lookup(zzz) = %+v, want the explicit default", *p)
	}
	if p := s.Lookup([]byte("a:1")); p.CacheNil {
		t.Errorf("non-caching policy kept CacheNil: %+v", *p)
	}
}

func TestCompileIgnoresInputIndex(t *testing.T) {
	t.Parallel()
	s := mustCompile(t, []Policy{{Prefix: "a", Index: 7}, {Prefix: "b", Index: 7}})
	for i, p := range s.All() {
		if p.Index != i {
			t.Errorf("All()[%d].Index = %d", i, p.Index)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ps   []Policy
		want string
	}{
		{"duplicate", []Policy{{Prefix: "a:"}, {Prefix: "b:"}, {Prefix: "a:"}}, `policy "a:": duplicate prefix (entries 0 and 2)`},
		{"duplicate default", []Policy{{Prefix: ""}, {Prefix: ""}}, `policy "": duplicate prefix`},
		{"cache without ttl", []Policy{{Prefix: "a:", Cache: true}}, `policy "a:": caching needs a positive TTL`},
		{"negative ttl", []Policy{{Prefix: "a:", Cache: true, TTL: -time.Second}}, `policy "a:": negative TTL -1s`},
		{"ttl without cache", []Policy{{Prefix: "a:", TTL: time.Second}}, `policy "a:": TTL 1s given but caching is off`},
		{"binary prefix named", []Policy{{Prefix: "\xff\x00", Cache: true}}, `policy "\xff\x00": caching needs`},
		{"negative max value", []Policy{{Prefix: "a:", Cache: true, TTL: time.Second, MaxValueBytes: -1}}, `policy "a:": negative MaxValueBytes -1`},
	}
	for _, tt := range tests {
		s, err := Compile(tt.ps)
		if err == nil {
			t.Errorf("%s: Compile succeeded: %v", tt.name, s.All())
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q does not contain %q", tt.name, err, tt.want)
		}
	}
}

func TestCompileEmpty(t *testing.T) {
	t.Parallel()
	s := mustCompile(t, nil)
	if p := s.Lookup([]byte("k")); p.Cache || p.Index != 0 || len(s.All()) != 1 {
		t.Errorf("empty set: Lookup = %+v, All = %d", *p, len(s.All()))
	}
}

// bruteForce is the obvious definition Lookup must agree with.
func bruteForce(ps []*Policy, key []byte) *Policy {
	var best *Policy
	for _, p := range ps {
		if strings.HasPrefix(string(key), p.Prefix) && (best == nil || len(p.Prefix) > len(best.Prefix)) {
			best = p
		}
	}
	return best
}

// TestLookupMatchesBruteForce compares Lookup with a scan of every policy on
// random prefix sets over a tiny alphabet, so that nested and sibling prefixes,
// shared stems and keys shorter than prefixes are all frequent.
func TestLookupMatchesBruteForce(t *testing.T) {
	t.Parallel()
	const alphabet = "ab:\x00\xff"
	randBytes := func(r *rand.Rand, max int) string {
		b := make([]byte, r.IntN(max+1))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	for seed := uint64(0); seed < 300; seed++ {
		r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
		seen := map[string]bool{}
		var ps []Policy
		for n := r.IntN(40); len(ps) < n; {
			p := randBytes(r, 6)
			if !seen[p] {
				seen[p] = true
				ps = append(ps, Policy{Prefix: p})
			}
		}
		s := mustCompile(t, ps)
		all := s.All()
		for range 200 {
			key := []byte(randBytes(r, 8))
			if got, want := s.Lookup(key), bruteForce(all, key); got != want {
				t.Fatalf("seed %d: prefixes %q: Lookup(%q) = %q, want %q",
					seed, prefixes(all), key, got.Prefix, want.Prefix)
			}
			if got, want := prefixes(s.Matches(key)), allMatches(all, key); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("seed %d: prefixes %q: Matches(%q) = %q, want %q", seed, prefixes(all), key, got, want)
			}
		}
	}
}

// allMatches is the obvious definition of Matches: every prefix of key that is
// a policy's, shortest first.
func allMatches(ps []*Policy, key []byte) []string {
	var out []string
	for n := 0; n <= len(key); n++ {
		for _, p := range ps {
			if p.Prefix == string(key[:n]) {
				out = append(out, p.Prefix)
			}
		}
	}
	return out
}

func TestImplicitDefault(t *testing.T) {
	t.Parallel()
	s := mustCompile(t, []Policy{{Prefix: "a:", Cache: true, TTL: time.Second}})
	if p := s.Lookup([]byte("b")); !s.Implicit(p) || s.Implicit(s.Lookup([]byte("a:1"))) {
		t.Fatal("Implicit does not single out the added default")
	}
	s = mustCompile(t, []Policy{{Prefix: "a:"}, {Prefix: ""}})
	if s.Implicit(s.Lookup([]byte("b"))) {
		t.Fatal("an explicit default is reported as implicit")
	}
}

func prefixes(ps []*Policy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Prefix
	}
	return out
}

func TestLookupDoesNotAllocate(t *testing.T) {
	s, keys := benchSet(500)
	allocs := testing.AllocsPerRun(100, func() {
		for _, k := range keys {
			s.Lookup(k)
		}
	})
	if allocs != 0 {
		t.Errorf("Lookup allocates: %v allocations per %d lookups", allocs, len(keys))
	}
}

// benchSet builds n policies shaped like real deployments (a few families of
// nested prefixes) and keys that hit, nest into, or miss them.
func benchSet(n int) (*Set, [][]byte) {
	ps := []Policy{{Prefix: "", Cache: true, TTL: 10 * time.Second}}
	for i := 0; len(ps) < n; i++ {
		ps = append(ps, Policy{Prefix: fmt.Sprintf("tenant%d:", i), Cache: true, TTL: time.Minute})
		if len(ps) < n {
			ps = append(ps, Policy{Prefix: fmt.Sprintf("tenant%d:session:", i)})
		}
	}
	s, err := Compile(ps)
	if err != nil {
		panic(err)
	}
	var keys [][]byte
	for i := range 64 {
		t := i % (n/2 + 1)
		keys = append(keys,
			fmt.Appendf(nil, "tenant%d:user:%d", t, i),
			fmt.Appendf(nil, "tenant%d:session:%d", t, i),
			fmt.Appendf(nil, "other:%d", i))
	}
	return s, keys
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{5, 500} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			s, keys := benchSet(n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s.Lookup(keys[i%len(keys)])
				i++
			}
		})
	}
}
