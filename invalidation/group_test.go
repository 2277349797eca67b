package invalidation

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
	"github.com/cacheproxy/cacheproxy/upstream"
	"github.com/cacheproxy/cacheproxy/upstream/cluster"
)

// clusterWait bounds waits that span a cluster's topology change: gossip on
// a loaded machine takes seconds.
const clusterWait = 60 * time.Second

func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, clusterWait, what, cond)
}

type groupHarness struct {
	g    *Group
	cl   *cluster.Cluster
	rec  *recorder
	logs *syncbuf.Buffer
}

// runGroup starts a Group in mode on rc, following a cluster.Cluster of its
// own, and stops it when the test ends, checking that Run returns with the
// Target suspended.
func runGroup(t *testing.T, rc *redistest.Cluster, mode Mode) *groupHarness {
	t.Helper()
	ctx := context.Background()
	table, err := commands.Load(ctx, rc.NodeClient(rc.Seeds()[0]))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cluster.New(ctx, cluster.Config{Seeds: rc.Seeds()[:1], Commands: table, Node: upstream.Config{},
		Refresh: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	h := &groupHarness{cl: cl, rec: &recorder{}, logs: &syncbuf.Buffer{}}
	h.g = NewGroup(Config{
		Options:        &redis.Options{},
		Mode:           mode,
		CanaryInterval: 20 * time.Millisecond,
		CanaryTimeout:  2 * time.Second,
		PollInterval:   20 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, cl.Topology, h.rec)
	runUntilCleanup(t, h.g.Run, h.rec, h.logs, clusterWait, "group")
	select {
	case <-h.g.Ready():
	case <-time.After(clusterWait):
		t.Fatalf("streams not trusted within %v: %+v\n%s", clusterWait, h.g.Nodes(), h.logs)
	}
	return h
}

// keyOn returns a key starting with prefix that the master at addr serves
// now.
func keyOn(t *testing.T, rc *redistest.Cluster, prefix, addr string) string {
	t.Helper()
	shards := rc.Shards()
	owner := func(slot int) string {
		for _, s := range shards {
			for _, r := range s.Slots {
				if r[0] <= slot && slot <= r[1] {
					return s.Master
				}
			}
		}
		return ""
	}
	for i := 0; i < 100000; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if owner(cluster.Slot([]byte(k))) == addr {
			return k
		}
	}
	t.Fatalf("no key under %q on %s", prefix, addr)
	return ""
}

// checkEveryMaster writes a key on each master directly and waits for its
// invalidation.
func (h *groupHarness) checkEveryMaster(t *testing.T, rc *redistest.Cluster, prefix string, db int) {
	t.Helper()
	for _, s := range rc.Shards() {
		key := keyOn(t, rc, prefix, s.Master)
		set(t, rc.NodeClient(s.Master), key)
		want := call{"invalidate", db, key}
		waitLong(t, want.String()+" from "+s.Master, func() bool { return h.rec.count(want) > 0 })
	}
}

// TestGroup runs against one cluster: the steady checks first, in both modes
// side by side, then the failover and the reshard, one at a time.
func TestGroup(t *testing.T) {
	t.Parallel()
	rc := redistest.StartCluster(t, redistest.ClusterOptions{})
	t.Run("steady", func(t *testing.T) {
		t.Run("Keyspace", func(t *testing.T) {
			t.Parallel()
			testGroupSteady(t, rc, runGroup(t, rc, Keyspace), "ks:", 0)
		})
		t.Run("Tracking", func(t *testing.T) {
			t.Parallel()
			testGroupSteady(t, rc, runGroup(t, rc, Tracking), "tr:", everyDB)
		})
	})
	t.Run("OneMasterOff", func(t *testing.T) { testGroupOneMasterOff(t, rc) })
	t.Run("CanaryThroughMigration", func(t *testing.T) { testCanaryThroughMigration(t, rc) })
	t.Run("Failover", func(t *testing.T) { testGroupFailover(t, rc) })
	t.Run("Reshard", func(t *testing.T) { testGroupReshard(t, rc) })
}

func testGroupSteady(t *testing.T, rc *redistest.Cluster, h *groupHarness, prefix string, db int) {
	h.checkEveryMaster(t, rc, prefix, db)
	nodes := h.g.Nodes()
	if len(nodes) != 3 {
		t.Fatalf("Nodes() = %+v; want the 3 masters", nodes)
	}
	for i, s := range rc.Shards() {
		n := nodes[i]
		if n.Addr != s.Master || !n.Subscribed || n.Canaries == 0 {
			t.Errorf("node %d: %s subscribed=%v canaries=%d; want %s trusted by its canary", i, n.Addr, n.Subscribed, n.Canaries, s.Master)
		}
	}
	st := h.g.State()
	if !st.Subscribed || st.Messages == 0 || st.Lag <= 0 {
		t.Errorf("State() = %+v", st)
	}
	// None of the Group's canaries reached the Target (another Group's,
	// on the same masters, are keys like any other).
	h.g.mu.Lock()
	var own []string
	for _, m := range h.g.members {
		own = append(own, m.sub.canaryKeys)
	}
	h.g.mu.Unlock()
	for _, c := range h.rec.snapshot() {
		for _, p := range own {
			if strings.HasPrefix(c.key, p) {
				t.Fatalf("a canary key reached the Target: %v", c)
			}
		}
	}
	if got := h.g.Stats(); got.TopologyChanges != 0 || got.Failovers != 0 || got.TopologyFlushes != 0 || got.Suspended <= 0 {
		t.Errorf("Stats() = %+v before any topology change; want only the suspension before the first trust", got)
	}
}

// testGroupOneMasterOff: one master's notifications switched off (and the
// Group not allowed to switch them on) suspend the Target, and the Group's
// State names that master.
func testGroupOneMasterOff(t *testing.T, rc *redistest.Cluster) {
	h := runGroup(t, rc, Keyspace)
	off := rc.Shards()[1].Master
	c := rc.NodeClient(off)
	if err := c.ConfigSet(bg, "notify-keyspace-events", "").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.ConfigSet(bg, "notify-keyspace-events", "KEA") })
	waitLong(t, "caching disabled on "+off, func() bool {
		st := h.g.State()
		return !st.Subscribed && strings.HasPrefix(st.CachingDisabled, off+": ")
	})
	for _, n := range h.g.Nodes() {
		if (n.CachingDisabled != "") != (n.Addr == off) {
			t.Errorf("node %s: CachingDisabled %q", n.Addr, n.CachingDisabled)
		}
	}
	if !strings.HasSuffix(h.rec.trust(), "suspend") {
		t.Errorf("the Target is not suspended: %s", h.rec.trust())
	}
}

// testCanaryThroughMigration: a canary written to a slot being migrated away
// gets ASK, which says nothing of the stream: the canary writes to another
// slot, and the stream stays trusted.
func testCanaryThroughMigration(t *testing.T, rc *redistest.Cluster) {
	shards := rc.Shards()
	from, to := shards[2], shards[1]
	moving, staying := from.Slots[0][0], from.Slots[0][1]
	m := rc.MigrateSlot(moving, to.Master)
	defer m.Finish()
	var asked atomic.Int64
	h := run(t, Config{Options: &redis.Options{Addr: from.Master}, CanaryHashTag: func() string {
		// Every other canary first tries the moving slot.
		if asked.Add(1)%2 == 1 {
			return cluster.SlotTag(moving)
		}
		return cluster.SlotTag(staying)
	}})
	h.waitReady(t)
	waitUntil(t, "five canaries back", func() bool { return h.sub.State().Canaries >= 5 })
	if got := h.rec.trust(); got != "suspend resume" {
		t.Errorf("trust went %s; want suspend resume", got)
	}
	if asked.Load() < 10 {
		t.Errorf("the moving slot was tried %d times", asked.Load())
	}
}

// testGroupFailover: a replica takes over; the Target is suspended, flushed,
// and resumed once the new master's stream is trusted, which then reports
// its writes.
func testGroupFailover(t *testing.T, rc *redistest.Cluster) {
	h := runGroup(t, rc, Keyspace)
	before := h.rec.trust()
	old := rc.Shards()[0]
	rc.Failover(old.Replicas[0])
	waitLong(t, "the failover counted", func() bool { return h.g.Stats().Failovers >= 1 })
	waitLong(t, "suspended and resumed again", func() bool {
		return strings.HasPrefix(h.rec.trust(), before+" suspend resume") && h.g.State().Subscribed
	})
	nodes := h.g.Nodes()
	found := false
	for _, n := range nodes {
		found = found || n.Addr == old.Replicas[0]
		if n.Addr == old.Master {
			t.Errorf("the demoted master %s still has a stream: %+v", old.Master, nodes)
		}
	}
	if !found {
		t.Errorf("the new master %s has no stream: %+v", old.Replicas[0], nodes)
	}
	h.checkEveryMaster(t, rc, "fo:", 0)
	st := h.g.Stats()
	t.Logf("failover: %+v", st)
	if st.TopologyFlushes < 1 || st.TopologyChanges < 1 {
		t.Errorf("Stats() = %+v", st)
	}
}

// testGroupReshard: slots move between masters; every change flushes, and
// the moved slots' writes are still reported.
func testGroupReshard(t *testing.T, rc *redistest.Cluster) {
	h := runGroup(t, rc, Keyspace)
	shards := rc.Shards()
	rc.Reshard(shards[1].Master, shards[2].Master, 20)
	moved := -1
	for _, r := range shards[1].Slots {
		for slot := r[0]; slot <= r[1] && moved < 0; slot++ {
			if rc.Owner(slot) == shards[2].Master {
				moved = slot
			}
		}
	}
	if moved < 0 {
		t.Fatalf("no slot of %s moved to %s", shards[1].Master, shards[2].Master)
	}
	waitLong(t, "the change seen", func() bool {
		return h.g.Stats().TopologyChanges >= 1 && h.g.State().Subscribed &&
			h.cl.Topology().Owner(moved) == shards[2].Master
	})
	// A key of a moved slot, written on its new owner.
	var key string
	for i := 0; ; i++ {
		key = fmt.Sprintf("rs:%d", i)
		if cluster.Slot([]byte(key)) == moved {
			break
		}
	}
	set(t, rc.NodeClient(shards[2].Master), key)
	want := call{"invalidate", 0, key}
	waitLong(t, want.String(), func() bool { return h.rec.count(want) > 0 })
	h.checkEveryMaster(t, rc, "rs2:", 0)
	st := h.g.Stats()
	t.Logf("reshard of 20 slots: %+v", st)
	if st.Failovers != 0 || st.TopologyFlushes < 1 {
		t.Errorf("Stats() = %+v", st)
	}
}
