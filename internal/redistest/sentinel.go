package redistest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions tune StartSentinel.
type SentinelOptions struct {
	// Master is the name the sentinel monitors the primary under. Empty
	// means "mymaster".
	Master string
	// DownAfter is down-after-milliseconds. 0 means 1s.
	DownAfter time.Duration
}

// StartSentinel launches a redis-sentinel on a free 127.0.0.1 port that
// monitors primary with a quorum of 1, and registers its stop with
// t.Cleanup. SENTINEL FAILOVER on it (see Failover) promotes a replica at
// once, without waiting for the primary to be judged down.
func StartSentinel(t testing.TB, primary *Server, opts SentinelOptions) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-sentinel"); err != nil {
		t.Fatalf("redis-sentinel is not installed (apt-get install -y redis-sentinel): %v", err)
	}
	if opts.Master == "" {
		opts.Master = "mymaster"
	}
	if opts.DownAfter == 0 {
		opts.DownAfter = time.Second
	}
	host, port, _ := net.SplitHostPort(primary.Addr())
	s := &Server{t: t, dir: t.TempDir(), sentinel: fmt.Sprintf(
		"sentinel resolve-hostnames no\n"+
			"sentinel monitor %[1]s %[2]s %[3]s 1\n"+
			"sentinel down-after-milliseconds %[1]s %[4]d\n"+
			"sentinel failover-timeout %[1]s 10000\n"+
			"sentinel parallel-syncs %[1]s 1\n",
		opts.Master, host, port, opts.DownAfter.Milliseconds())}
	s.start("redis-sentinel")
	return s
}

// WaitReplicas waits until the sentinel knows n replicas of master that are
// in sync with it, as SENTINEL FAILOVER needs one.
func WaitReplicas(t testing.TB, sentinel *Server, master string, n int) {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr(), Protocol: 2})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		reps, err := c.Replicas(context.Background(), master).Result()
		ok := 0
		for _, r := range reps {
			if r["master-link-status"] == "ok" && r["flags"] == "slave" {
				ok++
			}
		}
		if err == nil && ok >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel %s: %d of %d replicas of %s ready after 30s (%v, %v)", sentinel.Addr(), ok, n, master, reps, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Failover runs SENTINEL FAILOVER master, retrying while the sentinel
// refuses (no good replica yet, a failover already in progress).
func Failover(t testing.TB, sentinel *Server, master string) {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr(), Protocol: 2})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Failover(context.Background(), master).Err()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("SENTINEL FAILOVER %s: %v", master, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
