package acl

import (
	"bytes"
	"errors"
	"fmt"
)

// Pattern is one compiled key pattern, Redis's ACL "~pattern": a glob matched
// case-sensitively with Redis's stringmatch rules ("*", "?", "[abc]",
// "[^a-z]", "\" escapes). The common shapes skip the general matcher: "*"
// matches everything, a pattern without special characters is compared as is,
// and "prefix*" is a prefix comparison. Match never allocates.
type Pattern struct {
	src  string
	kind patternKind
	lit  []byte  // exact and prefix: the literal text, escapes removed
	toks []token // glob: the pattern as tokens
}

type patternKind uint8

const (
	matchAll patternKind = iota
	matchExact
	matchPrefix
	matchGlob
)

type tokKind uint8

const (
	tokByte  tokKind = iota // one literal byte
	tokAny                  // "?"
	tokStar                 // "*", runs of them collapsed
	tokClass                // "[...]"
)

type token struct {
	kind tokKind
	b    byte      // tokByte
	neg  bool      // tokClass: "[^...]"
	set  *[32]byte // tokClass: a bitmap of the bytes it holds (before neg)
}

// Compile compiles a key pattern. An empty pattern and a "[" without its "]"
// are errors: Redis would accept both, matching nothing, and the whole rest
// of the pattern as a class, which is never what was meant.
func Compile(src string) (Pattern, error) {
	if src == "" {
		return Pattern{}, errors.New("empty key pattern (\"*\" is every key)")
	}
	p := Pattern{src: src}
	var toks []token
	var lit []byte
	literal := true // every token so far is a literal byte
	for i := 0; i < len(src); i++ {
		switch ch := src[i]; ch {
		case '*':
			if n := len(toks); n == 0 || toks[n-1].kind != tokStar {
				toks = append(toks, token{kind: tokStar})
			}
		case '?':
			toks = append(toks, token{kind: tokAny})
			literal = false
		case '[':
			t, next, err := compileClass(src, i)
			if err != nil {
				return Pattern{}, err
			}
			toks = append(toks, t)
			i = next
			literal = false
		case '\\':
			if i+1 < len(src) {
				i++
			}
			fallthrough
		default:
			toks = append(toks, token{kind: tokByte, b: src[i]})
			if literal && (len(toks) < 2 || toks[len(toks)-2].kind == tokByte) {
				lit = append(lit, src[i])
			} else {
				literal = false
			}
		}
	}
	n := len(toks)
	switch {
	case src == "*":
		p.kind = matchAll
	case literal && n == len(lit):
		p.kind, p.lit = matchExact, lit
	case literal && n == len(lit)+1 && toks[n-1].kind == tokStar:
		p.kind, p.lit = matchPrefix, lit
	default:
		p.kind, p.toks = matchGlob, toks
	}
	return p, nil
}

// compileClass reads the class that starts at src[at] ('[') as Redis's
// stringmatch does: "^" first negates, "\x" is x, "a-z" is a range in either
// order, and the first "]" ends it. It returns the position of that "]".
func compileClass(src string, at int) (token, int, error) {
	t := token{kind: tokClass, set: new([32]byte)}
	i := at + 1
	if i < len(src) && src[i] == '^' {
		t.neg = true
		i++
	}
	for ; i < len(src); i++ {
		switch {
		case src[i] == '\\' && i+1 < len(src):
			i++
			t.add(src[i], src[i])
		case src[i] == ']':
			return t, i, nil
		case i+2 < len(src) && src[i+1] == '-':
			lo, hi := src[i], src[i+2]
			if lo > hi {
				lo, hi = hi, lo
			}
			t.add(lo, hi)
			i += 2
		default:
			t.add(src[i], src[i])
		}
	}
	return token{}, 0, fmt.Errorf("key pattern %q: the \"[\" at offset %d has no \"]\" (write \\[ for a literal one)", src, at)
}

func (t *token) add(lo, hi byte) {
	for c := int(lo); c <= int(hi); c++ {
		t.set[c>>3] |= 1 << (c & 7)
	}
}

func (t *token) matches(c byte) bool {
	switch t.kind {
	case tokByte:
		return t.b == c
	case tokAny:
		return true
	case tokClass:
		return (t.set[c>>3]&(1<<(c&7)) != 0) != t.neg
	}
	return false
}

// String is the pattern as written.
func (p Pattern) String() string { return p.src }

// Match reports whether key matches the pattern. As in Redis, the empty key
// matches "*" (every key) and no other pattern.
func (p *Pattern) Match(key []byte) bool {
	switch {
	case p.kind == matchAll:
		return true
	case len(key) == 0:
		return false
	}
	switch p.kind {
	case matchExact:
		return bytes.Equal(key, p.lit)
	case matchPrefix:
		return bytes.HasPrefix(key, p.lit)
	}
	return globMatch(p.toks, key)
}

// globMatch is the classic wildcard match: every token but "*" matches exactly
// one byte, so on a mismatch it is enough to let the last "*" seen swallow
// one more byte and retry from there. It takes O(len(toks)*len(key)) steps at
// worst, where a recursive matcher can take exponential time.
func globMatch(toks []token, key []byte) bool {
	ti, ki := 0, 0
	star, starKey := -1, 0
	for ki < len(key) {
		switch {
		case ti < len(toks) && toks[ti].kind == tokStar:
			star, starKey = ti, ki
			ti++
		case ti < len(toks) && toks[ti].matches(key[ki]):
			ti++
			ki++
		case star >= 0:
			starKey++
			ti, ki = star+1, starKey
		default:
			return false
		}
	}
	for ti < len(toks) && toks[ti].kind == tokStar {
		ti++
	}
	return ti == len(toks)
}
