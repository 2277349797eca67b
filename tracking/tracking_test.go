package tracking

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recorder is a Sink that keeps what it is sent, as "target kind key" lines.
type recorder struct {
	mu   sync.Mutex
	msgs []string
	gone map[int64]bool // targets that no longer exist
}

func (r *recorder) add(target int64, msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone[target] {
		return false
	}
	r.msgs = append(r.msgs, fmt.Sprintf("%d %s", target, msg))
	return true
}

func (r *recorder) Invalidate(target int64, key []byte) bool {
	return r.add(target, "inv "+string(key))
}

func (r *recorder) InvalidateAll(target int64) bool { return r.add(target, "all") }

func (r *recorder) RedirectBroken(client, redirect int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf("%d broken %d", client, redirect))
}

// take returns the messages so far, sorted, and forgets them.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	slices.Sort(m)
	return m
}

func (r *recorder) kill(target int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone == nil {
		r.gone = map[int64]bool{}
	}
	r.gone[target] = true
}

func newTable(t testing.TB, maxKeys int) *Table {
	t.Helper()
	tbl, err := New(Config{Sink: &recorder{}, MaxKeys: maxKeys})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func rec(tbl *Table) *recorder { return tbl.sink.(*recorder) }

func anyID(int64) bool { return true }

func track(t testing.TB, tbl *Table, id int64, line string) {
	t.Helper()
	if err := tbl.Tracking(id, subst(words(line), id), anyID); err != nil {
		t.Fatalf("client %d: CLIENT TRACKING %s: %v", id, line, err)
	}
}

func keys(ks ...string) [][]byte {
	out := make([][]byte, len(ks))
	for i, k := range ks {
		out[i] = []byte(k)
	}
	return out
}

func expect(t *testing.T, tbl *Table, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := rec(tbl).take(); !slices.Equal(got, want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without a Sink succeeded")
	}
	if _, err := New(Config{Sink: &recorder{}, MaxKeys: -1}); err == nil {
		t.Error("New with a negative MaxKeys succeeded")
	}
}

func TestInvalidateOncePerRead(t *testing.T) {
	tbl := newTable(t, 0)
	track(t, tbl, 1, "on")
	track(t, tbl, 2, "on")
	tbl.Remember(1, keys("a", "b"))
	tbl.Remember(1, keys("a")) // a second read of a is still one reader
	tbl.Remember(2, keys("a"))
	tbl.Remember(3, keys("a")) // not tracking: nothing
	if st := tbl.Stats(); st != (Stats{Clients: 2, Keys: 2, Items: 3}) {
		t.Fatalf("stats %+v", st)
	}

	tbl.Invalidate([]byte("a"), 0)
	expect(t, tbl, "1 inv a", "2 inv a")
	tbl.Invalidate([]byte("a"), 0)
	expect(t, tbl) // no new read, no new invalidation
	tbl.Invalidate([]byte("zzz"), 0)
	expect(t, tbl)

	tbl.Remember(2, keys("a"))
	tbl.Invalidate([]byte("a"), 1)
	tbl.Invalidate([]byte("b"), 2)
	expect(t, tbl, "2 inv a", "1 inv b")
	if st := tbl.Stats(); st != (Stats{Clients: 2}) {
		t.Fatalf("stats %+v", st)
	}
}

func TestNoLoop(t *testing.T) {
	tbl := newTable(t, 0)
	track(t, tbl, 1, "on NOLOOP")
	track(t, tbl, 2, "on")
	track(t, tbl, 3, "on BCAST NOLOOP")
	tbl.Remember(1, keys("k"))
	tbl.Remember(2, keys("k"))

	tbl.Invalidate([]byte("k"), 1)
	expect(t, tbl, "2 inv k", "3 inv k")
	// As in Redis, the NOLOOP writer is forgotten for the key all the same.
	tbl.Invalidate([]byte("k"), 2)
	expect(t, tbl, "3 inv k")

	tbl.Remember(1, keys("k"))
	tbl.Remember(2, keys("k"))
	tbl.Invalidate([]byte("k"), 2) // 2 has no NOLOOP: it hears its own write
	expect(t, tbl, "1 inv k", "2 inv k", "3 inv k")
	tbl.Invalidate([]byte("k"), 3)
	expect(t, tbl)
}

func TestBCAST(t *testing.T) {
	tbl := newTable(t, 0)
	track(t, tbl, 1, "on BCAST PREFIX user: PREFIX ord")
	track(t, tbl, 2, "on BCAST")
	track(t, tbl, 3, "on BCAST PREFIX user:1")
	track(t, tbl, 4, "on BCAST PREFIX u REDIRECT 40")
	tbl.Remember(1, keys("user:1")) // BCAST clients remember nothing
	if st := tbl.Stats(); st != (Stats{Clients: 4, Prefixes: 5}) {
		t.Fatalf("stats %+v", st)
	}

	for _, k := range []string{"user:1", "user:12", "user:2", "order", "or", "u", ""} {
		tbl.Invalidate([]byte(k), 0)
	}
	expect(t, tbl,
		"1 inv user:1", "2 inv user:1", "3 inv user:1", "40 inv user:1",
		"1 inv user:12", "2 inv user:12", "3 inv user:12", "40 inv user:12",
		"1 inv user:2", "2 inv user:2", "40 inv user:2",
		"1 inv order", "2 inv order",
		"2 inv or",
		"2 inv u", "40 inv u",
		"2 inv ",
	)

	// Adding prefixes keeps the old ones; BCAST alone adds the empty prefix,
	// and then a key matching two of the client's prefixes is sent twice, as
	// Redis sends one message per prefix.
	track(t, tbl, 3, "on BCAST PREFIX x")
	track(t, tbl, 3, "on BCAST")
	if got := tbl.Info(3).Prefixes; !slices.Equal(got, []string{"", "user:1", "x"}) {
		t.Fatalf("prefixes %q", got)
	}
	tbl.Invalidate([]byte("x1"), 0)
	expect(t, tbl, "2 inv x1", "3 inv x1", "3 inv x1")

	track(t, tbl, 2, "off")
	tbl.Forget(3)
	tbl.Invalidate([]byte("user:1"), 0)
	expect(t, tbl, "1 inv user:1", "40 inv user:1")
	if st := tbl.Stats(); st != (Stats{Clients: 2, Prefixes: 3}) {
		t.Fatalf("stats %+v", st)
	}
	tbl.Forget(1)
	tbl.Forget(4)
	if tbl.bcast.Load() != nil {
		t.Fatal("the BCAST index outlived its last client")
	}
	tbl.Invalidate([]byte("user:1"), 0)
	expect(t, tbl)
}

// TestOptInOptOut follows Redis: OPTIN tracks a command only after CLIENT
// CACHING yes, OPTOUT tracks unless CLIENT CACHING no; the flag lasts for the
// next command, across CLIENT commands, and inside MULTI until EXEC.
func TestOptInOptOut(t *testing.T) {
	tbl := newTable(t, 0)
	const in, out = 1, 2
	track(t, tbl, in, "on OPTIN")
	track(t, tbl, out, "on OPTOUT")
	caching := func(id int64, arg string) {
		t.Helper()
		if err := tbl.Caching(id, keys(arg)); err != nil {
			t.Fatal(err)
		}
		tbl.CommandDone(id, true) // CLIENT CACHING is a CLIENT command
	}
	read := func(id int64, key string, inMulti bool) {
		tbl.Remember(id, keys(key))
		tbl.CommandDone(id, inMulti)
	}
	tracked := func(want ...string) {
		t.Helper()
		for _, k := range []string{"a", "b", "c", "d", "e"} {
			tbl.Invalidate([]byte(k), 0)
		}
		expect(t, tbl, want...)
	}

	if tbl.ShouldTrack(in) || !tbl.ShouldTrack(out) {
		t.Fatal("ShouldTrack before CLIENT CACHING")
	}
	read(in, "a", false)
	read(out, "a", false)
	tracked("2 inv a")

	caching(in, "yes")
	caching(out, "no")
	if !tbl.ShouldTrack(in) || tbl.ShouldTrack(out) {
		t.Fatal("ShouldTrack after CLIENT CACHING")
	}
	if got := tbl.Info(in).Flags(); !slices.Equal(got, []string{"on", "optin", "caching-yes"}) {
		t.Fatalf("flags %q", got)
	}
	tbl.CommandDone(in, true) // e.g. CLIENT ID: the flag stays
	read(in, "b", false)      // consumes it
	read(in, "c", false)
	read(out, "b", false)
	read(out, "c", false)
	tracked("1 inv b", "2 inv c")

	// CACHING, MULTI, two queued reads, EXEC: both run with the flag, which
	// ends with EXEC.
	caching(in, "yes")
	caching(out, "no")
	tbl.CommandDone(in, true)  // MULTI
	tbl.CommandDone(out, true) // MULTI
	tbl.CommandDone(in, true)  // GET d, queued
	tbl.CommandDone(out, true) // GET d, queued
	tbl.Remember(in, keys("d"))
	tbl.Remember(in, keys("e"))
	tbl.Remember(out, keys("d"))
	tbl.Remember(out, keys("e"))
	tbl.CommandDone(in, false) // EXEC
	tbl.CommandDone(out, false)
	read(in, "a", false)
	read(out, "a", false)
	tracked("1 inv d", "1 inv e", "2 inv a")
	if got := tbl.Info(out).Flags(); !slices.Equal(got, []string{"on", "optout"}) {
		t.Fatalf("flags %q", got)
	}

	// Re-enabling keeps a pending CACHING, as Redis does; off drops it.
	caching(in, "yes")
	track(t, tbl, in, "on OPTIN")
	if !tbl.Info(in).Caching {
		t.Fatal("CLIENT TRACKING on dropped CACHING")
	}
	track(t, tbl, in, "off")
	track(t, tbl, in, "on OPTIN")
	if tbl.Info(in).Caching || tbl.ShouldTrack(in) {
		t.Fatal("CACHING outlived CLIENT TRACKING off")
	}
}

func TestRedirect(t *testing.T) {
	tbl := newTable(t, 0)
	track(t, tbl, 1, "on REDIRECT 10")
	track(t, tbl, 2, "on BCAST PREFIX k REDIRECT 10")
	track(t, tbl, 3, "on REDIRECT 30")
	tbl.Remember(1, keys("k1"))
	tbl.Remember(3, keys("k1"))
	tbl.Invalidate([]byte("k1"), 0)
	expect(t, tbl, "10 inv k1", "10 inv k1", "30 inv k1")

	// The target goes: each message that cannot be redirected becomes a
	// tracking-redir-broken for the client, every time.
	rec(tbl).kill(10)
	tbl.Remember(1, keys("k2", "k3"))
	tbl.Invalidate([]byte("k2"), 0)
	tbl.Invalidate([]byte("k3"), 0)
	expect(t, tbl, "1 broken 10", "1 broken 10", "2 broken 10", "2 broken 10")
	for _, id := range []int64{1, 2} {
		info := tbl.Info(id)
		if !info.BrokenRedirect || info.Redirect != 10 || !slices.Contains(info.Flags(), "broken_redirect") {
			t.Fatalf("client %d: %+v", id, info)
		}
	}
	if tbl.Info(3).BrokenRedirect {
		t.Fatal("client 3's redirect is not broken")
	}
	tbl.FlushAll()
	expect(t, tbl, "1 broken 10", "2 broken 10", "30 all")

	// A new CLIENT TRACKING on forgets the broken redirect.
	track(t, tbl, 1, "on REDIRECT 11")
	if info := tbl.Info(1); info.BrokenRedirect || info.Redirect != 11 {
		t.Fatalf("%+v", info)
	}
	track(t, tbl, 1, "on")
	if got := tbl.Info(1).Redirect; got != 0 {
		t.Fatalf("redirect %d after on without REDIRECT", got)
	}
	// A client without redirect that has gone is not a broken redirect.
	rec(tbl).kill(1)
	tbl.Remember(1, keys("z"))
	tbl.Invalidate([]byte("z"), 0)
	expect(t, tbl)
}

func TestFlushAll(t *testing.T) {
	tbl := newTable(t, 0)
	track(t, tbl, 1, "on")
	track(t, tbl, 2, "on BCAST PREFIX x")
	track(t, tbl, 3, "on OPTIN")
	track(t, tbl, 4, "on NOLOOP")
	track(t, tbl, 5, "off")
	for i := range 100 {
		tbl.Remember(1, keys(fmt.Sprint("k", i)))
	}
	tbl.FlushAll()
	expect(t, tbl, "1 all", "2 all", "3 all", "4 all")
	if st := tbl.Stats(); st.Keys != 0 || st.Items != 0 || st.Clients != 4 {
		t.Fatalf("stats %+v", st)
	}
	tbl.Invalidate([]byte("k1"), 0)
	expect(t, tbl)
	tbl.Remember(1, keys("k1"))
	tbl.Invalidate([]byte("k1"), 0)
	expect(t, tbl, "1 inv k1")
}

func TestMaxKeysEvicts(t *testing.T) {
	const max = 10
	tbl := newTable(t, max)
	track(t, tbl, 1, "on")
	track(t, tbl, 2, "on REDIRECT 20")
	var read []string
	for i := range 3 * max {
		k := fmt.Sprint("k", i)
		read = append(read, k)
		tbl.Remember(1+int64(i%2), keys(k))
		if n := tbl.Stats().Keys; n > max {
			t.Fatalf("%d keys, max %d", n, max)
		}
	}
	// Every key read is either still in the table or was invalidated once, to
	// its reader's target.
	evicted := rec(tbl).take()
	if len(evicted) != 2*max {
		t.Fatalf("%d evictions, want %d: %q", len(evicted), 2*max, evicted)
	}
	for _, k := range read {
		tbl.Invalidate([]byte(k), 0)
	}
	all := append(evicted, rec(tbl).take()...)
	slices.Sort(all)
	var want []string
	for i, k := range read {
		want = append(want, fmt.Sprintf("%d inv %s", []int{1, 20}[i%2], k))
	}
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Fatalf("sent %q, want %q", all, want)
	}

	// 0 is no bound.
	tbl = newTable(t, 0)
	track(t, tbl, 1, "on")
	for i := range 1000 {
		tbl.Remember(1, keys(fmt.Sprint("k", i)))
	}
	if n := tbl.Stats().Keys; n != 1000 {
		t.Fatalf("%d keys without a bound", n)
	}
	expect(t, tbl)
}

func TestOffAndForgetDropKeys(t *testing.T) {
	tbl := newTable(t, 0)
	track(t, tbl, 1, "on")
	track(t, tbl, 2, "on")
	tbl.Remember(1, keys("a", "b"))
	tbl.Remember(2, keys("a"))
	track(t, tbl, 1, "off")
	track(t, tbl, 1, "on") // a new start: what 1 read before is not its any more
	tbl.Forget(2)
	tbl.Forget(2)
	tbl.Forget(99)
	if st := tbl.Stats(); st.Clients != 1 {
		t.Fatalf("stats %+v", st)
	}
	if info := tbl.Info(2); info.On || info.Redirect != -1 || !slices.Equal(info.Flags(), []string{"off"}) {
		t.Fatalf("forgotten client: %+v", info)
	}
	tbl.Invalidate([]byte("a"), 0)
	tbl.Invalidate([]byte("b"), 0)
	expect(t, tbl)
	if st := tbl.Stats(); st.Keys != 0 || st.Items != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDeadReadersSwept: clients that read a hot key and leave, while the key
// never changes, must not grow its reader set without bound.
func TestDeadReadersSwept(t *testing.T) {
	for _, live := range []int{1, 3 * smallReaders} {
		t.Run(fmt.Sprint(live, " live"), func(t *testing.T) {
			tbl := newTable(t, 0)
			for id := range int64(live) {
				track(t, tbl, 1+id, "on")
				tbl.Remember(1+id, keys("hot"))
			}
			for id := int64(1000); id < 11000; id++ {
				track(t, tbl, id, "on")
				tbl.Remember(id, keys("hot"))
				tbl.Forget(id)
			}
			if n := tbl.Stats().Items; n > int64(2*(live+1)) {
				t.Fatalf("%d readers kept for %d live", n, live)
			}
			tbl.Invalidate([]byte("hot"), 0)
			if got := len(rec(tbl).take()); got != live {
				t.Fatalf("%d invalidations, want %d", got, live)
			}
		})
	}
}

// TestSinkMayCallBack would deadlock if the table called its sink while
// holding a lock of its own.
func TestSinkMayCallBack(t *testing.T) {
	s := &callback{}
	tbl, err := New(Config{Sink: s, MaxKeys: 2})
	if err != nil {
		t.Fatal(err)
	}
	s.f = func(target int64) {
		tbl.Remember(target, keys("again"))
		tbl.Invalidate([]byte("other"), 0)
		tbl.Stats()
		tbl.Info(target)
		_ = tbl.Tracking(target, keys("on", "BCAST"), anyID)
		tbl.FlushAll()
	}
	for id := int64(1); id <= 2; id++ {
		if err := tbl.Tracking(id, keys("on"), anyID); err != nil {
			t.Fatal(err)
		}
	}
	if err := tbl.Tracking(3, keys("on", "BCAST"), anyID); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		tbl.Remember(1+int64(i%2), keys(fmt.Sprint("k", i))) // evicts
	}
	tbl.Invalidate([]byte("again"), 0)
	tbl.FlushAll()
	if s.calls == 0 {
		t.Fatal("the sink was never called")
	}
}

type callback struct {
	mu    sync.Mutex
	calls int
	depth int
	f     func(target int64)
}

func (c *callback) call(target int64) bool {
	c.mu.Lock()
	c.calls++
	c.depth++
	reenter := c.depth == 1
	c.mu.Unlock()
	if reenter {
		c.f(target)
	}
	c.mu.Lock()
	c.depth--
	c.mu.Unlock()
	return true
}

func (c *callback) Invalidate(target int64, _ []byte) bool { return c.call(target) }
func (c *callback) InvalidateAll(target int64) bool        { return c.call(target) }
func (c *callback) RedirectBroken(int64, int64)            {}

func TestInfoFlagsOrder(t *testing.T) {
	tbl := newTable(t, 0)
	track(t, tbl, 1, "on REDIRECT 9 OPTOUT NOLOOP")
	if err := tbl.Caching(1, keys("no")); err != nil {
		t.Fatal(err)
	}
	rec(tbl).kill(9)
	tbl.Remember(1, keys("k")) // OPTOUT with CACHING no: not remembered
	tbl.FlushAll()
	info := tbl.Info(1)
	if got := strings.Join(info.Flags(), " "); got != "on optout caching-no noloop broken_redirect" {
		t.Fatalf("flags %q", got)
	}
	if info.Redirect != 9 || len(info.Prefixes) != 0 {
		t.Fatalf("%+v", info)
	}
	if got := tbl.Stats().Keys; got != 0 {
		t.Fatalf("%d keys", got)
	}
}
