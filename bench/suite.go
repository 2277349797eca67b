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
	"strings"
	"time"

	"github.com/cacheproxy/cacheproxy/bench/loadgen"
	"github.com/cacheproxy/cacheproxy/internal/localnet"
)

// standardSuite is what `make bench` measures. Keys under "bench:" are cached
// by the proxy's suite config and fit in its L1; keys under "nocache:" are
// passed through.
func standardSuite() []scenario {
	hit := loadgen.Spec{Workload: loadgen.Get, Keys: 10000, Prefix: "bench:", Dist: loadgen.Zipf, ZipfS: 1.01,
		ValueMin: 100, ValueMax: 100, Pipeline: 1}
	with := func(s loadgen.Spec, edit func(*loadgen.Spec)) loadgen.Spec { edit(&s); return s }
	uncached := with(hit, func(s *loadgen.Spec) { s.Prefix = "nocache:" })
	return []scenario{
		{"get-hit-p16", "L1-hit GET, pipeline 16", with(hit, func(s *loadgen.Spec) { s.Pipeline = 16 }), []int{50}, true},
		{"get-uncached-p1", "pass-through GET on an uncached prefix", uncached, []int{50}, false},
		{"get-uncached-p16", "pass-through GET on an uncached prefix, pipeline 16", with(uncached, func(s *loadgen.Spec) { s.Pipeline = 16 }), []int{50}, false},
		{"set-uncached-p1", "pass-through SET on an uncached prefix", with(uncached, func(s *loadgen.Spec) { s.Workload = loadgen.Set }), []int{50}, false},
		{"set-uncached-p16", "pass-through SET on an uncached prefix, pipeline 16", with(uncached, func(s *loadgen.Spec) {
			s.Workload, s.Pipeline = loadgen.Set, 16
		}), []int{50}, false},
		{"get-miss-1conn", "one client, unpipelined, every GET an L1 miss (each key is read once)", with(hit, func(s *loadgen.Spec) {
			s.Prefix, s.Dist, s.ZipfS, s.Keys = "bench:miss:", loadgen.Seq, 0, 1_000_000
		}), []int{1}, false},
		{"mget-10", "MGET of 10 cached keys", with(hit, func(s *loadgen.Spec) { s.Workload, s.MGetKeys = loadgen.MGet, 10 }), []int{50}, true},
		{"mget-10-p16", "MGET of 10 cached keys, pipeline 16", with(hit, func(s *loadgen.Spec) { s.Workload, s.MGetKeys, s.Pipeline = loadgen.MGet, 10, 16 }), []int{50}, true},
		{"hget-hit", "L1-hit HGET, unpipelined", with(hit, func(s *loadgen.Spec) { s.Workload, s.HashFields = loadgen.HGet, 1 }), []int{50}, true},
		{"hget-hit-p16", "L1-hit HGET, pipeline 16", with(hit, func(s *loadgen.Spec) { s.Workload, s.HashFields, s.Pipeline = loadgen.HGet, 1, 16 }), []int{50}, true},
		{"sessions", "session store: GET, or SET EX of 1-4 KiB values, 80/20", with(hit, func(s *loadgen.Spec) {
			s.Workload, s.Prefix, s.ValueMin, s.ValueMax, s.ReadRatio, s.TTL = loadgen.Session, "bench:sess:", 1024, 4096, 0.8, 1800
		}), []int{50}, false},
		{"mixed-90-10", "cached GET and SET, 90/10", with(hit, func(s *loadgen.Spec) { s.Workload, s.ReadRatio = loadgen.Mixed, 0.9 }), []int{50}, false},
		{"get-hit", "L1-hit GET, unpipelined, as connections grow (1 connection: one client's hit latency)", hit, []int{1, 10, 50, 200}, true},
	}
}

// suiteBudget is the proxy's L1 budget in the suite.
const suiteBudget = 256 << 20

// proxyConfig is the proxy's configuration for the suite: a suiteBudget L1 that
// caches "bench:" and nothing else.
var proxyConfig = fmt.Sprintf(`l1:
  max_memory: %dMiB
policies:
  - {prefix: "bench:", ttl: 60s}
  - {prefix: "", cache: false}
`, suiteBudget>>20)

func suiteCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench suite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		proxyBin, out, only, redisBin, twemBin string
		pl                                     plan
		force                                  bool
	)
	fs.StringVar(&proxyBin, "proxy-bin", "", "the proxy binary to start (required)")
	fs.StringVar(&out, "out", filepath.Join("bench", "results"), "directory for results.md, results.json and the SVG figures")
	fs.StringVar(&only, "only", "", "comma-separated scenario names to run (default all)")
	fs.StringVar(&redisBin, "redis-server", "redis-server", "redis-server binary")
	fs.StringVar(&twemBin, "twemproxy", "nutcracker", "twemproxy binary; measured when found, \"\" to skip")
	fs.IntVar(&pl.Rounds, "rounds", 3, "rounds per scenario; medians are reported")
	fs.DurationVar(&pl.Duration, "duration", 3*time.Second, "length of one target's turn in one round")
	fs.DurationVar(&pl.Warmup, "warmup", 500*time.Millisecond, "unmeasured run per target before the rounds of each connection count")
	fs.Uint64Var(&pl.Seed, "seed", 1, "seed of the key and value choices")
	fs.BoolVar(&force, "progress", false, "show a live progress line on stderr even when it is not a terminal")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench suite --proxy-bin PATH [flags]\n\nStarts redis-server, the proxy, twemproxy and the ceiling server on free loopback ports, runs the scenarios and stops them.\nScenarios:\n")
		for _, sc := range standardSuite() {
			fmt.Fprintf(stderr, "  %-17s %s\n", sc.Name, sc.Description)
		}
		fmt.Fprintf(stderr, "  %-17s %s\n", memoryScenario, "the proxy's resident memory after a million 1 KB keys, each read twice, against its L1 budget (run last)")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("suite: unexpected argument %q", fs.Arg(0))
	}
	if proxyBin == "" {
		return errors.New("suite: --proxy-bin is required")
	}
	pl.Preload = true
	if err := pl.validate(); err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	scenarios, memory, err := pickScenarios(standardSuite(), only)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("suite: %w", err)
	}

	tmp, err := os.MkdirTemp("", "bench-suite-")
	if err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	defer os.RemoveAll(tmp)
	l := &launcher{ctx: ctx, dir: tmp}
	defer l.stopAll()
	start := l.start

	redisPath, err := exec.LookPath(redisBin)
	if err != nil {
		return fmt.Errorf("suite needs redis-server: %w", err)
	}
	redisAddr, err := l.startRedis(redisPath)
	if err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	targets := []target{{Name: baselineName, Addr: redisAddr}}

	proxyPath, err := filepath.Abs(proxyBin)
	if err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	configPath := filepath.Join(tmp, "cacheproxy.yaml")
	if err := os.WriteFile(configPath, []byte(proxyConfig), 0o644); err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	var metricsAddr string
	proxyAddr, err := start("proxy", func(addr string) ([]string, error) {
		var err error
		metricsAddr, err = localnet.FreeAddr()
		return []string{proxyPath, "--config", configPath, "--listen", addr,
			"--upstream", "redis://" + redisAddr + "/0", "--metrics", metricsAddr}, err
	})
	if err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	proxyProc := l.last()
	targets = append(targets, target{Name: "proxy", Addr: proxyAddr, metrics: "http://" + metricsAddr + "/metrics"})

	if twemBin != "" {
		if twemPath, lookErr := exec.LookPath(twemBin); lookErr == nil {
			twemAddr, err := start("twemproxy", func(addr string) ([]string, error) {
				stats, err := localnet.FreeAddr()
				if err != nil {
					return nil, err
				}
				conf := filepath.Join(tmp, "nutcracker.yml")
				if err := os.WriteFile(conf, []byte(twemproxyConfig(addr, redisAddr)), 0o644); err != nil {
					return nil, err
				}
				_, statsPort, _ := strings.Cut(stats, ":")
				return []string{twemPath, "-c", conf, "-s", statsPort, "-a", "127.0.0.1",
					"-o", filepath.Join(tmp, "twemproxy.log"), "-p", filepath.Join(tmp, "nutcracker.pid")}, nil
			})
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				fmt.Fprintf(stderr, "warning: twemproxy left out: %v\n", err)
			} else {
				targets = append(targets, target{Name: "twemproxy", Addr: twemAddr})
			}
		}
	}

	if slices.ContainsFunc(scenarios, func(sc scenario) bool { return sc.Ceiling }) {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("suite: the ceiling server: %w", err)
		}
		ceilingAddr, err := start(ceilingName, func(addr string) ([]string, error) {
			return []string{self, "ceiling", "--listen", addr}, nil
		})
		if err != nil {
			return fmt.Errorf("suite: %w", err)
		}
		targets = append(targets, target{Name: ceilingName, Addr: ceilingAddr, ceiling: true})
	}

	rep := newReport(pl)
	rep.Machine.Redis = redisVersion(redisPath)
	var names []string
	for _, t := range targets {
		names = append(names, t.Name+" "+t.Addr)
	}
	fmt.Fprintf(stdout, "machine: %d CPUs, %s, %s; targets: %s\n%s\n", rep.Machine.CPUs, rep.Machine.CPUModel, rep.Machine.Go,
		strings.Join(names, ", "), rep.Note)
	prog := newProgress(stderr, force)
	began := time.Now()
	for _, sc := range scenarios {
		sr, err := execute(ctx, sc, targets, pl, prog, stderr)
		if err != nil {
			return fmt.Errorf("suite: %w", err)
		}
		rep.Scenarios = append(rep.Scenarios, sr)
		writeTable(stdout, rep, sr)
		// Written after every scenario, so that an interrupted suite leaves
		// what it measured.
		if err := writeSuiteResults(out, rep); err != nil {
			return err
		}
	}
	if memory {
		// Last: its million keys would evict the scenarios' from the L1.
		m, err := checkMemory(ctx, redisAddr, proxyAddr, proxyProc.cmd.Process.Pid, suiteBudget, prog)
		if err != nil {
			return fmt.Errorf("suite: %w", err)
		}
		rep.Memory = &m
		writeMemoryTable(stdout, m)
		if err := writeSuiteResults(out, rep); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "\nsuite took %s; results in %s (results.md, results.json, SVG figures)\n", time.Since(began).Round(time.Second), out)
	return nil
}

func twemproxyConfig(listen, redis string) string {
	return fmt.Sprintf(`bench:
  listen: %s
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  servers:
    - %s:1
`, listen, redis)
}

// pickScenarios picks the scenarios only names (all for ""), and whether the
// memory check is among them.
func pickScenarios(all []scenario, only string) (picked []scenario, memory bool, err error) {
	want := splitList(only)
	if len(want) == 0 {
		return all, true, nil
	}
	var out []scenario
	names := []string{memoryScenario}
	for _, sc := range all {
		names = append(names, sc.Name)
		if slices.Contains(want, sc.Name) {
			out = append(out, sc)
		}
	}
	for _, w := range want {
		if !slices.Contains(names, w) {
			return nil, false, fmt.Errorf("suite: no scenario %q; there are %s", w, strings.Join(names, ", "))
		}
	}
	return out, slices.Contains(want, memoryScenario), nil
}

func writeSuiteResults(dir string, rep report) error {
	if err := writeJSON(filepath.Join(dir, "results.json"), rep); err != nil {
		return err
	}
	for _, sr := range rep.Scenarios {
		if err := writeSVG(filepath.Join(dir, sr.Name+".svg"), scenarioFigure(rep, sr)); err != nil {
			return err
		}
	}
	summary, ok := summaryFigure(rep)
	if ok {
		if err := writeSVG(filepath.Join(dir, "summary.svg"), summary); err != nil {
			return err
		}
	}
	var md strings.Builder
	writeMarkdown(&md, rep, ok)
	return writeFile(filepath.Join(dir, "results.md"), []byte(md.String()))
}
