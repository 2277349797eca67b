package commands

import (
	"bytes"

	"github.com/cacheproxy/cacheproxy/internal/ascii"
)

// keySpec is one Redis 7 key specification: begin_search finds where the keys
// start, find_keys says how many follow. The zero value is an unknown spec.
type keySpec struct {
	notKey     bool // names something else (a shard channel): never a key
	incomplete bool // the server says this spec may miss keys

	begin     uint8
	index     int    // beginIndex: absolute position
	keyword   string // beginKeyword: the keys start after this argument
	startfrom int    // beginKeyword: > 0 searches forward from here, <= 0 backward from argc+startfrom

	find      uint8
	lastkey   int // findRange: >= 0 relative to the first key; < 0 from the end, or of the part kept by limit
	keystep   int // findRange, findKeynum
	limit     int // findRange: with lastkey < 0, keys take 1/limit of the remaining arguments
	keynumidx int // findKeynum: position of the key count, relative to the begin
	firstkey  int // findKeynum: position of the first key, relative to the begin
}

const (
	beginUnknown = iota
	beginIndex
	beginKeyword
)

const (
	findUnknown = iota
	findRange
	findKeynum
)

// Keys appends the key arguments of this invocation (args[0] is the command
// name) to dst as sub-slices of args, in the order of the server's key specs.
// complete is false when they may not be all of the invocation's keys: a spec
// Redis marks unknown or incomplete, an arity or key count the server would
// reject, or keys named by the data (SORT BY/GET patterns). Then the caller
// must act conservatively. It never panics, whatever args holds.
//
// The keys are those named in the arguments. Some writes touch more than
// that, and the caller must know them by name: FLUSHDB, FLUSHALL and SWAPDB
// name no key; MOVE and COPY ... DB write in another database; scripts
// (EVAL, FCALL) can touch keys they did not declare.
func (i *Info) Keys(args [][]byte, dst [][]byte) (keys [][]byte, complete bool) {
	if i.special != nil {
		return i.special(args, dst)
	}
	complete = i.ArityOK(len(args))
	for k := range i.specs {
		var ok bool
		dst, ok = i.specs[k].keys(args, dst)
		complete = complete && ok
	}
	return dst, complete
}

// keys follows getKeysUsingKeySpecs in Redis's db.c, except that it returns
// what it could find where Redis would give up.
func (s *keySpec) keys(args [][]byte, dst [][]byte) ([][]byte, bool) {
	if s.notKey {
		return dst, true
	}
	argc := len(args)
	first := 0
	switch s.begin {
	case beginIndex:
		first = s.index
	case beginKeyword:
		if first = s.search(args); first == 0 {
			return dst, true // an optional keyword that is absent
		}
	default:
		return dst, false
	}
	ok := !s.incomplete
	last := 0
	switch s.find {
	case findRange:
		switch {
		case s.lastkey >= 0:
			last = first + s.lastkey
		case s.limit == 0:
			last = argc + s.lastkey
		default:
			rest := max(argc-first, 0)
			if rest%s.limit != 0 {
				ok = false // an unbalanced list, e.g. XREAD STREAMS a b 0
			}
			last = first + rest/s.limit + s.lastkey
		}
	case findKeynum:
		at := first + s.keynumidx
		if at >= argc {
			return dst, false
		}
		n, canonical := count(args[at])
		if n < 0 {
			return dst, false
		}
		ok = ok && canonical
		first += s.firstkey
		if n == 0 {
			return dst, ok
		}
		// n counts keys, keystep apart. Redis computes first+n-1, which
		// agrees for every built-in command (all step 1) and finds fewer keys
		// otherwise. Clamping keeps the sum small; last still lands past the end.
		last = first + (int(min(n, int64(argc)))-1)*s.keystep
	default:
		return dst, false
	}
	if first >= argc || last < first {
		return dst, false
	}
	if last >= argc {
		ok, last = false, argc-1
	}
	for j := first; j <= last; j += s.keystep {
		dst = append(dst, args[j])
	}
	return dst, ok
}

// search returns the position after the keyword, or 0 when it is absent. It
// scans the range Redis scans: forward up to the last-but-one argument, or
// backward down to position 2.
func (s *keySpec) search(args [][]byte) int {
	argc := len(args)
	if s.startfrom > 0 {
		for j := s.startfrom; j < argc-1; j++ {
			if ascii.EqualFold(args[j], s.keyword) {
				return j + 1
			}
		}
		return 0
	}
	start := argc + s.startfrom
	if start >= argc {
		return 0
	}
	for j := start; j > 1; j-- {
		if ascii.EqualFold(args[j], s.keyword) {
			return j + 1
		}
	}
	return 0
}

// count reads a key count. Redis's commands accept only what string2ll
// does (no sign, spaces, trailing bytes or leading zeros), but some of its
// fallbacks read counts with atoi; a count only atoi accepts is read as atoi
// would, so the keys found cover both, and reported as not canonical.
func count(b []byte) (n int64, canonical bool) {
	canonical = len(b) > 0 && len(b) <= 18 && (b[0] != '0' || len(b) == 1)
	j := 0
	for j < len(b) && (b[j] == ' ' || ('\t' <= b[j] && b[j] <= '\r')) {
		j++
	}
	neg := false
	if j < len(b) && (b[j] == '+' || b[j] == '-') {
		neg = b[j] == '-'
		j++
	}
	digits := 0
	for ; j < len(b) && '0' <= b[j] && b[j] <= '9'; j++ {
		n = min(n*10+int64(b[j]-'0'), limit)
		digits++
	}
	canonical = canonical && !neg && digits == len(b)
	if neg {
		n = -n
	}
	return n, canonical
}

// keysFunc extracts keys for a command whose key specs Redis leaves
// incomplete, by parsing arguments the way the command itself does.
type keysFunc func(args [][]byte, dst [][]byte) ([][]byte, bool)

// special is the only hand-kept key knowledge: the commands whose key specs
// Redis marks unknown or incomplete (as of 7.0 through 7.4).
var special = map[string]keysFunc{
	// SORT key ... [STORE dest]: STORE may appear anywhere and dest is written.
	"sort": func(args, dst [][]byte) ([][]byte, bool) { return sortKeys(args, dst, true) },
	// SORT_RO key ...: its BY/GET patterns read keys named by the data.
	"sort_ro": func(args, dst [][]byte) ([][]byte, bool) { return sortKeys(args, dst, false) },
	// MIGRATE host port key|"" db timeout [...] [KEYS k...]: a password may itself read "KEYS".
	"migrate": migrateKeys,
}

// sortKeys follows sortCommandGeneric's option parsing. Keys read through a
// BY or GET pattern (one with a '*') are unknowable, so they make the result
// incomplete; a constant BY pattern means "don't sort" and reads nothing.
func sortKeys(args, dst [][]byte, store bool) ([][]byte, bool) {
	if len(args) < 2 {
		return dst, false
	}
	dst = append(dst, args[1])
	var dest []byte
	complete := true
	for j := 2; j < len(args); j++ {
		left := len(args) - j - 1
		switch a := args[j]; {
		case ascii.EqualFold(a, "asc"), ascii.EqualFold(a, "desc"), ascii.EqualFold(a, "alpha"):
		case ascii.EqualFold(a, "limit") && left >= 2:
			j += 2
		case store && ascii.EqualFold(a, "store") && left >= 1:
			j++
			dest = args[j] // the last STORE wins, as in SORT itself
		case (ascii.EqualFold(a, "by") || ascii.EqualFold(a, "get")) && left >= 1:
			j++
			if bytes.IndexByte(args[j], '*') >= 0 {
				complete = false
			}
		default:
			return appendNonNil(dst, dest), false // a syntax error: SORT runs nothing
		}
	}
	return appendNonNil(dst, dest), complete
}

func appendNonNil(dst [][]byte, b []byte) [][]byte {
	if b == nil {
		return dst
	}
	return append(dst, b)
}

// migrateKeys follows migrateCommand's option parsing: the key argument, or,
// with KEYS (which requires an empty key argument), every argument after it.
func migrateKeys(args, dst [][]byte) ([][]byte, bool) {
	if len(args) < 6 {
		if len(args) > 3 {
			dst = append(dst, args[3])
		}
		return dst, false
	}
	for j := 6; j < len(args); j++ {
		more := len(args) - 1 - j
		switch a := args[j]; {
		case ascii.EqualFold(a, "copy"), ascii.EqualFold(a, "replace"):
		case ascii.EqualFold(a, "auth") && more >= 1:
			j++
		case ascii.EqualFold(a, "auth2") && more >= 2:
			j += 2
		case ascii.EqualFold(a, "keys"):
			if len(args[3]) != 0 {
				return dst, false // refused: KEYS needs an empty key argument
			}
			return append(dst, args[j+1:]...), true
		default:
			return append(dst, args[3]), false // a syntax error: MIGRATE moves nothing
		}
	}
	return append(dst, args[3]), true
}
