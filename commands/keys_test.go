package commands

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// serverTable loads the table from a fresh real server.
func serverTable(tb testing.TB) (*Table, *redis.Client) {
	tb.Helper()
	c := redistest.Start(tb, redistest.Options{}).Client(0)
	tbl, err := Load(context.Background(), c)
	if err != nil {
		tb.Fatal(err)
	}
	return tbl, c
}

func byteArgs(args []string) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(a)
	}
	return out
}

// getKeys asks the server which arguments of args are keys.
func getKeys(c *redis.Client, args []string) ([]string, error) {
	cmd := []any{"command", "getkeys"}
	for _, a := range args {
		cmd = append(cmd, a)
	}
	reply, err := c.Do(context.Background(), cmd...).StringSlice()
	var rerr redis.Error
	if errors.As(err, &rerr) && strings.Contains(err.Error(), "has no key arguments") {
		return []string{}, nil
	}
	return reply, err
}

// TestKeysMatchServer compares Keys with the server's own COMMAND GETKEYS.
// partial: Keys must report complete=false (bad arity or count, unbalanced
// lists, keys named by data); its keys must then include the server's.
// refused: COMMAND GETKEYS answers an error for this invocation.
func TestKeysMatchServer(t *testing.T) {
	t.Parallel()
	tbl, c := serverTable(t)
	cases := []struct {
		args             []string
		partial, refused bool
	}{
		{args: []string{"GET", "k"}},
		{args: []string{"get", "k"}},
		{args: []string{"SET", "k", "v"}},
		{args: []string{"SET", "k", "v", "GET"}},
		{args: []string{"SET", "k", "v", "EX", "10", "NX"}},
		{args: []string{"GETEX", "k", "EX", "10"}},
		{args: []string{"GETDEL", "k"}},
		{args: []string{"GETSET", "k", "v"}},
		{args: []string{"APPEND", "k", "v"}},
		{args: []string{"INCR", "k"}},
		{args: []string{"MSET", "k1", "v1", "k2", "v2"}},
		{args: []string{"MSETNX", "a", "1", "b", "2"}},
		{args: []string{"MGET", "a", "b", "c"}},
		{args: []string{"DEL", "a", "b", "c"}},
		{args: []string{"UNLINK", "a", "b"}},
		{args: []string{"EXISTS", "a", "b"}},
		{args: []string{"TOUCH", "a", "b"}},
		{args: []string{"WATCH", "a", "b"}},
		{args: []string{"EXPIRE", "k", "10"}},
		{args: []string{"TTL", "k"}},
		{args: []string{"TYPE", "k"}},
		{args: []string{"DUMP", "k"}},
		{args: []string{"RESTORE", "k", "0", "payload", "REPLACE"}},
		{args: []string{"RENAME", "a", "b"}},
		{args: []string{"RENAMENX", "a", "b"}},
		{args: []string{"COPY", "a", "b"}},
		{args: []string{"COPY", "a", "b", "DB", "1", "REPLACE"}},
		{args: []string{"MOVE", "k", "1"}},
		{args: []string{"HSET", "h", "f", "v"}},
		{args: []string{"HMGET", "h", "f", "g"}},
		{args: []string{"LPUSH", "l", "a", "b"}},
		{args: []string{"LRANGE", "l", "0", "-1"}},
		{args: []string{"SMOVE", "s", "d", "m"}},
		{args: []string{"LMOVE", "s", "d", "LEFT", "RIGHT"}},
		{args: []string{"BLMOVE", "s", "d", "LEFT", "RIGHT", "0"}},
		{args: []string{"RPOPLPUSH", "s", "d"}},
		{args: []string{"BRPOPLPUSH", "s", "d", "0"}},
		{args: []string{"BLPOP", "a", "b", "0"}},
		{args: []string{"BZPOPMIN", "a", "b", "0"}},
		{args: []string{"LMPOP", "2", "a", "b", "LEFT"}},
		{args: []string{"LMPOP", "2", "a", "b", "LEFT", "COUNT", "3"}},
		{args: []string{"BLMPOP", "0", "2", "a", "b", "RIGHT"}},
		{args: []string{"ZMPOP", "1", "z", "MIN"}},
		{args: []string{"BZMPOP", "0", "1", "z", "MAX"}},
		{args: []string{"ZADD", "z", "1", "m"}},
		{args: []string{"ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"}},
		{args: []string{"ZINTERSTORE", "d", "2", "a", "b", "AGGREGATE", "MAX"}},
		{args: []string{"ZDIFFSTORE", "d", "2", "a", "b"}},
		{args: []string{"ZUNION", "2", "a", "b", "WITHSCORES"}},
		{args: []string{"ZINTERCARD", "2", "a", "b"}},
		{args: []string{"ZRANGESTORE", "d", "s", "0", "-1"}},
		{args: []string{"SINTERSTORE", "d", "a", "b"}},
		{args: []string{"SUNIONSTORE", "d", "a", "b"}},
		{args: []string{"SDIFFSTORE", "d", "a"}},
		{args: []string{"SINTERCARD", "2", "a", "b", "LIMIT", "1"}},
		{args: []string{"BITOP", "AND", "d", "a", "b"}},
		{args: []string{"BITOP", "NOT", "d", "a"}},
		{args: []string{"BITFIELD", "k", "SET", "u8", "0", "1"}},
		{args: []string{"PFADD", "h", "a", "b"}},
		{args: []string{"PFCOUNT", "a", "b"}},
		{args: []string{"PFMERGE", "d", "a", "b"}},
		{args: []string{"LCS", "a", "b"}},
		{args: []string{"EVAL", "return 1", "2", "a", "b", "x"}},
		{args: []string{"EVAL", "return 1", "0"}},
		{args: []string{"EVALSHA", "0123456789abcdef0123456789abcdef01234567", "1", "a", "x"}},
		{args: []string{"EVAL_RO", "return 1", "1", "a"}},
		{args: []string{"FCALL", "f", "1", "a"}},
		{args: []string{"FCALL_RO", "f", "2", "a", "b", "x"}},
		{args: []string{"XADD", "s", "*", "f", "v"}},
		{args: []string{"XADD", "s", "MAXLEN", "~", "10", "*", "f", "v"}},
		{args: []string{"XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"}},
		{args: []string{"XREADGROUP", "GROUP", "g", "c", "STREAMS", "s1", "s2", ">", ">"}},
		{args: []string{"XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "BLOCK", "0", "NOACK", "STREAMS", "s", ">"}},
		// The keyword search starts after the group and consumer names.
		{args: []string{"XREADGROUP", "GROUP", "streams", "STREAMS", "STREAMS", "s", ">"}},
		{args: []string{"XCLAIM", "s", "g", "c", "0", "0-1"}},
		{args: []string{"XAUTOCLAIM", "s", "g", "c", "0", "0"}},
		{args: []string{"XGROUP", "CREATE", "s", "g", "$"}},
		{args: []string{"xgroup", "create", "s", "g", "$", "MKSTREAM"}},
		{args: []string{"XGROUP", "DESTROY", "s", "g"}},
		{args: []string{"XINFO", "STREAM", "s"}},
		{args: []string{"GEORADIUS", "k", "1", "2", "3", "m", "STORE", "d"}},
		{args: []string{"GEORADIUS", "k", "1", "2", "3", "m", "COUNT", "5", "STOREDIST", "d"}},
		{args: []string{"GEORADIUSBYMEMBER", "k", "m", "3", "km", "STORE", "d"}},
		{args: []string{"GEORADIUS_RO", "k", "1", "2", "3", "m"}},
		{args: []string{"GEOSEARCHSTORE", "d", "s", "FROMMEMBER", "m", "BYRADIUS", "1", "km"}},
		{args: []string{"OBJECT", "ENCODING", "k"}},
		{args: []string{"object", "freq", "k"}},
		{args: []string{"MEMORY", "USAGE", "k", "SAMPLES", "5"}},
		{args: []string{"SORT", "k"}},
		{args: []string{"SORT", "k", "STORE", "d"}},
		{args: []string{"SORT", "k", "LIMIT", "0", "10", "STORE", "d", "ALPHA", "DESC"}},
		{args: []string{"SORT", "k", "STORE", "d1", "STORE", "d2"}},
		{args: []string{"SORT", "k", "BY", "nosort", "GET", "#", "STORE", "d"}},
		{args: []string{"SORT_RO", "k", "ALPHA"}},
		{args: []string{"MIGRATE", "h", "1", "k", "0", "5"}},
		{args: []string{"MIGRATE", "h", "1", "k", "0", "5", "COPY", "REPLACE"}},
		{args: []string{"MIGRATE", "h", "1", "", "0", "5", "KEYS", "a", "b"}},
		// A password that reads "KEYS" is what makes Redis's own spec incomplete.
		{args: []string{"MIGRATE", "h", "1", "", "0", "5", "AUTH", "KEYS", "KEYS", "a"}},
		{args: []string{"MIGRATE", "h", "1", "k", "0", "5", "AUTH2", "u", "KEYS"}},
		// Shard channels are marked not_key: they are not keys.
		{args: []string{"SPUBLISH", "ch", "m"}},
		{args: []string{"SSUBSCRIBE", "a", "b"}},
		{args: []string{"PUBLISH", "ch", "m"}},
		{args: []string{"CONFIG", "GET", "maxmemory"}},
		{args: []string{"CLIENT", "LIST"}},
		{args: []string{"FLUSHDB", "ASYNC"}},
		{args: []string{"SWAPDB", "0", "1"}},
		{args: []string{"PING", "x"}},

		// Keys named by the data: complete=false, same keys as the server.
		{args: []string{"SORT", "k", "BY", "w_*", "GET", "o_*", "STORE", "d"}, partial: true},
		{args: []string{"SORT_RO", "k", "GET", "h_*->f"}, partial: true},
		// Invocations the server itself would refuse.
		{args: []string{"SORT", "k", "LIMIT", "0"}, partial: true},
		{args: []string{"SORT_RO", "k", "STORE", "d"}, partial: true},
		{args: []string{"MIGRATE", "h", "1", "k", "0", "5", "BOGUS"}, partial: true},
		{args: []string{"MIGRATE", "h", "1", "k", "0", "5", "KEYS", "a", "b"}, partial: true, refused: true},
		{args: []string{"EVAL", "return 1", "-1", "a"}, partial: true},
		{args: []string{"EVAL", "return 1", "999999999", "a"}, partial: true},
		{args: []string{"EVAL", "return 1", "99999999999999999999999", "a"}, partial: true},
		{args: []string{"EVAL", "return 1", "abc", "a"}, partial: true},
		{args: []string{"FCALL", "f", "01", "a"}, partial: true},
		{args: []string{"FCALL", "f", "+1", "a"}, partial: true},
		{args: []string{"EVAL", "return 1", "1a", "a"}, partial: true},
		{args: []string{"EVAL", "return 1", "00", "a"}, partial: true},
		{args: []string{"LMPOP", "5", "a", "LEFT"}, partial: true, refused: true},
		{args: []string{"LMPOP", "0", "LEFT"}, partial: true, refused: true},
		{args: []string{"XREAD", "STREAMS", "a", "b", "0"}, partial: true},
		{args: []string{"XREADGROUP", "GROUP", "g", "c", "STREAMS"}, partial: true, refused: true},
		{args: []string{"GET"}, partial: true, refused: true},
		{args: []string{"SET", "k"}, partial: true, refused: true},
		{args: []string{"BITOP", "AND", "d"}, partial: true, refused: true},
		{args: []string{"OBJECT", "ENCODING"}, partial: true, refused: true},
		{args: []string{"GEORADIUS", "k", "1", "2"}, partial: true, refused: true},
		// A key count of zero where the command needs one: Redis refuses it,
		// and the destination is still reported.
		{args: []string{"ZUNIONSTORE", "d", "0", "a"}, refused: true},
	}
	for _, tc := range cases {
		name := strings.Join(tc.args, " ")
		info := tbl.Lookup(byteArgs(tc.args))
		if info == nil {
			t.Errorf("%s: Lookup = nil", name)
			continue
		}
		args := byteArgs(tc.args)
		keys, complete := info.Keys(args, nil)
		got := make([]string, len(keys))
		for i, k := range keys {
			got[i] = string(k)
		}
		if complete == tc.partial {
			t.Errorf("%s: complete = %v, want %v (keys %q)", name, complete, !tc.partial, got)
		}
		want, err := getKeys(c, tc.args)
		if (err != nil) != tc.refused {
			t.Errorf("%s: COMMAND GETKEYS = %q, %v; refused = %v", name, want, err, tc.refused)
			continue
		}
		if err != nil {
			t.Logf("%s: COMMAND GETKEYS refuses (%v); Keys = %q, complete = %v", name, err, got, complete)
			continue
		}
		if !tc.partial && !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Keys = %q, COMMAND GETKEYS = %q", name, got, want)
		}
		if tc.partial && !containsAll(got, want) {
			t.Errorf("%s: Keys = %q misses some of COMMAND GETKEYS = %q", name, got, want)
		}
	}
}

func containsAll(have, want []string) bool {
	left := map[string]int{}
	for _, h := range have {
		left[h]++
	}
	for _, w := range want {
		if left[w] == 0 {
			return false
		}
		left[w]--
	}
	return true
}

func TestFlagsAndArity(t *testing.T) {
	t.Parallel()
	tbl, _ := serverTable(t)
	cases := []struct {
		args  []string
		name  string
		has   Flags
		hasnt Flags
		arity int
	}{
		{[]string{"SET"}, "set", Write | Denyoom, ReadOnly, -3},
		{[]string{"GET"}, "get", ReadOnly | Fast, Write, 2},
		{[]string{"BLPOP"}, "blpop", Write | Blocking, ReadOnly, -3},
		{[]string{"XREAD"}, "xread", ReadOnly | Blocking | MovableKeys, Write, -4},
		{[]string{"SUBSCRIBE"}, "subscribe", PubSub | NoScript, Write, -2},
		{[]string{"EVAL"}, "eval", NoScript | MovableKeys, Write | ReadOnly, -3},
		{[]string{"SHUTDOWN"}, "shutdown", Admin | NoMulti | AllowBusy, Write, -1},
		{[]string{"AUTH"}, "auth", NoAuth | AllowBusy, Write, -2},
		{[]string{"FLUSHDB"}, "flushdb", Write, ReadOnly, -1},
		{[]string{"CONFIG", "GET"}, "config|get", Admin | Loading | Stale, Write, -3},
		{[]string{"CONFIG"}, "config", 0, Write | ReadOnly, -2},
	}
	for _, tc := range cases {
		info := tbl.Lookup(byteArgs(tc.args))
		if info == nil {
			t.Errorf("%v: Lookup = nil", tc.args)
			continue
		}
		if info.Name != tc.name || info.Arity != tc.arity || !info.Flags.Has(tc.has) || info.Flags&tc.hasnt != 0 {
			t.Errorf("%v: got %q arity %d flags %b, want %q arity %d with %b without %b",
				tc.args, info.Name, info.Arity, info.Flags, tc.name, tc.arity, tc.has, tc.hasnt)
		}
	}
	get := tbl.Lookup(byteArgs([]string{"get"}))
	mset := tbl.Lookup(byteArgs([]string{"mset"}))
	for _, tc := range []struct {
		info *Info
		n    int
		ok   bool
	}{{get, 2, true}, {get, 1, false}, {get, 3, false}, {mset, 3, true}, {mset, 5, true}, {mset, 2, false}} {
		if got := tc.info.ArityOK(tc.n); got != tc.ok {
			t.Errorf("%s ArityOK(%d) = %v, want %v", tc.info.Name, tc.n, got, tc.ok)
		}
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	tbl, _ := serverTable(t)
	for _, tc := range []struct {
		args []string
		want string // "" for nil
	}{
		{[]string{"GeT", "k"}, "get"},
		{[]string{"CONFIG", "get", "x"}, "config|get"},
		{[]string{"config", "SET", "x", "y"}, "config|set"},
		{[]string{"CONFIG"}, "config"},
		{[]string{"CONFIG", "BOGUS"}, ""},
		{[]string{"client", "No-Evict", "on"}, "client|no-evict"},
		{[]string{"XINFO", "stream", "s"}, "xinfo|stream"},
		{[]string{"GET", "config"}, "get"},
		{[]string{"NOSUCHCOMMAND"}, ""},
		{[]string{""}, ""},
		{[]string{strings.Repeat("g", 200)}, ""},
		{[]string{"GEORADIUSBYMEMBER_RO", "k"}, "georadiusbymember_ro"},
		{[]string{"GEORADIUSBYMEMBER_ROX", "k"}, ""},
		{nil, ""},
	} {
		info := tbl.Lookup(byteArgs(tc.args))
		got := ""
		if info != nil {
			got = info.Name
		}
		if got != tc.want {
			t.Errorf("Lookup(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
	var nilTable *Table
	if nilTable.Lookup(byteArgs([]string{"get"})) != nil {
		t.Error("nil Table: Lookup != nil")
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	tbl, _ := serverTable(t)
	cmds := [][][]byte{
		byteArgs([]string{"GET", "k"}),
		byteArgs([]string{"config", "GET", "x"}),
		byteArgs([]string{"NoSuchCommand"}),
		byteArgs([]string{strings.Repeat("X", 300)}),
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, c := range cmds {
			tbl.Lookup(c)
		}
	})
	if allocs != 0 {
		t.Errorf("Lookup allocates %v times per run", allocs)
	}
}

// TestLoadRESP3 checks that a RESP3 client (maps and sets in the reply) yields
// the same table as RESP2.
func TestLoadRESP3(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.Options{})
	c3 := redis.NewClient(&redis.Options{Addr: s.Addr(), Protocol: 3})
	t.Cleanup(func() { c3.Close() })
	t2, err := Load(context.Background(), s.Client(0))
	if err != nil {
		t.Fatal(err)
	}
	t3, err := Load(context.Background(), c3)
	if err != nil {
		t.Fatal(err)
	}
	if len(t2.cmds) < 200 || len(t2.cmds) != len(t3.cmds) || t2.maxName != t3.maxName {
		t.Fatalf("RESP2 table has %d commands (longest %d), RESP3 %d (longest %d)",
			len(t2.cmds), t2.maxName, len(t3.cmds), t3.maxName)
	}
	for name, a := range t2.cmds {
		sameInfo(t, a, t3.cmds[name])
		for sub, as := range a.subs {
			sameInfo(t, as, t3.cmds[name].subs[sub])
		}
	}
}

func sameInfo(t *testing.T, a, b *Info) {
	t.Helper()
	if b == nil {
		t.Errorf("%s: missing over RESP3", a.Name)
		return
	}
	if a.Name != b.Name || a.Arity != b.Arity || a.Flags != b.Flags || !reflect.DeepEqual(a.specs, b.specs) ||
		len(a.subs) != len(b.subs) || (a.special == nil) != (b.special == nil) {
		t.Errorf("%s: RESP2 %+v, RESP3 %+v", a.Name, *a, *b)
	}
}

// TestEveryCommandParsed checks that the real server's specs all parse into
// known shapes: an unknown spec here means Parse lost information, since Redis
// 7.0 marks only SORT and SORT_RO specs unknown (and those are special-cased).
func TestEveryCommandParsed(t *testing.T) {
	t.Parallel()
	tbl, _ := serverTable(t)
	check := func(info *Info) {
		for _, s := range info.specs {
			if (s.begin == beginUnknown || s.find == findUnknown) && info.special == nil {
				t.Errorf("%s: unknown key spec", info.Name)
			}
		}
	}
	for _, info := range tbl.cmds {
		check(info)
		for _, sub := range info.subs {
			check(sub)
		}
	}
}

func FuzzKeys(f *testing.F) {
	tbl, _ := serverTable(f)
	var names []string
	for name, info := range tbl.cmds {
		names = append(names, name)
		for sub := range info.subs {
			names = append(names, name+" "+sub)
		}
	}
	sort.Strings(names) // so that the seeds below mean the same commands every run
	f.Add(uint16(0), []byte("k v"))
	f.Add(uint16(1), []byte("2 a b LEFT"))
	f.Add(uint16(2), []byte("d -1 a"))
	f.Add(uint16(3), []byte("999999999 a b"))
	f.Add(uint16(4), []byte("STREAMS a b"))
	f.Add(uint16(5), []byte(""))
	f.Fuzz(func(t *testing.T, which uint16, data []byte) {
		line := names[int(which)%len(names)] + " " + string(data)
		args := byteArgs(strings.Split(line, " "))
		info := tbl.Lookup(args)
		if info == nil {
			if tbl.cmds[string(args[0])].subs == nil {
				t.Fatalf("Lookup(%q) = nil", line)
			}
			return // an unknown subcommand
		}
		keys, complete := info.Keys(args, nil)
		if complete && !info.ArityOK(len(args)) {
			t.Fatalf("%q: complete despite arity %d", line, info.Arity)
		}
		for _, k := range keys {
			if !isArg(k, args[1:]) {
				t.Fatalf("%q: key %q is not one of the arguments", line, k)
			}
		}
	})
}

// isArg reports whether k is one of args itself, not a copy.
func isArg(k []byte, args [][]byte) bool {
	for _, a := range args {
		if unsafe.SliceData(a) == unsafe.SliceData(k) && len(a) == len(k) {
			return true
		}
	}
	return false
}

func BenchmarkLookup(b *testing.B) {
	tbl, _ := serverTable(b)
	cmds := [][][]byte{
		byteArgs([]string{"GET", "k"}),
		byteArgs([]string{"set", "k", "v"}),
		byteArgs([]string{"Config", "get", "x"}),
		byteArgs([]string{"HGETALL", "h"}),
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if tbl.Lookup(cmds[i%len(cmds)]) == nil {
			b.Fatal("unknown command")
		}
	}
}
