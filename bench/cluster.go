package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/localnet"
)

// The cluster suite (`bench cluster`) puts the proxy in front of a Redis
// Cluster of three masters and three replicas and measures it, side by side,
// against go-redis's ClusterClient talking to the cluster directly (slot
// routing in the client). Both sides are go-redis clients with the same
// number of connections per target, so the client's own cost is on both.

// clusterScenario is one workload of the cluster suite.
type clusterScenario struct {
	Name, Description string
	// op runs one request through c, on keys drawn by the worker's counter n.
	op func(ctx context.Context, c redis.Cmdable, n uint64) error
}

const clusterKeys = 10000

func clusterKey(prefix string, n uint64) string {
	return prefix + strconv.FormatUint(n%clusterKeys, 10)
}

func clusterScenarios() []clusterScenario {
	return []clusterScenario{
		{"cluster-get-hit", "GET of cached keys (the proxy answers from its L1)", func(ctx context.Context, c redis.Cmdable, n uint64) error {
			return c.Get(ctx, clusterKey("bench:", n*7919)).Err()
		}},
		{"cluster-get-uncached", "pass-through GET on an uncached prefix", func(ctx context.Context, c redis.Cmdable, n uint64) error {
			return c.Get(ctx, clusterKey("nocache:", n*7919)).Err()
		}},
		{"cluster-mget-10", "10 cached keys of different slots at once: MGET through the proxy; " +
			"directly, a pipeline of GETs the ClusterClient splits per node (MGET across slots is CROSSSLOT)",
			func(ctx context.Context, c redis.Cmdable, n uint64) error {
				keys := make([]string, 10)
				for i := range keys {
					keys[i] = clusterKey("bench:", (n*10+uint64(i))*7919)
				}
				if cc, ok := c.(*redis.ClusterClient); ok {
					_, err := cc.Pipelined(ctx, func(p redis.Pipeliner) error {
						for _, k := range keys {
							p.Get(ctx, k)
						}
						return nil
					})
					return err
				}
				return c.MGet(ctx, keys...).Err()
			}},
	}
}

// clusterResult is one target's median over the rounds of one scenario.
type clusterResult struct {
	OpsPerSec float64
	P50, P99  time.Duration
}

func clusterCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		proxyBin, out, redisBin string
		conns, rounds           int
		duration                time.Duration
	)
	fs.StringVar(&proxyBin, "proxy-bin", "", "the proxy binary to start (required)")
	fs.StringVar(&out, "out", filepath.Join("bench", "results"), "directory for cluster.md")
	fs.StringVar(&redisBin, "redis-server", "redis-server", "redis-server binary (redis-cli must be beside it on PATH)")
	fs.IntVar(&conns, "conns", 50, "concurrent requests per target")
	fs.IntVar(&rounds, "rounds", 3, "rounds per scenario, targets alternating; medians are reported")
	fs.DurationVar(&duration, "duration", 3*time.Second, "length of one target's turn in one round")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if proxyBin == "" {
		return errors.New("cluster: --proxy-bin is required")
	}
	if conns < 1 || rounds < 1 || duration <= 0 {
		return errors.New("cluster: --conns, --rounds and --duration must be positive")
	}
	redisPath, err := exec.LookPath(redisBin)
	if err != nil {
		return fmt.Errorf("cluster needs redis-server: %w", err)
	}
	cliPath, err := exec.LookPath("redis-cli")
	if err != nil {
		return fmt.Errorf("cluster needs redis-cli: %w", err)
	}
	proxyPath, err := filepath.Abs(proxyBin)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	l, err := newLauncher(ctx, "cluster")
	if err != nil {
		return err
	}
	defer l.close()

	seeds, err := startCluster(ctx, l, redisPath, cliPath)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	configPath := filepath.Join(l.dir, "cacheproxy.yaml")
	if err := os.WriteFile(configPath, []byte(proxyConfig), 0o644); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	proxyAddr, err := l.start("proxy", func(addr string) ([]string, error) {
		return []string{proxyPath, "--config", configPath, "--listen", addr, "--metrics", "",
			"--upstream", "redis-cluster://" + strings.Join(seeds, ",")}, nil
	})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}

	direct := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds, Protocol: 2, PoolSize: conns, MaxRetries: -1})
	defer direct.Close()
	proxied := redis.NewClient(&redis.Options{Addr: proxyAddr, Protocol: 2, PoolSize: conns, MaxRetries: -1})
	defer proxied.Close()
	if err := clusterPreload(ctx, direct); err != nil {
		return fmt.Errorf("cluster: preload: %w", err)
	}
	targets := []struct {
		name string
		c    redis.Cmdable
	}{{"cluster (ClusterClient)", direct}, {"proxy", proxied}}

	fmt.Fprintf(stdout, "cluster suite: 3 masters + 3 replicas %v, proxy %s; %d connections, %d rounds of %v\n",
		seeds, proxyAddr, conns, rounds, duration)
	var md strings.Builder
	fmt.Fprintf(&md, "# Cluster scenarios\n\n`make bench` (`bench cluster`): the proxy in front of a Redis Cluster of 3 masters and 3 replicas "+
		"on loopback, against go-redis's ClusterClient talking to the cluster directly; %d concurrent requests per target, "+
		"medians of %d rounds of %v, targets alternating. The client, the six nodes and the proxy share the machine's "+
		"cores: compare the rows, not the absolute figures.\n\n", conns, rounds, duration)
	fmt.Fprintf(&md, "| scenario | target | ops/s | p50 | p99 |\n|---|---|---|---|---|\n")
	for _, sc := range clusterScenarios() {
		fmt.Fprintf(stdout, "\n%s: %s\n", sc.Name, sc.Description)
		// One unmeasured turn each: the proxy's L1 fills, connections open.
		for _, t := range targets {
			if _, err := clusterRun(ctx, t.c, sc, conns, duration/3); err != nil {
				return fmt.Errorf("cluster: %s on %s: %w", sc.Name, t.name, err)
			}
		}
		runs := make([][]clusterResult, len(targets))
		for range rounds {
			for i, t := range targets {
				r, err := clusterRun(ctx, t.c, sc, conns, duration)
				if err != nil {
					return fmt.Errorf("cluster: %s on %s: %w", sc.Name, t.name, err)
				}
				runs[i] = append(runs[i], r)
			}
		}
		for i, t := range targets {
			m := clusterMedian(runs[i])
			line := fmt.Sprintf("%-24s %10.0f ops/s   p50 %-9v p99 %v", t.name, m.OpsPerSec, m.P50, m.P99)
			fmt.Fprintln(stdout, "  "+line)
			fmt.Fprintf(&md, "| %s | %s | %.0f | %v | %v |\n", sc.Name, t.name, m.OpsPerSec, m.P50, m.P99)
		}
	}
	fmt.Fprintf(&md, "\nScenarios:\n")
	for _, sc := range clusterScenarios() {
		fmt.Fprintf(&md, "- `%s`: %s\n", sc.Name, sc.Description)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	path := filepath.Join(out, "cluster.md")
	if err := writeFile(path, []byte(md.String())); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nresults in %s\n", path)
	return nil
}

// startCluster starts six cluster-enabled redis-servers and joins them with
// redis-cli --cluster create (one replica per master), returning their
// addresses once every node reports cluster_state:ok.
func startCluster(ctx context.Context, l *launcher, redisPath, cliPath string) ([]string, error) {
	var addrs []string
	for i := range 6 {
		addr, err := l.start(fmt.Sprintf("redis-cluster-%d", i), func(addr string) ([]string, error) {
			_, port, _ := strings.Cut(addr, ":")
			bus, err := localnet.FreeAddr()
			if err != nil {
				return nil, err
			}
			_, busPort, _ := strings.Cut(bus, ":")
			return []string{redisPath, "--port", port, "--bind", "127.0.0.1", "--dir", l.dir,
				"--cluster-enabled", "yes", "--cluster-port", busPort, "--cluster-config-file", "nodes-" + port + ".conf",
				"--notify-keyspace-events", "KEA", "--save", "", "--appendonly", "no", "--daemonize", "no"}, nil
		})
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cliPath, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(time.Minute)
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a, Protocol: 2})
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				c.Close()
				return nil, fmt.Errorf("%s: cluster not ok within a minute (%v)", a, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
	}
	return addrs, nil
}

// clusterPreload writes every key the scenarios read, 100-byte values.
func clusterPreload(ctx context.Context, c *redis.ClusterClient) error {
	value := strings.Repeat("v", 100)
	for _, prefix := range []string{"bench:", "nocache:"} {
		for lo := uint64(0); lo < clusterKeys; lo += 500 {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for n := lo; n < lo+500; n++ {
					p.Set(ctx, clusterKey(prefix, n), value, 0)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// clusterRun runs sc through c from conns goroutines for d and measures it.
func clusterRun(ctx context.Context, c redis.Cmdable, sc clusterScenario, conns int, d time.Duration) (clusterResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		hist  = hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
		ops   atomic.Int64
		first error
		seq   atomic.Uint64
	)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			h := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
			for ctx.Err() == nil {
				t0 := time.Now()
				err := sc.op(ctx, c, seq.Add(1))
				if ctx.Err() != nil {
					break
				}
				if err != nil && err != redis.Nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				_ = h.RecordValue(time.Since(t0).Microseconds())
				ops.Add(1)
			}
			mu.Lock()
			hist.Merge(h)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return clusterResult{}, first
	}
	return clusterResult{
		OpsPerSec: float64(ops.Load()) / elapsed.Seconds(),
		P50:       time.Duration(hist.ValueAtQuantile(50)) * time.Microsecond,
		P99:       time.Duration(hist.ValueAtQuantile(99)) * time.Microsecond,
	}, nil
}

// clusterMedian is the median of each measure over rounds.
func clusterMedian(rs []clusterResult) clusterResult {
	med := func(f func(clusterResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return clusterResult{
		OpsPerSec: med(func(r clusterResult) float64 { return r.OpsPerSec }),
		P50:       time.Duration(med(func(r clusterResult) float64 { return float64(r.P50) })),
		P99:       time.Duration(med(func(r clusterResult) float64 { return float64(r.P99) })),
	}
}
