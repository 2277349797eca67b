package acl

import (
	"context"
	"strings"
	"testing"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

var matchCases = []struct {
	pattern string
	match   []string
	miss    []string
}{
	{"*", []string{"", "a", "user:1"}, nil},
	{"**", []string{"x"}, []string{""}},
	{"a*", []string{"a", "ab"}, []string{"", "b"}},
	{"?*", []string{"a"}, []string{""}},
	{"user:1", []string{"user:1"}, []string{"user:10", "user:", "USER:1", ""}},
	{"user:*", []string{"user:", "user:1", "user:1:x"}, []string{"use", "session:1", "User:1", "xuser:1"}},
	{"*:1", []string{"user:1", ":1"}, []string{"user:10", "1"}},
	{"a*b*c", []string{"abc", "aXbYc", "abbbc", "acbc"}, []string{"ab", "acb", "abcd"}},
	{"h?llo", []string{"hello", "hallo"}, []string{"hllo", "heello"}},
	{"h[ae]llo", []string{"hello", "hallo"}, []string{"hillo", "hllo"}},
	{"h[^e]llo", []string{"hallo", "hbllo"}, []string{"hello", "hllo"}},
	{"h[a-b]llo", []string{"hallo", "hbllo"}, []string{"hcllo"}},
	{"h[b-a]llo", []string{"hallo", "hbllo"}, []string{"hcllo"}},
	{`user\*`, []string{"user*"}, []string{"user:1"}},
	{`user\*x*`, []string{"user*x", "user*xy"}, []string{"userax"}},
	{`a\`, []string{`a\`}, []string{"a"}},
	{`[\]]x`, []string{"]x"}, []string{"x"}},
	{`[\-a]`, []string{"-", "a"}, []string{"b"}},
	{"[]x", nil, []string{"x", "]x"}},
	{"*[0-9]", []string{"a1", "9"}, []string{"a", "1a"}},
	{"a*?", []string{"ab", "abc"}, []string{"a"}},
}

func TestMatch(t *testing.T) {
	t.Parallel()
	for _, c := range matchCases {
		p, err := Compile(c.pattern)
		if err != nil {
			t.Fatalf("%q: %v", c.pattern, err)
		}
		for _, k := range c.match {
			if !p.Match([]byte(k)) {
				t.Errorf("%q does not match %q", c.pattern, k)
			}
		}
		for _, k := range c.miss {
			if p.Match([]byte(k)) {
				t.Errorf("%q matches %q", c.pattern, k)
			}
		}
	}
}

func TestShapes(t *testing.T) {
	t.Parallel()
	for src, want := range map[string]patternKind{
		"*": matchAll, "***": matchPrefix, "user:1": matchExact, "user:*": matchPrefix, `user\*`: matchExact,
		`a\?*`: matchPrefix, "user:**": matchPrefix, "*x": matchGlob, "a?": matchGlob, "a*b": matchGlob,
	} {
		p, err := Compile(src)
		if err != nil || p.kind != want {
			t.Errorf("%q: kind %d, %v; want %d", src, p.kind, err, want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	for src, msg := range map[string]string{
		"":       "empty key pattern",
		"user:[": `"[" at offset 5 has no "]"`,
		"[^a-":   `"[" at offset 0 has no "]"`,
	} {
		if _, err := Compile(src); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: error %v, want one containing %q", src, err, msg)
		}
	}
	if _, err := New(Permissions{Keys: []string{}}); err == nil || !strings.Contains(err.Error(), "keys lists no pattern") {
		t.Errorf("empty keys: %v", err)
	}
	if _, err := New(Permissions{Keys: []string{"a", "b["}}); err == nil || !strings.HasPrefix(err.Error(), "keys[1]: ") {
		t.Errorf("bad keys[1]: %v", err)
	}
}

func TestUser(t *testing.T) {
	t.Parallel()
	if Unrestricted.Restricted {
		t.Error("Unrestricted is restricted")
	}
	for _, c := range []struct {
		p          Permissions
		restricted bool
		allKeys    bool
	}{
		{Permissions{Admin: true}, false, true},
		{Permissions{Admin: true, Keys: []string{"a*", "*"}}, false, true},
		{Permissions{}, true, true},
		{Permissions{Admin: true, ReadOnly: true}, true, true},
		{Permissions{Admin: true, Keys: []string{"a*"}}, true, false},
	} {
		u, err := New(c.p)
		if err != nil {
			t.Fatal(err)
		}
		if u.Restricted != c.restricted || u.AllKeys != c.allKeys {
			t.Errorf("%+v: restricted %v allkeys %v", c.p, u.Restricted, u.AllKeys)
		}
	}
	u, _ := New(Permissions{Keys: []string{"user:*", "session:?"}})
	if !u.Keys([][]byte{[]byte("user:1"), []byte("session:a")}) || u.Keys([][]byte{[]byte("user:1"), []byte("session:ab")}) {
		t.Error("Keys")
	}
	if !u.Keys(nil) {
		t.Error("no keys is allowed")
	}
}

// TestMatchAsRedis checks every case against Redis's own ACL: the user gets
// the pattern and ACL DRYRUN says whether GET of the key would be allowed.
func TestMatchAsRedis(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	rc := r.Client(0)
	ctx := context.Background()
	for _, c := range matchCases {
		if err := rc.Do(ctx, "acl", "setuser", "m", "reset", "on", "nopass", "+get", "~"+c.pattern).Err(); err != nil {
			t.Fatalf("%q: %v", c.pattern, err)
		}
		p, _ := Compile(c.pattern)
		for _, k := range append(append([]string{}, c.match...), c.miss...) {
			// DRYRUN answers OK, or why not as a string.
			reply, err := rc.Do(ctx, "acl", "dryrun", "m", "get", k).Text()
			if err != nil {
				t.Fatal(err)
			}
			if redis := reply == "OK"; redis != p.Match([]byte(k)) {
				t.Errorf("pattern %q key %q: Redis says %q, Match says %v", c.pattern, k, reply, !redis)
			}
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	key := []byte("user:12345")
	for _, src := range []string{"user:*", "*:12345", "user:[0-9]*"} {
		p, _ := Compile(src)
		b.Run(src, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if !p.Match(key) {
					b.Fatal("no match")
				}
			}
		})
	}
}
