package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// TestCluster runs every test of the package that needs a cluster on one
// (see redistest.RunClusterTests).
func TestCluster(t *testing.T) {
	t.Parallel()
	redistest.RunClusterTests(t, steadyTests, movingTests)
}

var steadyTests = []redistest.ClusterTest{
	{Name: "TopologyMatchesNodes", F: testTopologyMatchesNodes},
	{Name: "RouterBatch", F: testRouterBatch},
	{Name: "SessionMoves", F: testSessionMoves},
}

var movingTests = []redistest.ClusterTest{
	{Name: "RouterFollowsMigration", F: testRouterFollowsMigration},
	{Name: "TopologyFollowsFailover", F: testTopologyFollowsFailover},
}

// newCluster starts a Cluster on rc, closed when the test ends.
func newCluster(t *testing.T, rc *redistest.Cluster, refresh time.Duration) *Cluster {
	t.Helper()
	ctx := context.Background()
	table, err := commandsOf(rc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(ctx, Config{Seeds: rc.Seeds()[:1], Commands: table, Refresh: refresh, Node: upstream.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testTopologyMatchesNodes(t *testing.T, rc *redistest.Cluster) {
	c := newCluster(t, rc, time.Hour)
	top := c.Topology()
	var want []string
	for _, s := range rc.Shards() {
		want = append(want, s.Master)
		if got := top.Replicas(s.Master); !slices.Equal(got, s.Replicas) {
			t.Errorf("replicas of %s = %v; want %v", s.Master, got, s.Replicas)
		}
		if got := top.Ranges(s.Master); !slices.Equal(got, s.Slots) {
			t.Errorf("ranges of %s = %v; want %v", s.Master, got, s.Slots)
		}
		for _, r := range s.Slots {
			for _, slot := range []int{r[0], (r[0] + r[1]) / 2, r[1]} {
				if got := top.Owner(slot); got != s.Master {
					t.Errorf("owner of slot %d = %s; want %s", slot, got, s.Master)
				}
			}
		}
	}
	if !slices.Equal(top.Masters(), want) {
		t.Fatalf("masters = %v; want %v", top.Masters(), want)
	}
	// A refresh that finds the same map changes nothing.
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-top.Changed():
		t.Fatal("an unchanged slot map was reported as changed")
	default:
	}
}

func testTopologyFollowsFailover(t *testing.T, rc *redistest.Cluster) {
	c := newCluster(t, rc, 100*time.Millisecond)
	top := c.Topology()
	old := rc.Shards()[1]
	rc.Failover(old.Replicas[0])
	select {
	case <-top.Changed():
	case <-time.After(30 * time.Second):
		t.Fatal("no topology change reported within 30s of a failover")
	}
	// Later maps (gossip may settle in steps) end with the replica promoted.
	deadline := time.Now().Add(30 * time.Second)
	for now := c.Topology(); ; now = c.Topology() {
		if slices.Contains(now.Masters(), old.Replicas[0]) && !slices.Contains(now.Masters(), old.Master) &&
			slices.Equal(now.Replicas(old.Replicas[0]), []string{old.Master}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("masters %v after the failover of %s to %s", now.Masters(), old.Master, old.Replicas[0])
		}
		select {
		case <-now.Changed():
		case <-time.After(time.Second):
		}
	}
}

// commandsOf loads the command table from a node of rc.
func commandsOf(rc *redistest.Cluster) (*commands.Table, error) {
	return commands.Load(context.Background(), rc.NodeClient(rc.Seeds()[0]))
}
