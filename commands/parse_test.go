package commands

import (
	"reflect"
	"strings"
	"testing"
)

// entry builds a COMMAND reply entry as go-redis decodes RESP2. specs nil
// leaves the key specs out, as servers before 7.0 do.
func entry(name string, arity int64, flags []string, fls [3]int64, specs []any, subs ...any) []any {
	f := make([]any, len(flags))
	for i, s := range flags {
		f[i] = s
	}
	e := []any{name, arity, f, fls[0], fls[1], fls[2], []any{}}
	if specs != nil {
		e = append(e, []any{}, specs, subs)
	}
	return e
}

func indexRange(flags []any, index, lastkey, step, limit int64) []any {
	return []any{
		"flags", flags,
		"begin_search", []any{"type", "index", "spec", []any{"index", index}},
		"find_keys", []any{"type", "range", "spec", []any{"lastkey", lastkey, "keystep", step, "limit", limit}},
	}
}

func mustParse(t *testing.T, reply any) *Table {
	t.Helper()
	tbl, err := Parse(reply)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

type keysCase struct {
	line     string
	want     []string
	complete bool
}

func checkKeys(t *testing.T, tbl *Table, cases []keysCase) {
	t.Helper()
	for _, tc := range cases {
		args := byteArgs(strings.Fields(tc.line))
		info := tbl.Lookup(args)
		if info == nil {
			t.Errorf("%s: Lookup = nil", tc.line)
			continue
		}
		keys, complete := info.Keys(args, nil)
		got := []string{}
		for _, k := range keys {
			got = append(got, string(k))
		}
		if !reflect.DeepEqual(got, tc.want) || complete != tc.complete {
			t.Errorf("%s: Keys = %q, %v; want %q, %v", tc.line, got, complete, tc.want, tc.complete)
		}
	}
}

// TestParseLegacy covers servers that publish no key specs (before 7.0):
// first/last/step decide, and movable keys are beyond them.
func TestParseLegacy(t *testing.T) {
	t.Parallel()
	tbl := mustParse(t, []any{
		entry("GET", 2, []string{"readonly", "fast"}, [3]int64{1, 1, 1}, nil),
		entry("mset", -3, []string{"write", "denyoom"}, [3]int64{1, -1, 2}, nil),
		entry("eval", -3, []string{"noscript", "movablekeys"}, [3]int64{0, 0, 0}, nil),
		entry("zunionstore", -4, []string{"write", "movablekeys"}, [3]int64{1, 1, 1}, nil),
		entry("sort", -2, []string{"write", "movablekeys"}, [3]int64{1, 1, 1}, nil),
		entry("ping", -1, []string{"stale"}, [3]int64{0, 0, 0}, nil),
		entry("odd", -1, nil, [3]int64{1, 1, 0}, nil),
	})
	checkKeys(t, tbl, []keysCase{
		{"get k", []string{"k"}, true},
		{"mset a 1 b 2", []string{"a", "b"}, true},
		{"mset a 1 b", []string{"a", "b"}, true},
		{"eval s 1 a", []string{}, false},
		{"zunionstore d 2 a b", []string{"d"}, false},
		{"sort k by w_* store d", []string{"k", "d"}, false},
		{"ping", []string{}, true},
		{"odd k", []string{}, false},
	})
	if info := tbl.Lookup(byteArgs([]string{"get"})); info.Name != "get" || !info.Flags.Has(ReadOnly|Fast) {
		t.Errorf("get: %+v", info)
	}
}

// TestParseSpecs covers key spec shapes the 7.0 table does not exercise,
// including a 7.4 command and specs Parse must distrust.
func TestParseSpecs(t *testing.T) {
	t.Parallel()
	rw := []any{"RW", "update"}
	tbl := mustParse(t, []any{
		// 7.4: HEXPIRE key seconds [NX|XX|GT|LT] FIELDS numfields field...
		entry("hexpire", -6, []string{"write", "denyoom", "fast"}, [3]int64{1, 1, 1},
			[]any{indexRange(rw, 1, 0, 1, 0)}),
		entry("stepzero", -2, []string{"write"}, [3]int64{1, 1, 1},
			[]any{indexRange(rw, 1, -1, 0, 0)}),
		entry("indexzero", -2, []string{"write"}, [3]int64{1, 1, 1},
			[]any{indexRange(rw, 0, 0, 1, 0)}),
		entry("huge", -2, []string{"write"}, [3]int64{1, 1, 1},
			[]any{indexRange(rw, 1, 1<<40, 1, 0)}),
		entry("fancy", -2, []string{"write"}, [3]int64{1, 1, 1}, []any{[]any{
			"flags", rw,
			"begin_search", []any{"type", "fancy", "spec", []any{}},
			"find_keys", []any{"type", "range", "spec", []any{"lastkey", int64(0), "keystep", int64(1), "limit", int64(0)}},
		}}),
		entry("incomplete", -2, []string{"write"}, [3]int64{1, 1, 1},
			[]any{indexRange([]any{"RW", "INCOMPLETE"}, 1, 0, 1, 0)}),
		entry("notkey", -2, []string{"pubsub"}, [3]int64{1, 1, 1},
			[]any{indexRange([]any{"not_key"}, 1, -1, 1, 0)}),
		// A backward keyword search, as MIGRATE's KEYS spec does.
		entry("backward", -2, []string{"write"}, [3]int64{0, 0, 0}, []any{[]any{
			"flags", rw,
			"begin_search", []any{"type", "keyword", "spec", []any{"keyword", "KEYS", "startfrom", int64(-2)}},
			"find_keys", []any{"type", "range", "spec", []any{"lastkey", int64(-1), "keystep", int64(1), "limit", int64(0)}},
		}}),
		// Keys every other argument from a key count, in RESP3's map shape.
		entry("pairs", -3, []string{"write"}, [3]int64{0, 0, 0}, []any{map[any]any{
			"flags":        rw,
			"begin_search": map[any]any{"type": "index", "spec": map[any]any{"index": int64(1)}},
			"find_keys":    map[any]any{"type": "keynum", "spec": map[any]any{"keynumidx": int64(0), "firstkey": int64(1), "keystep": int64(2)}},
		}}),
	})
	checkKeys(t, tbl, []keysCase{
		{"hexpire k 10 FIELDS 1 f", []string{"k"}, true},
		{"hexpire k 10 NX FIELDS 2 f g", []string{"k"}, true},
		{"stepzero a b", []string{}, false},
		{"indexzero a", []string{}, false},
		{"huge a b", []string{}, false},
		{"fancy a", []string{}, false},
		{"incomplete a", []string{"a"}, false},
		{"notkey a b", []string{}, true},
		{"backward x y keys a b", []string{"a", "b"}, true},
		{"backward x keys", []string{}, true},
		{"backward", []string{}, false},
		{"pairs 2 a 1 b 2", []string{"a", "b"}, true},
		{"pairs 3 a 1 b", []string{"a", "b"}, false},
		{"pairs 0", []string{}, false},
		{"pairs 0 x", []string{}, true},
		{"pairs -1 x", []string{}, false},
	})
}

func TestParseLongNames(t *testing.T) {
	t.Parallel()
	long := "module." + strings.Repeat("x", 2*stackName)
	tbl := mustParse(t, []any{
		entry(long, -1, nil, [3]int64{0, 0, 0}, []any{}),
		entry("box", -2, nil, [3]int64{0, 0, 0}, []any{},
			entry("box|"+long, -2, nil, [3]int64{0, 0, 0}, []any{})),
	})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{strings.ToUpper(long)}, long},
		{[]string{"BOX", strings.ToUpper(long)}, "box|" + long},
		{[]string{long + "x"}, ""},
		{[]string{long[:len(long)-1] + "y"}, ""},
	} {
		got := ""
		if info := tbl.Lookup(byteArgs(tc.args)); info != nil {
			got = info.Name
		}
		if got != tc.want {
			t.Errorf("Lookup(%.20q...) = %.20q, want %.20q", tc.args, got, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	ok := entry("get", 2, nil, [3]int64{1, 1, 1}, []any{})
	for name, reply := range map[string]any{
		"not an array":        "OK",
		"short entry":         []any{[]any{"get", int64(2), []any{}}},
		"name not a string":   []any{[]any{int64(1), int64(2), []any{}, int64(1), int64(1), int64(1)}},
		"arity not a number":  []any{[]any{"get", "2", []any{}, int64(1), int64(1), int64(1)}},
		"flags not an array":  []any{[]any{"get", int64(2), "readonly", int64(1), int64(1), int64(1)}},
		"first not a number":  []any{[]any{"get", int64(2), []any{}, "1", int64(1), int64(1)}},
		"specs not an array":  []any{[]any{"get", int64(2), []any{}, int64(1), int64(1), int64(1), []any{}, []any{}, "x"}},
		"subs not an array":   []any{[]any{"get", int64(2), []any{}, int64(1), int64(1), int64(1), []any{}, []any{}, []any{}, "x"}},
		"duplicate":           []any{ok, ok},
		"subcommand misnamed": []any{entry("box", -2, nil, [3]int64{}, []any{}, entry("other|x", 2, nil, [3]int64{}, []any{}))},
		"subcommand nested": []any{entry("box", -2, nil, [3]int64{}, []any{},
			entry("box|a", -2, nil, [3]int64{}, []any{}, entry("box|a|b", 2, nil, [3]int64{}, []any{})))},
	} {
		if _, err := Parse(reply); err == nil {
			t.Errorf("%s: Parse succeeded", name)
		}
	}
}
