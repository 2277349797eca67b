package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/upstream/cluster"
)

// TestClusterUpstream runs the proxy on a list of a cluster's seed nodes, as
// the file may give them, and talks to it as a plain Redis: keys of every
// master are served and cached, commands over several slots are answered
// whole, and a write made on a master directly reaches the L1 through that
// master's own invalidation stream.
func TestClusterUpstream(t *testing.T) {
	t.Parallel()
	rc := redistest.StartCluster(t, redistest.ClusterOptions{})
	p := startProcOn(t, fmt.Sprintf("[%s, %s]", rc.Seeds()[0], rc.Seeds()[1]),
		"policies:\n  - prefix: \"\"\n    ttl: 30s\nshutdown_grace: 0s\n")
	listen, metrics, logs := p.listen, p.metrics, p.logs
	waitFor(t, 10*time.Second, "every master's canary notified", logs, func() bool {
		return strings.Count(logs.String(), `by="canary notified"`) >= 3
	})
	if strings.Contains(logs.String(), "refused the canary") {
		t.Error("a master refused its canary")
	}

	c := redis.NewClient(&redis.Options{Addr: listen, MaxRetries: -1})
	defer c.Close()
	// Keys on every master.
	byMaster := map[string]string{}
	for i := 0; len(byMaster) < 3; i++ {
		k := fmt.Sprintf("k%d", i)
		byMaster[rc.Owner(cluster.Slot([]byte(k)))] = k
	}
	var keys []string
	for master, k := range byMaster {
		keys = append(keys, k)
		if err := c.Set(bg, k, "v1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if !cached(t, rc.Node(master), c, k) {
			t.Fatalf("GET %s never came from the L1", k)
		}
	}
	if got := redisCLI(t, listen, "MGET", keys[0], keys[1], keys[2]); got != "v1\nv1\nv1" {
		t.Fatalf("MGET over three masters: %q", got)
	}
	if got := strings.Fields(redisCLI(t, listen, "KEYS", "k*")); len(got) != 3 {
		t.Fatalf("KEYS k* = %q; want the 3 keys of the 3 masters", got)
	}
	// A write on each master, behind the proxy's back.
	for master, k := range byMaster {
		if err := rc.NodeClient(master).Set(bg, k, "v2", 0).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the write on "+master+" reaches the L1", logs, func() bool {
			v, err := c.Get(bg, k).Result()
			return err == nil && v == "v2"
		})
	}
	if out := redisCLI(t, listen, "SELECT", "1"); !strings.Contains(out, "cluster mode") {
		t.Fatalf("SELECT 1: %q", out)
	}
	if s := scrape(t, metrics); !containsLine(s, "cacheproxy_cluster_masters 3") {
		t.Error("cacheproxy_cluster_masters is not 3")
	}
}
