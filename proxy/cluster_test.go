package proxy

import (
	"strings"
	"testing"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

// TestCluster runs every proxy test that needs a Redis Cluster on one (see
// redistest.RunClusterTests).
func TestCluster(t *testing.T) {
	t.Parallel()
	redistest.RunClusterTests(t, clusterSteady, clusterMoving)
}

var clusterSteady = []redistest.ClusterTest{
	{Name: "Compat", F: testClusterCompat},
	{Name: "CrossSlot", F: testClusterCrossSlot},
	{Name: "HashTags", F: testClusterHashTags},
	{Name: "Select", F: testClusterSelect},
	{Name: "Sessions", F: testClusterSessions},
	{Name: "ShardPubSub", F: testClusterShardPubSub},
	{Name: "Monitor", F: testClusterMonitor},
}

var clusterMoving = []redistest.ClusterTest{
	{Name: "Keyless", F: testClusterKeyless},
	{Name: "Migration", F: testClusterMigration},
	{Name: "Reshard", F: testClusterReshard},
	{Name: "Failover", F: testClusterFailover},
}

// testClusterCompat runs the compatibility groups through a proxy in front of
// the cluster against one reference Redis, with each run's keys under a hash
// tag of their own so that they share a slot, as a cluster's users put the
// keys one command takes together. Left out: the groups that use other
// databases or flush (Redis Cluster has database 0 alone, and the cluster is
// shared), and connection (SELECT).
func testClusterCompat(t *testing.T, rc *redistest.Cluster) {
	e := startClusterEnv(t, rc)
	ce := &compatEnv{proxy: e.addr, ref: redistest.Start(t, redistest.Options{}),
		prefix: func(p string) string { return "{" + p + "}" }}
	var run []compatScript
	for _, s := range scripts(t, compatGroups) {
		if strings.HasPrefix(s.name, "solo") || s.name == "connection" {
			continue
		}
		kept := s.lines[:0:0]
		for _, l := range s.lines {
			if !clusterDrops[l.input] {
				kept = append(kept, l)
			}
		}
		s.lines = kept
		run = append(run, s)
	}
	ce.check(t, run)
	ce.checkConcurrently(t, run, 4)
}

// clusterDrops are the compatibility lines whose replies a cluster rightly
// gives otherwise: SELECT of another database inside MULTI (refused at EXEC;
// see testClusterSelect), and WAIT, which counts the master's replica.
var clusterDrops = map[string]bool{
	"SELECT 2":     true,
	"SET {p}t db2": true,
	"SELECT 0":     true,
	"WAIT 0 0":     true,
}
