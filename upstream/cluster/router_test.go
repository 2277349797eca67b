package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// do sends cmds as one batch through r and returns the replies, "<err>" for
// those the batch did not answer.
func do(t *testing.T, s interface{ Do(*upstream.Batch) }, cmds ...[]string) []string {
	t.Helper()
	var b upstream.Batch
	for _, c := range cmds {
		b.Add(resp.AppendCommand(nil, c...))
	}
	s.Do(&b)
	out := make([]string, b.Len())
	for i := range out {
		if i < b.Answered() {
			out[i] = string(b.Reply(i))
		} else {
			out[i] = fmt.Sprintf("<%v>", b.Err())
		}
	}
	return out
}

// routerDo adapts a Router to do.
type routerDo struct{ r *Router }

func (d routerDo) Do(b *upstream.Batch) { d.r.Do(context.Background(), 0, 7, b) }

// keysOn returns a key of prefix on each master.
func keysOn(t testing.TB, c *Cluster, prefix string) []string {
	t.Helper()
	byMaster := map[string]string{}
	for i := 0; len(byMaster) < len(c.Topology().Masters()); i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if m := c.Topology().Owner(Slot([]byte(k))); byMaster[m] == "" {
			byMaster[m] = k
		}
	}
	var out []string
	for _, m := range c.Topology().Masters() {
		out = append(out, byMaster[m])
	}
	return out
}

// testRouterBatch sends one pipeline over every master, with commands split
// per slot, refused, and fanned out, and checks the replies come back in
// order, as one Redis would give them.
func testRouterBatch(t *testing.T, rc *redistest.Cluster) {
	c := newCluster(t, rc, time.Hour)
	k := keysOn(t, c, "batch:")
	got := do(t, routerDo{c.Router(2)},
		[]string{"SET", k[0], "a"},
		[]string{"SET", k[1], "b"},
		[]string{"MSET", k[2], "c", k[0], "A"},
		[]string{"MGET", k[0], k[1], "batch:none", k[2]},
		[]string{"EXISTS", k[0], k[1], k[2], "batch:none", k[0]},
		[]string{"RENAME", k[0], k[1]},
		[]string{"PING"},
		[]string{"DEL", k[0], k[1], k[2]},
		[]string{"GET", k[1]},
		[]string{"MSET", k[0], "x", k[1]},
		[]string{"ASKING"},
	)
	want := []string{
		"+OK\r\n", "+OK\r\n", "+OK\r\n",
		"*4\r\n$1\r\nA\r\n$1\r\nb\r\n$-1\r\n$1\r\nc\r\n",
		":4\r\n",
		"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
		"+PONG\r\n",
		":3\r\n",
		"$-1\r\n",
		"-ERR wrong number of arguments for 'mset' command\r\n",
		"-ERR This instance has cluster support disabled\r\n",
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("reply %d = %q; want %q", i, got[i], want[i])
		}
	}
	// RESP3: MGET's nils are RESP3's.
	got = do(t, routerDo{c.Router(3)}, []string{"MGET", k[0], k[1]})
	if got[0] != "*2\r\n_\r\n_\r\n" {
		t.Errorf("RESP3 MGET = %q", got[0])
	}
}

// testSessionMoves runs a transaction whose first command has no key: the
// session moves to the key's master, queueing MULTI again there; a key of
// another master inside it fails the transaction.
func testSessionMoves(t *testing.T, rc *redistest.Cluster) {
	c := newCluster(t, rc, time.Hour)
	k := keysOn(t, c, "sess:")
	s, err := c.Router(2).Dedicated(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, key := range k {
		got := do(t, s, []string{"MULTI"}, []string{"PING"}, []string{"SET", key, "v"}, []string{"EXEC"})
		if got[3] != "*2\r\n+PONG\r\n+OK\r\n" {
			t.Fatalf("MULTI PING SET %s EXEC = %q", key, got)
		}
	}
	got := do(t, s, []string{"MULTI"}, []string{"SET", k[0], "1"}, []string{"SET", k[1], "2"}, []string{"EXEC"})
	if !strings.HasPrefix(got[2], "-CROSSSLOT") || !strings.HasPrefix(got[3], "-EXECABORT") {
		t.Fatalf("a transaction over two masters = %q", got)
	}
	if v := do(t, routerDo{c.Router(2)}, []string{"GET", k[0]}); v[0] != "$1\r\nv\r\n" {
		t.Fatalf("the aborted transaction wrote: GET = %q", v)
	}
	// Under WATCH, a read of another master's key is served; the
	// transaction on the watched key runs.
	got = do(t, s, []string{"WATCH", k[0]}, []string{"GET", k[1]}, []string{"MULTI"}, []string{"SET", k[0], "w"}, []string{"EXEC"})
	if got[1] != "$1\r\nv\r\n" || got[4] != "*1\r\n+OK\r\n" {
		t.Fatalf("WATCH, a read elsewhere, MULTI, SET, EXEC = %q", got)
	}
	// A second WATCH, of another master's key, cannot join the first.
	got = do(t, s, []string{"WATCH", k[0]}, []string{"WATCH", k[1]}, []string{"UNWATCH"})
	if got[0] != "+OK\r\n" || !strings.HasPrefix(got[1], "-CROSSSLOT") || got[2] != "+OK\r\n" {
		t.Fatalf("WATCH on two masters = %q", got)
	}
	// A blocking pop on each master.
	for _, key := range k {
		do(t, routerDo{c.Router(2)}, []string{"RPUSH", key + "l", "x"})
		if got := do(t, s, []string{"BLPOP", key + "l", "1"}); !strings.Contains(got[0], "$1\r\nx\r\n") {
			t.Fatalf("BLPOP %sl = %q", key, got)
		}
	}
}

// testRouterFollowsMigration moves a slot by hand and checks that the
// router's replies never carry ASK or MOVED, and that it counts what it
// followed.
func testRouterFollowsMigration(t *testing.T, rc *redistest.Cluster) {
	c := newCluster(t, rc, time.Hour) // no periodic refresh: only MOVED teaches it
	r := routerDo{c.Router(2)}
	key, other := "{rmig}a", "{rmig}b"
	slot := Slot([]byte(key))
	do(t, r, []string{"SET", key, "1"}, []string{"SET", other, "2"})
	from := c.Topology().Owner(slot)
	to := c.Topology().Masters()[0]
	if to == from {
		to = c.Topology().Masters()[1]
	}
	m := rc.MigrateSlot(slot, to)
	m.Move(key)
	got := do(t, r, []string{"GET", key}, []string{"GET", other}, []string{"SET", "{rmig}new", "3"})
	if got[0] != "$1\r\n1\r\n" || got[1] != "$1\r\n2\r\n" || got[2] != "+OK\r\n" {
		t.Fatalf("during the migration: %q", got)
	}
	asks := c.Stats().Redirects
	if asks == 0 {
		t.Fatal("no ASK followed")
	}
	// Keys of one slot split between source and target: the source says
	// TRYAGAIN until the slot has moved; the bounded retries end with it.
	got = do(t, r, []string{"MGET", key, other})
	if !strings.HasPrefix(got[0], "-TRYAGAIN") {
		t.Errorf("MGET over a slot split by its migration = %q; want TRYAGAIN", got[0])
	}
	m.Finish()
	got = do(t, r, []string{"MGET", key, other, "{rmig}new"})
	if got[0] != "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n" {
		t.Fatalf("after the migration: %q", got)
	}
	if c.Stats().Redirects == asks {
		t.Error("no MOVED followed after the migration")
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Topology().Owner(slot) != to {
		if time.Now().After(deadline) {
			t.Fatal("the MOVED reply did not refresh the slot map")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkRouter measures a batch through the router: a GET (one node, the
// batch as it is), an MGET over three masters (split, sent at once, merged)
// and a pipeline of 16 GETs over every master.
func BenchmarkRouter(b *testing.B) {
	rc := redistest.StartCluster(b, redistest.ClusterOptions{})
	table, err := commandsOf(rc)
	if err != nil {
		b.Fatal(err)
	}
	c, err := New(context.Background(), Config{Seeds: rc.Seeds(), Commands: table, Refresh: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r := c.Router(2)
	var keys []string
	for i := 0; i < 16; i++ {
		keys = append(keys, fmt.Sprintf("bench:%d", i))
	}
	for _, tc := range []struct {
		name string
		cmds [][]string
	}{
		{"GET", [][]string{{"GET", keys[0]}}},
		{"MGET3", [][]string{append([]string{"MGET"}, keysOn(b, c, "bench:")...)}},
		{"GETx16", func() (out [][]string) {
			for _, k := range keys {
				out = append(out, []string{"GET", k})
			}
			return out
		}()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var batch upstream.Batch
			for _, cmd := range tc.cmds {
				batch.Add(resp.AppendCommand(nil, cmd...))
			}
			b.ReportAllocs()
			for b.Loop() {
				r.Do(context.Background(), 0, 1, &batch)
				if batch.Err() != nil {
					b.Fatal(batch.Err())
				}
			}
		})
	}
}
