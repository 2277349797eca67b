package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/acl"
)

// TestMetricsAfterTraffic runs a little of everything through the proxy, then
// checks that every metric the README documents is exported, that promlint
// finds nothing wrong with any name, help or type, and that the command label
// stays within known names.
func TestMetricsAfterTraffic(t *testing.T) {
	t.Parallel()
	o := envOptions{}
	seen := watchInvalidations(&o)
	e := startEnv(t, o)
	e.srv.metrics.ObserveSubscriber(e.sub.State)
	e.waitSubscribed()
	c := e.client(0)
	c.Set(bg, "k", "v", 0)
	waitNotified(t, seen, "k")
	c.Get(bg, "k")
	e.cache.Wait()
	c.Get(bg, "k")
	c.MGet(bg, "k", "nocache:1")
	c.TxPipelined(bg, func(p redis.Pipeliner) error {
		p.Incr(bg, "n")
		return nil
	})
	c.Do(bg, "NOSUCHCOMMAND", "x")
	c.Do(bg, "CACHEPROXY", "FLUSH", "k")
	e.srv.metrics.Reloaded(true)

	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
		if mf.GetName() == "cacheproxy_commands_total" {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if strings.ContainsAny(l.GetValue(), "ABCDEFGHIJKLMNOPQRSTUVWXYZ") || l.GetValue() == "nosuchcommand" {
						t.Errorf("command label %q: want lower-case known names and other", l.GetValue())
					}
				}
			}
		}
	}
	for _, name := range []string{
		"cacheproxy_l1_hits_total", "cacheproxy_l1_misses_total",
		"cacheproxy_l1_fills_stored_total", "cacheproxy_l1_fills_dropped_total",
		"cacheproxy_l1_bytes", "cacheproxy_l1_max_bytes", "cacheproxy_l1_entries", "cacheproxy_l1_evictions_total",
		"cacheproxy_invalidations_total",
		"cacheproxy_upstream_request_duration_seconds", "cacheproxy_upstream_errors_total",
		"cacheproxy_connected_clients", "cacheproxy_client_connections_accepted_total", "cacheproxy_client_connections_refused_total",
		"cacheproxy_commands_total", "cacheproxy_caching_enabled",
		"cacheproxy_invalidation_subscribed", "cacheproxy_invalidation_reconnects_total",
		"cacheproxy_invalidation_messages_total", "cacheproxy_invalidation_last_message_age_seconds",
		"cacheproxy_invalidation_lag_seconds",
		"cacheproxy_config_reloads_total", "cacheproxy_config_last_reload_successful",
	} {
		if !have[name] {
			t.Errorf("%s is not exported after traffic", name)
		}
	}
	for _, tc := range []struct {
		labels map[string]string
		min    float64
	}{
		{map[string]string{"command": "get"}, 2},
		{map[string]string{"command": "set"}, 1},
		{map[string]string{"command": "multi"}, 1},
		{map[string]string{"command": "incr"}, 1},
		{map[string]string{"command": "exec"}, 1},
		{map[string]string{"command": "cacheproxy"}, 1},
		{map[string]string{"command": "other"}, 1},
	} {
		if n := e.counter("cacheproxy_commands_total", tc.labels); n < tc.min {
			t.Errorf("cacheproxy_commands_total%v = %v, want at least %v", tc.labels, n, tc.min)
		}
	}
	if n := e.counter("cacheproxy_l1_hits_total", map[string]string{"policy": ""}); n < 1 {
		t.Errorf("hits of the default policy: %v", n)
	}
	if n := e.counter("cacheproxy_invalidations_total", map[string]string{"source": "admin"}); n != 1 {
		t.Errorf("admin invalidations %v", n)
	}
}

// TestHitPathDoesNotAllocate: counting and the (disabled) debug trace add no
// allocation to an L1 hit of GET, HGET or MGET, in either protocol.
func TestHitPathDoesNotAllocate(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	e.direct.Set(bg, "user:1", "v", 0)
	e.direct.Set(bg, "user:2", "w", 0)
	e.direct.HSet(bg, "user:h", "f", "v")
	for _, proto := range []int{2, 3} {
		c := redis.NewClient(&redis.Options{Addr: e.addr, Protocol: proto})
		t.Cleanup(func() { c.Close() })
		for _, args := range [][]string{{"GET", "user:1"}, {"HGET", "user:h", "f"}, {"MGET", "user:1", "user:2"}} {
			hitDoesNotAllocate(t, e, c, proto, args)
		}
	}
}

func hitDoesNotAllocate(t *testing.T, e *env, c *redis.Client, proto int, args []string) {
	cmd := command(args...)
	argsAny := make([]any, len(args))
	for i, a := range args {
		argsAny[i] = a
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.Do(bg, argsAny...)
		e.cache.Wait()
		cl := &client{s: e.srv, conn: &sinkConn{}, proto: proto}
		cl.authed, cl.perm = true, acl.Unrestricted
		cl.cmds = append(cl.cmds[:0], cmd)
		misses := e.counter("cacheproxy_l1_misses_total", nil)
		cl.run()
		cl.storeFills() // after a miss: the sink has no socket to write to
		if e.counter("cacheproxy_l1_misses_total", nil) == misses {
			allocs := testing.AllocsPerRun(200, func() {
				cl.cmds = append(cl.cmds[:0], cmd)
				cl.run()
			})
			if allocs != 0 {
				t.Fatalf("RESP%d %s: an L1 hit allocates %v times", proto, args[0], allocs)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("RESP%d %s never became an L1 hit", proto, args[0])
		}
	}
}

// BenchmarkHitPathCounted is BenchmarkHitPath's GET with what the server does
// after each batch (publishing the connection's command counts), for batches
// of 1 and 16 pipelined GETs: the cost of the metrics is the difference from
// a build without them (see README, Metrics).
func BenchmarkHitPathCounted(b *testing.B) {
	e := startEnv(b, envOptions{})
	e.waitSubscribed()
	e.direct.Set(bg, "user:1", "0123456789abcdef0123456789abcdef", 0)
	for range 3 {
		e.client(0).Get(bg, "user:1") // RESP3, as go-redis speaks by default
		e.cache.Wait()
	}
	cmd := command("GET", "user:1")
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			cl := &client{s: e.srv, conn: &sinkConn{}, proto: 3}
			cl.authed, cl.perm = true, acl.Unrestricted
			hits := e.counter("cacheproxy_l1_hits_total", nil)
			for i := 0; i < b.N; i += n {
				cl.cmds = cl.cmds[:0]
				for range n {
					cl.cmds = append(cl.cmds, cmd)
				}
				cl.run()
				cl.publishCounts()
			}
			if e.counter("cacheproxy_l1_hits_total", nil) == hits {
				b.Error("the benchmark missed the L1")
			}
		})
	}
}
