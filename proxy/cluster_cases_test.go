package proxy

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/upstream/cluster"
)

const crossSlot = "-CROSSSLOT Keys in request don't hash to the same slot\\r\\n"

// spread returns n keys under prefix that hash to at least three slots
// served by different masters.
func spread(t *testing.T, rc *redistest.Cluster, prefix string, n int) []string {
	t.Helper()
	var keys []string
	owners := map[string]bool{}
	for i := 0; len(keys) < n || len(owners) < 3; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		keys = append(keys, k)
		owners[rc.Owner(cluster.Slot([]byte(k)))] = true
		if i > 1000 {
			t.Fatal("no keys spread over three masters")
		}
	}
	return keys
}

// testClusterCrossSlot compares the commands the proxy splits, with keys in
// many slots, against one Redis, and checks that those it cannot split get
// Redis Cluster's CROSSSLOT error.
func testClusterCrossSlot(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	ce := &compatEnv{proxy: e.addr, ref: redistest.Start(t, redistest.Options{}), prefix: func(p string) string { return "x" + p }}
	ce.check(t, scripts(t, map[string]string{"split": `
MSET {p}a 1 {p}b 2 {p}c 3 {p}d 4 {p}e 5
MGET {p}a {p}b {p}missing {p}c {p}d {p}e {p}a
GET {p}c
MGET {p}e {p}d
EXISTS {p}a {p}b {p}missing {p}a {p}e
TOUCH {p}a {p}c {p}missing
DEL {p}a {p}missing {p}b
MGET {p}a {p}b {p}c
UNLINK {p}c {p}d
MGET {p}a {p}b {p}c {p}d {p}e
HSET {p}h f v
MGET {p}h {p}e
DEL {p}h {p}e {p}e
MSET {p}a 1 {p}b
MGET
EXISTS
`}))

	// Commands that cannot be split, with keys in two slots.
	keys := spread(t, rc, "nosplit:", 2)
	a, b := keys[0], keys[len(keys)-1]
	for _, cmd := range [][]string{
		{"RENAME", a, b},
		{"SINTERSTORE", a, a, b},
		{"MSETNX", a, "1", b, "2"},
		{"RPOPLPUSH", a, b},
		{"EVAL", "return 1", "2", a, b},
		{"BLPOP", a, b, "1"},
	} {
		got := dialRaw(t, e.addr).roundTrip(string(encodeCommand(byteArgs(cmd))), 1)
		if got != strings.ReplaceAll(crossSlot, `\r\n`, "\r\n") {
			t.Errorf("%q: %q; want CROSSSLOT", cmd, got)
		}
	}
	// A transaction whose keys span slots is refused at EXEC, as a cluster
	// node refuses it.
	c := e.client()
	_, err := c.TxPipelined(bg, func(p redis.Pipeliner) error {
		p.Set(bg, a, "1", 0)
		p.Set(bg, b, "2", 0)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") && !strings.Contains(err.Error(), "EXECABORT") {
		t.Errorf("MULTI over two slots: %v; want CROSSSLOT or EXECABORT", err)
	}
	if n, err := c.Exists(bg, a, b).Result(); err != nil || n != 0 {
		t.Errorf("after the refused MULTI, EXISTS = %d, %v; want 0", n, err)
	}
}

func byteArgs(args []string) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(a)
	}
	return out
}

// testClusterHashTags checks that keys sharing a hash tag land on the master
// of the tag's slot, where commands over several of them run as on one
// Redis.
func testClusterHashTags(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	c := e.client()
	for i := 0; i < 20; i++ {
		tag := fmt.Sprintf("{tag%d}", i)
		k1, k2 := tag+":a", "b:"+tag
		if err := c.MSet(bg, k1, "1", k2, "2").Err(); err != nil {
			t.Fatalf("MSET %s %s: %v", k1, k2, err)
		}
		if err := c.Rename(bg, k1, tag+":c").Err(); err != nil {
			t.Fatalf("RENAME within %s: %v", tag, err)
		}
		owner := rc.Owner(rc.Slot(tag))
		for _, k := range []string{tag + ":c", k2} {
			if n, err := rc.NodeClient(owner).Exists(bg, k).Result(); err != nil || n != 1 {
				t.Fatalf("%s is not on %s, the master of its tag's slot: %d, %v", k, owner, n, err)
			}
		}
		if v, err := c.SInterStore(bg, tag+"dst", tag+"x", tag+"y").Result(); err != nil || v != 0 {
			t.Fatalf("SINTERSTORE within %s: %v, %v", tag, v, err)
		}
	}
}

// testClusterSelect checks that database 0 is the only one, as Redis Cluster
// says.
func testClusterSelect(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	r := dialRaw(t, e.addr)
	for _, tc := range []struct{ req, want string }{
		{"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n", "+OK\r\n"},
		{"*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n", "-ERR SELECT is not allowed in cluster mode\r\n"},
		{"*2\r\n$6\r\nSELECT\r\n$1\r\nx\r\n", "-ERR value is not an integer or out of range\r\n"},
		{"*1\r\n$5\r\nMULTI\r\n", "+OK\r\n"},
		{"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n", "+QUEUED\r\n"},
		{"*1\r\n$4\r\nEXEC\r\n", "*1\r\n-ERR SELECT is not allowed in cluster mode\r\n"},
		{"*3\r\n$3\r\nSET\r\n$6\r\nsel:db\r\n$1\r\n0\r\n", "+OK\r\n"},
		{"*1\r\n$6\r\nASKING\r\n", "-ERR This instance has cluster support disabled\r\n"},
		{"*1\r\n$8\r\nREADONLY\r\n", "-ERR This instance has cluster support disabled\r\n"},
	} {
		if got := r.roundTrip(tc.req, 1); got != tc.want {
			t.Errorf("%q: %q; want %q", tc.req, got, tc.want)
		}
	}
	// go-redis selecting database 1 fails its connection, as on a cluster.
	c := redis.NewClient(&redis.Options{Addr: e.addr, DB: 1, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(bg).Err(); err == nil || !strings.Contains(err.Error(), "cluster mode") {
		t.Errorf("a client of database 1: %v; want the cluster's SELECT error", err)
	}
}

// testClusterSessions runs transactions, WATCH, blocking commands and scripts
// on keys of every master: each session goes to the master of its keys.
func testClusterSessions(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	c := e.client()
	keys := spread(t, rc, "sess:", 6)
	for _, k := range keys {
		// MULTI first, keys after: the session moves to their master.
		cmds, err := c.TxPipelined(bg, func(p redis.Pipeliner) error {
			p.Ping(bg)
			p.Set(bg, k, "1", 0)
			p.Incr(bg, k)
			return nil
		})
		if err != nil || len(cmds) != 3 || cmds[2].(*redis.IntCmd).Val() != 2 {
			t.Fatalf("MULTI on %s: %v, %v", k, cmds, err)
		}
		// WATCH, then a transaction that a write in between aborts.
		err = c.Watch(bg, func(tx *redis.Tx) error {
			if err := c.Set(bg, k, "changed", 0).Err(); err != nil {
				return err
			}
			_, err := tx.TxPipelined(bg, func(p redis.Pipeliner) error {
				p.Set(bg, k, "tx", 0)
				return nil
			})
			return err
		}, k)
		if !errors.Is(err, redis.TxFailedErr) {
			t.Fatalf("WATCH %s then a write: %v; want the transaction to fail", k, err)
		}
		if v, err := c.Get(bg, k).Result(); err != nil || v != "changed" {
			t.Fatalf("GET %s = %q, %v; want changed", k, v, err)
		}
		// A script on the key's master.
		if v, err := c.Eval(bg, "return redis.call('GET', KEYS[1])", []string{k}).Result(); err != nil || v != "changed" {
			t.Fatalf("EVAL on %s: %v, %v", k, v, err)
		}
	}
	// A blocking pop, on each master, gets what another client pushes
	// (before it blocks, or while it waits).
	for _, k := range keys[:3] {
		list := k + ":list"
		got := make(chan []string, 1)
		go func() {
			v, _ := e.client().BLPop(bg, 20*time.Second, list).Result()
			got <- v
		}()
		if err := c.RPush(bg, list, "x").Err(); err != nil {
			t.Fatal(err)
		}
		if v := <-got; !slices.Equal(v, []string{list, "x"}) {
			t.Fatalf("BLPOP %s = %q", list, v)
		}
	}
}

// testClusterKeyless checks the commands that go to every master: what one
// big Redis would answer. It flushes the cluster, so it runs alone.
func testClusterKeyless(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	c := e.client()
	if err := c.FlushAll(bg).Err(); err != nil {
		t.Fatal(err)
	}
	keys := spread(t, rc, "keyless:", 300)
	for _, k := range keys {
		if err := c.Set(bg, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := c.DBSize(bg).Result(); err != nil || n != int64(len(keys)) {
		t.Fatalf("DBSIZE = %d, %v; want %d", n, err, len(keys))
	}
	got, err := c.Keys(bg, "keyless:*").Result()
	slices.Sort(got)
	want := slices.Clone(keys)
	slices.Sort(want)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("KEYS = %d keys, %v; want %d", len(got), err, len(want))
	}
	// SCAN walks every master; small COUNTs make it take many steps.
	seen := map[string]int{}
	var cursor uint64
	for steps := 0; ; steps++ {
		page, next, err := c.Scan(bg, cursor, "keyless:*", 7).Result()
		if err != nil {
			t.Fatalf("SCAN %d: %v", cursor, err)
		}
		for _, k := range page {
			seen[k]++
		}
		if cursor = next; cursor == 0 {
			break
		}
		if steps > 10000 {
			t.Fatal("SCAN does not end")
		}
	}
	if len(seen) != len(keys) {
		t.Fatalf("SCAN saw %d keys; want %d", len(seen), len(keys))
	}
	if err := c.Do(bg, "SCAN", "12345678").Err(); err == nil || err.Error() != "ERR invalid cursor" {
		t.Errorf("SCAN of a cursor naming no master: %v", err)
	}
	if k, err := c.RandomKey(bg).Result(); err != nil || !strings.HasPrefix(k, "keyless:") {
		t.Errorf("RANDOMKEY = %q, %v", k, err)
	}
	// Scripts are loaded on every master, so EVALSHA works on any key.
	sha, err := c.ScriptLoad(bg, "return redis.call('GET', KEYS[1])").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[:10] {
		if v, err := c.EvalSha(bg, sha, []string{k}).Result(); err != nil || v != "v" {
			t.Fatalf("EVALSHA on %s: %v, %v", k, v, err)
		}
	}
	if ex, err := c.ScriptExists(bg, sha, "0000000000000000000000000000000000000000").Result(); err != nil || !slices.Equal(ex, []bool{true, false}) {
		t.Fatalf("SCRIPT EXISTS = %v, %v", ex, err)
	}
	if err := c.ScriptFlush(bg).Err(); err != nil {
		t.Fatal(err)
	}
	if ex, err := c.ScriptExists(bg, sha).Result(); err != nil || !slices.Equal(ex, []bool{false}) {
		t.Fatalf("SCRIPT EXISTS after SCRIPT FLUSH = %v, %v", ex, err)
	}
	// Functions too.
	lib := "#!lua name=keylesslib\nredis.register_function('kl_get', function(keys) return redis.call('GET', keys[1]) end)"
	if err := c.FunctionLoad(bg, lib).Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[:10] {
		if v, err := c.FCall(bg, "kl_get", []string{k}).Result(); err != nil || v != "v" {
			t.Fatalf("FCALL on %s: %v, %v", k, v, err)
		}
	}
	if err := c.FunctionFlush(bg).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.FlushDB(bg).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.DBSize(bg).Result(); err != nil || n != 0 {
		t.Fatalf("DBSIZE after FLUSHDB = %d, %v", n, err)
	}
	// PUBLISH reaches a subscriber of the proxy, wherever it runs.
	ps := e.client().Subscribe(bg, "keyless:chan")
	defer ps.Close()
	if _, err := ps.Receive(bg); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Publish(bg, "keyless:chan", "hi").Result(); err != nil || n != 1 {
		t.Fatalf("PUBLISH = %d, %v; want 1", n, err)
	}
	if m, err := ps.ReceiveMessage(bg); err != nil || m.Payload != "hi" {
		t.Fatalf("message %v, %v", m, err)
	}
}

// load writes and reads keys through the proxy until stop is closed, each
// worker keys of its own, and reports any reply that is wrong or a
// redirection.
type load struct {
	wg     sync.WaitGroup
	stop   chan struct{}
	ops    atomic.Int64
	mu     sync.Mutex
	errors []string
}

func startLoad(t *testing.T, e *clusterEnv, keys []string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		c := e.client()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				own := (len(keys) - w + workers - 1) / workers // keys w, w+workers, ...
				k := keys[w+i%own*workers]
				v := fmt.Sprintf("%d-%d", w, i)
				err := c.Set(bg, k, v, 0).Err()
				if err == nil {
					// With a key of another worker, likely on another master.
					var got []any
					got, err = c.MGet(bg, k, keys[(i+1)%len(keys)]).Result()
					if err == nil && got[0] != v {
						l.fail(fmt.Sprintf("MGET %s = %v after SET %s", k, got[0], v))
					}
				}
				if err != nil {
					l.fail(err.Error())
				}
				l.ops.Add(1)
			}
		}()
	}
	return l
}

func (l *load) fail(what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errors = append(l.errors, what)
}

// end stops the load and fails the test on a redirection a client saw or a
// read that missed its own write. Other errors (a connection the cluster
// closed) are logged: no command is retried, so they are expected.
func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	for _, e := range l.errors {
		if strings.HasPrefix(e, "MOVED") || strings.HasPrefix(e, "ASK") || strings.HasPrefix(e, "MGET") {
			t.Errorf("a client saw %q", e)
		} else {
			t.Logf("a client saw %q", e)
		}
	}
	if l.ops.Load() == 0 {
		t.Error("the load ran no command")
	}
	t.Logf("%d rounds of SET and MGET, %d errors", l.ops.Load(), len(l.errors))
}

// testClusterMigration moves a slot by hand, key by key, under load: clients
// see neither ASK nor MOVED, and read what they wrote.
func testClusterMigration(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	c := e.client()
	tag := "{mig}"
	slot := rc.Slot(tag)
	from := rc.Owner(slot)
	var to string
	for _, s := range rc.Shards() {
		if s.Master != from {
			to = s.Master
			break
		}
	}
	var keys []string
	for i := 0; i < 20; i++ {
		k := fmt.Sprintf("%s:%d", tag, i)
		keys = append(keys, k)
		if err := c.Set(bg, k, "before", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	l := startLoad(t, e, append(spread(t, rc, "migload:", 10), keys[10:]...), 4)
	m := rc.MigrateSlot(slot, to)
	m.Move(keys[:5]...)
	// Moved keys are served by the target (ASK), the others by the source,
	// new keys of the slot are made on the target.
	for _, k := range keys[:10] {
		if v, err := c.Get(bg, k).Result(); err != nil || v != "before" {
			t.Fatalf("GET %s during the migration = %q, %v", k, v, err)
		}
	}
	if err := c.Set(bg, tag+":new", "x", 0).Err(); err != nil {
		t.Fatalf("SET of a new key during the migration: %v", err)
	}
	asked := rc.NodeClient(to).Conn()
	defer asked.Close()
	var exists *redis.IntCmd
	if _, err := asked.Pipelined(bg, func(p redis.Pipeliner) error {
		p.Do(bg, "ASKING")
		exists = p.Exists(bg, tag+":new")
		return nil
	}); err != nil || exists.Val() != 1 {
		t.Fatalf("the new key is not on the target: %v, %v", exists, err)
	}
	if err := c.Set(bg, keys[1], "during", 0).Err(); err != nil {
		t.Fatalf("SET of a moved key during the migration: %v", err)
	}
	if err := c.Incr(bg, tag+":counter").Err(); err != nil {
		t.Fatalf("INCR during the migration: %v", err)
	}
	if e.cl.Stats().Redirects == 0 {
		t.Error("no ASK was followed during the migration")
	}
	m.Finish()
	if v, err := c.Get(bg, keys[1]).Result(); err != nil || v != "during" {
		t.Fatalf("GET %s after the migration = %q, %v", keys[1], v, err)
	}
	if v, err := c.Get(bg, keys[7]).Result(); err != nil || v != "before" {
		t.Fatalf("GET %s after the migration = %q, %v", keys[7], v, err)
	}
	if n, err := c.Get(bg, tag+":counter").Int(); err != nil || n != 1 {
		t.Fatalf("the counter incremented during the migration = %d, %v; want 1", n, err)
	}
	l.end(t)
	if e.cl.Topology().Owner(slot) != to {
		eventually(t, 10*time.Second, "the proxy learns the slot's new owner", func() bool { return e.cl.Topology().Owner(slot) == to })
	}
}

// testClusterReshard moves slots with redis-cli under load.
func testClusterReshard(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	keys := spread(t, rc, "reshard:", 200)
	l := startLoad(t, e, keys, 4)
	sh := rc.Shards()
	rc.Reshard(sh[0].Master, sh[2].Master, 200)
	l.end(t)
	c := e.client()
	for _, k := range keys {
		if err := c.Get(bg, k).Err(); err != nil && err != redis.Nil {
			t.Fatalf("GET %s after the reshard: %v", k, err)
		}
	}
}

// testClusterFailover promotes a replica under load: clients see no
// redirection, and the proxy follows the new master.
func testClusterFailover(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	keys := spread(t, rc, "failover:", 50)
	l := startLoad(t, e, keys, 4)
	old := rc.Shards()[0]
	rc.Failover(old.Replicas[0])
	after := l.ops.Load()
	eventually(t, 20*time.Second, "load after the failover", func() bool { return l.ops.Load() > after+50 })
	l.end(t)
	eventually(t, 10*time.Second, "the proxy learns the new master", func() bool {
		return slices.Contains(e.cl.Topology().Masters(), old.Replicas[0])
	})
	c := e.client()
	if err := c.Set(bg, keys[0], "after", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(bg, keys[0]).Result(); err != nil || v != "after" {
		t.Fatalf("GET after the failover = %q, %v", v, err)
	}
}

// testClusterShardPubSub subscribes to shard channels through the proxy:
// the connection goes to the master of the first one's slot; one of another
// master's slot is refused with CROSSSLOT, never MOVED; messages published
// through any client arrive.
func testClusterShardPubSub(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	chans := spread(t, rc, "shard:", 2)
	a := chans[0]
	var b string
	for _, ch := range chans[1:] {
		if rc.Owner(rc.Slot(ch)) != rc.Owner(rc.Slot(a)) {
			b = ch
			break
		}
	}
	sub := dialRaw(t, e.addr)
	if got := sub.roundTrip(string(encodeCommand(byteArgs([]string{"SSUBSCRIBE", a}))), 1); !strings.Contains(got, "ssubscribe") {
		t.Fatalf("SSUBSCRIBE %s: %q", a, got)
	}
	if got := sub.roundTrip(string(encodeCommand(byteArgs([]string{"SSUBSCRIBE", b}))), 1); got != strings.ReplaceAll(crossSlot, `\r\n`, "\r\n") {
		t.Fatalf("SSUBSCRIBE %s of another master: %q; want CROSSSLOT", b, got)
	}
	if n, err := e.client().SPublish(bg, a, "hi").Result(); err != nil || n != 1 {
		t.Fatalf("SPUBLISH %s = %d, %v; want 1", a, n, err)
	}
	if got := sub.roundTrip("", 1); !strings.Contains(got, "smessage") || !strings.Contains(got, "hi") {
		t.Fatalf("message: %q", got)
	}
}

// testClusterMonitor checks that a monitoring client's commands on keys of
// any master get a monitor's refusal, never the monitoring node's MOVED.
func testClusterMonitor(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m := &compatConn{c: nc}
	send := func(args ...string) {
		if _, err := nc.Write(encodeCommand(byteArgs(args))); err != nil {
			t.Fatal(err)
		}
	}
	send("MONITOR")
	if got := m.read(1)[0]; got != "+OK\r\n" {
		t.Fatalf("MONITOR: %q", got)
	}
	for _, k := range spread(t, rc, "monitor:", 3) {
		send("GET", k)
		// Lines of the stream (every other test's commands on that
		// master) may come first, many of them.
		got := m.read(1)[0]
		for deadline := time.Now().Add(time.Minute); monitorLine([]byte(got)) && time.Now().Before(deadline); {
			got = m.read(1)[0]
		}
		if got != "-ERR Replica can't interact with the keyspace\r\n" {
			t.Fatalf("GET %s while monitoring: %q", k, got)
		}
	}
}
