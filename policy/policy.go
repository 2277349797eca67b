// Package policy decides, per key, whether and for how long the proxy caches
// replies: a compiled list of key prefixes where the longest matching prefix wins.
//
// Compile turns the list into a radix tree over the prefixes' bytes, so Lookup
// costs one step per matching edge, not one comparison per policy, and allocates
// nothing. The empty prefix is the default; a Set always has one.
//
// It never touches the cache or Redis; it is pure data, safe to share read-only.
package policy

import (
	"bytes"
	"fmt"
	"sort"
	"time"
)

// Policy is the caching rule for keys that start with Prefix.
type Policy struct {
	Prefix   string        // raw key bytes; "" matches every key
	Cache    bool          // false: never cached, every read goes upstream
	TTL      time.Duration // L1 lifetime of a reply (capped by the key's upstream TTL); > 0 exactly when Cache
	CacheNil bool          // whether a nil reply (missing key) is cached; Compile clears it when !Cache
	// MaxValueBytes bounds the replies kept, as Redis sent them (RESP bytes);
	// larger ones are still answered, from upstream. 0: no bound.
	MaxValueBytes int64
	// Pool names the L1 memory pool the policy's entries live in; "" is the
	// default pool. The caller decides which names exist.
	Pool string
	// StaleIfError, when positive, lets a read of the policy's keys that
	// fails because the upstream cannot be reached be answered with the
	// key's last reply the L1 stored, if no older than this. It needs Cache.
	StaleIfError time.Duration
	// Index is the policy's position in the compiled Set, for callers that keep
	// per-policy counters in a slice. Compile assigns it; the input value is ignored.
	Index int
}

// Set is a compiled, immutable list of policies. Its policies must not be modified.
type Set struct {
	all        []Policy // Index order
	root       *node    // its policy is the default
	hasDefault bool     // the compiled list had a "" prefix
}

// node is a radix-tree node: the keys that reach it share the concatenated labels
// on the path from the root.
type node struct {
	label  string  // bytes between the parent and this node
	policy *Policy // nil when no prefix ends here
	first  []byte  // first[i] == kids[i].label[0]; distinct
	kids   []*node
}

// Compile checks ps and builds a Set. Policies keep their order, so Index is the
// position in ps. When ps has no "" prefix, Compile appends a default that does
// not cache: a key no policy names is always read from upstream, which is slower
// but never wrong.
func Compile(ps []Policy) (*Set, error) {
	s := &Set{all: make([]Policy, 0, len(ps)+1)}
	seen := make(map[string]int, len(ps))
	hasDefault := false
	for i, p := range ps {
		if j, dup := seen[p.Prefix]; dup {
			return nil, fmt.Errorf("policy %q: duplicate prefix (entries %d and %d)", p.Prefix, j, i)
		}
		seen[p.Prefix] = i
		switch {
		case p.TTL < 0:
			return nil, fmt.Errorf("policy %q: negative TTL %v", p.Prefix, p.TTL)
		case p.Cache && p.TTL == 0:
			return nil, fmt.Errorf("policy %q: caching needs a positive TTL", p.Prefix)
		case !p.Cache && p.TTL > 0:
			return nil, fmt.Errorf("policy %q: TTL %v given but caching is off", p.Prefix, p.TTL)
		case p.MaxValueBytes < 0:
			return nil, fmt.Errorf("policy %q: negative MaxValueBytes %d", p.Prefix, p.MaxValueBytes)
		case p.StaleIfError < 0 || p.StaleIfError > 0 && !p.Cache:
			return nil, fmt.Errorf("policy %q: StaleIfError %v needs caching and must not be negative", p.Prefix, p.StaleIfError)
		}
		if !p.Cache {
			p.CacheNil = false
		}
		p.Index = i
		hasDefault = hasDefault || p.Prefix == ""
		s.all = append(s.all, p)
	}
	s.hasDefault = hasDefault
	if !hasDefault {
		s.all = append(s.all, Policy{Index: len(s.all)})
	}

	// Tree nodes point into s.all, which no longer grows.
	var def *Policy
	rest := make([]entry, 0, len(s.all)-1)
	for i := range s.all {
		if s.all[i].Prefix == "" {
			def = &s.all[i]
		} else {
			rest = append(rest, entry{s.all[i].Prefix, &s.all[i]})
		}
	}
	sort.Slice(rest, func(i, j int) bool { return rest[i].suffix < rest[j].suffix })
	s.root = build("", def, rest)
	return s, nil
}

// entry is a prefix still to place, relative to the node being built.
type entry struct {
	suffix string // non-empty
	policy *Policy
}

// build makes the node for label with policy p and places rest, which is sorted
// and whose suffixes are relative to this node, below it. Grouping the sorted
// suffixes by first byte and cutting each group at its longest common prefix
// yields a compressed tree: a node without a policy always has two or more kids.
func build(label string, p *Policy, rest []entry) *node {
	n := &node{label: label, policy: p}
	for len(rest) > 0 {
		end := 1
		for end < len(rest) && rest[end].suffix[0] == rest[0].suffix[0] {
			end++
		}
		group := rest[:end]
		rest = rest[end:]
		// In a sorted group, the common prefix of all is that of the first and last.
		lcp := commonPrefix(group[0].suffix, group[len(group)-1].suffix)
		var own *Policy
		sub := make([]entry, 0, len(group))
		for _, e := range group {
			if len(e.suffix) == len(lcp) {
				own = e.policy
			} else {
				sub = append(sub, entry{e.suffix[len(lcp):], e.policy})
			}
		}
		n.first = append(n.first, lcp[0])
		n.kids = append(n.kids, build(lcp, own, sub))
	}
	return n
}

func commonPrefix(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return a[:i]
}

// Lookup returns the policy of the longest prefix of key. It does not allocate.
func (s *Set) Lookup(key []byte) *Policy {
	n := s.root
	best := n.policy
	for len(key) > 0 {
		i := bytes.IndexByte(n.first, key[0])
		if i < 0 {
			break
		}
		n = n.kids[i]
		// The conversion in a comparison does not allocate.
		if len(key) < len(n.label) || string(key[:len(n.label)]) != n.label {
			break
		}
		key = key[len(n.label):]
		if n.policy != nil {
			best = n.policy
		}
	}
	return best
}

// Matches returns every policy whose prefix key starts with, shortest prefix
// first: the last one is Lookup's. It is for explaining a lookup, and allocates.
func (s *Set) Matches(key []byte) []*Policy {
	n := s.root
	var out []*Policy
	if n.policy != nil {
		out = append(out, n.policy)
	}
	for len(key) > 0 {
		i := bytes.IndexByte(n.first, key[0])
		if i < 0 {
			break
		}
		n = n.kids[i]
		if len(key) < len(n.label) || string(key[:len(n.label)]) != n.label {
			break
		}
		key = key[len(n.label):]
		if n.policy != nil {
			out = append(out, n.policy)
		}
	}
	return out
}

// Implicit reports whether p is the non-caching default Compile added because
// the list had no "" prefix.
func (s *Set) Implicit(p *Policy) bool {
	return p.Prefix == "" && p.Index == len(s.all)-1 && !s.hasDefault
}

// All returns the policies in Index order, the added default last.
func (s *Set) All() []*Policy {
	out := make([]*Policy, len(s.all))
	for i := range s.all {
		out[i] = &s.all[i]
	}
	return out
}
