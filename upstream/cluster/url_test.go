package cluster

import (
	"slices"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in         string
		seeds      []string
		user, pass string
		err        string
	}{
		{in: "redis-cluster://127.0.0.1:7000", seeds: []string{"127.0.0.1:7000"}},
		{in: "redis-cluster://a:1,b:2/0", seeds: []string{"a:1", "b:2"}},
		{in: "redis-cluster://u:p%40ss@a:1,b:2", seeds: []string{"a:1", "b:2"}, user: "u", pass: "p@ss"},
		{in: "redis-cluster://:secret@a:1", seeds: []string{"a:1"}, pass: "secret"},
		{in: "redis-cluster://", err: "names no seed"},
		{in: "redis-cluster://a", err: "not host:port"},
		{in: "redis-cluster://a:0", err: "bad port"},
		{in: "redis-cluster://:1", err: "no host"},
		{in: "redis-cluster://a:1/3", err: "database 0 alone"},
		{in: "redis://a:1", err: "lacks"},
		{in: "redis-cluster://u:hunter2@a", err: "not host:port"},
	} {
		u, err := ParseURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("ParseURL(%q) = %v; want an error with %q, without the password", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(u.Seeds, tc.seeds) || u.Username != tc.user || u.Password != tc.pass {
			t.Errorf("ParseURL(%q) = %+v, %v", tc.in, u, err)
		}
	}
	if s, err := SeedsURL([]string{"a:1", "b:2"}); err != nil || s != "redis-cluster://a:1,b:2" {
		t.Errorf("SeedsURL = %q, %v", s, err)
	}
	if _, err := SeedsURL([]string{"a"}); err == nil {
		t.Error("SeedsURL accepted a seed without a port")
	}
}
