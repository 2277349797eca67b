package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cacheproxy/cacheproxy/bench/loadgen"
	"github.com/cacheproxy/cacheproxy/internal/localnet"
)

// standardSuite is what `make bench` measures: the remote scenarios first,
// then the loopback ones. Keys under "bench:" are cached by the proxy's suite
// config and fit in its L1; keys under "nocache:" are passed through.
func standardSuite() []scenario {
	var all []scenario
	for _, lat := range remoteLatencies {
		all = append(all, remoteSuite(lat)...)
	}
	return append(all, loopbackSuite()...)
}

// hitSpec is the cached-read workload the others are variations of.
var hitSpec = loadgen.Spec{Workload: loadgen.Get, Keys: 10000, Prefix: "bench:", Dist: loadgen.Zipf, ZipfS: 1.01,
	ValueMin: 100, ValueMax: 100, Pipeline: 1}

func with(s loadgen.Spec, edit func(*loadgen.Spec)) loadgen.Spec { edit(&s); return s }

// missSpec reads every key once in turn: through a cache, each read a miss.
// Its keys outnumber what a proxy reads in all the scenarios that use them.
var missSpec = with(hitSpec, func(s *loadgen.Spec) {
	s.Prefix, s.Dist, s.ZipfS, s.Keys = "bench:miss:", loadgen.Seq, 0, 2_000_000
})

func loopbackSuite() []scenario {
	hit := hitSpec
	uncached := with(hit, func(s *loadgen.Spec) { s.Prefix = "nocache:" })
	sc := func(name, desc string, spec loadgen.Spec, conns []int, ceiling bool) scenario {
		// The L1-hit scenarios, those beside the ceiling, read every key once
		// first: a Zipf workload reaches its rarest keys late, and a lone
		// client's warmup left one read in twenty a miss, measured as a hit.
		return scenario{Name: name, Description: desc, Spec: spec, Conns: conns, Ceiling: ceiling, Warm: ceiling}
	}
	return []scenario{
		sc("get-hit-p16", "L1-hit GET, pipeline 16", with(hit, func(s *loadgen.Spec) { s.Pipeline = 16 }), []int{50}, true),
		sc("get-uncached-p1", "pass-through GET on an uncached prefix", uncached, []int{50}, false),
		sc("get-uncached-p16", "pass-through GET on an uncached prefix, pipeline 16", with(uncached, func(s *loadgen.Spec) { s.Pipeline = 16 }), []int{50}, false),
		sc("set-uncached-p1", "pass-through SET on an uncached prefix", with(uncached, func(s *loadgen.Spec) { s.Workload = loadgen.Set }), []int{50}, false),
		sc("set-uncached-p16", "pass-through SET on an uncached prefix, pipeline 16", with(uncached, func(s *loadgen.Spec) {
			s.Workload, s.Pipeline = loadgen.Set, 16
		}), []int{50}, false),
		sc("get-miss-1conn", "one client, unpipelined, every GET an L1 miss (each key is read once)", missSpec, []int{1}, false),
		sc("mget-10", "MGET of 10 cached keys", with(hit, func(s *loadgen.Spec) { s.Workload, s.MGetKeys = loadgen.MGet, 10 }), []int{50}, true),
		sc("mget-10-p16", "MGET of 10 cached keys, pipeline 16", with(hit, func(s *loadgen.Spec) { s.Workload, s.MGetKeys, s.Pipeline = loadgen.MGet, 10, 16 }), []int{50}, true),
		sc("hget-hit", "L1-hit HGET, unpipelined", with(hit, func(s *loadgen.Spec) { s.Workload, s.HashFields = loadgen.HGet, 1 }), []int{50}, true),
		sc("hget-hit-p16", "L1-hit HGET, pipeline 16", with(hit, func(s *loadgen.Spec) { s.Workload, s.HashFields, s.Pipeline = loadgen.HGet, 1, 16 }), []int{50}, true),
		sc("sessions", "session store: GET, or SET EX of 1-4 KiB values, 80/20", sessionSpec, []int{50}, false),
		sc("mixed-90-10", "cached GET and SET, 90/10", with(hit, func(s *loadgen.Spec) { s.Workload, s.ReadRatio = loadgen.Mixed, 0.9 }), []int{50}, false),
		sc("get-hit", "L1-hit GET, unpipelined, as connections grow (1 connection: one client's hit latency)", hit, []int{1, 10, 50, 200}, true),
	}
}

var sessionSpec = with(hitSpec, func(s *loadgen.Spec) {
	s.Workload, s.Prefix, s.ValueMin, s.ValueMax, s.ReadRatio, s.TTL = loadgen.Session, "bench:sess:", 1024, 4096, 0.8, 1800
})

// remoteLatencies are the one-way latencies of the remote scenarios: within
// one zone, and across zones.
var remoteLatencies = []time.Duration{100 * time.Microsecond, 500 * time.Microsecond}

// remoteConns are the connection counts every remote scenario runs at.
var remoteConns = []int{1, 10, 50, 200}

// Remote scenarios' names: remoteName(latency, one of these).
const (
	remoteHit      = "get-hit"
	remoteMiss     = "get-miss"
	remoteWrite    = "set"
	remoteMGet     = "mget-10"
	remoteSessions = "sessions"
	remoteMixed    = "mixed-90-10"
)

func remoteName(latency time.Duration, base string) string {
	return fmt.Sprintf("remote-%s-%s", latencyLabel(latency), base)
}

// latencyLabel spells a latency for a file name: 100us, 2ms.
func latencyLabel(d time.Duration) string { return fileLabel(d.String()) }

// fileLabel spells a duration's String for a file name.
func fileLabel(d string) string { return strings.ReplaceAll(d, "µ", "u") }

// remoteSuite is the scenarios with Redis latency away (one way), every
// target crossing the same relay to it.
func remoteSuite(latency time.Duration) []scenario {
	where := fmt.Sprintf(", Redis %v away", latency)
	sc := func(base, desc string, spec loadgen.Spec) scenario {
		// Every key read is cached but the misses'.
		warm := base != remoteMiss && base != remoteWrite
		return scenario{Name: remoteName(latency, base), Description: desc + where, Spec: spec, Conns: remoteConns,
			Latency: latency, Warm: warm}
	}
	return []scenario{
		sc(remoteHit, "cached GET, unpipelined (L1 hits through the proxy)", hitSpec),
		sc(remoteMiss, "GET of a key read once (an L1 miss through the proxy)", missSpec),
		sc(remoteWrite, "SET of cached keys, unpipelined", with(hitSpec, func(s *loadgen.Spec) { s.Workload = loadgen.Set })),
		sc(remoteMGet, "MGET of 10 cached keys", with(hitSpec, func(s *loadgen.Spec) { s.Workload, s.MGetKeys = loadgen.MGet, 10 })),
		sc(remoteSessions, "session store: GET, or SET EX of 1-4 KiB values, 80/20", sessionSpec),
		sc(remoteMixed, "cached GET and SET, 90/10", with(hitSpec, func(s *loadgen.Spec) { s.Workload, s.ReadRatio = loadgen.Mixed, 0.9 })),
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
		pl, rpl                                plan
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
	fs.DurationVar(&rpl.Duration, "remote-duration", 1500*time.Millisecond, "length of one target's turn in one round of a remote scenario")
	fs.DurationVar(&rpl.Warmup, "remote-warmup", 500*time.Millisecond, "warmup of a remote scenario (see --warmup)")
	fs.Uint64Var(&pl.Seed, "seed", 1, "seed of the key and value choices")
	fs.BoolVar(&force, "progress", false, "show a live progress line on stderr even when it is not a terminal")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench suite --proxy-bin PATH [flags]\n\nStarts redis-server, the proxy, twemproxy and the ceiling server on free loopback ports, runs the scenarios and stops them.\n"+
			"A remote scenario puts Redis behind a relay that adds a latency each way (bench relay), crossed by direct connections and\n"+
			"by the proxy's and twemproxy's upstream connections alike.\nScenarios:\n")
		for _, sc := range standardSuite() {
			fmt.Fprintf(stderr, "  %-27s %s\n", sc.Name, sc.Description)
		}
		fmt.Fprintf(stderr, "  %-27s %s\n", memoryScenario, "the proxy's resident memory after a million 1 KB keys, each read twice, against its L1 budget (run last)")
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
	rpl.Rounds, rpl.Preload, rpl.Seed = pl.Rounds, pl.Preload, pl.Seed
	for _, p := range []plan{pl, rpl} {
		if err := p.validate(); err != nil {
			return fmt.Errorf("suite: %w", err)
		}
	}
	scenarios, memory, err := pickScenarios(standardSuite(), only)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("suite: %w", err)
	}

	l, err := newLauncher(ctx, "suite")
	if err != nil {
		return err
	}
	defer l.close()

	redisPath, err := exec.LookPath(redisBin)
	if err != nil {
		return fmt.Errorf("suite needs redis-server: %w", err)
	}
	redisAddr, err := l.startRedis(redisPath)
	if err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	proxyPath, err := filepath.Abs(proxyBin)
	if err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	configPath := filepath.Join(l.dir, "cacheproxy.yaml")
	if err := os.WriteFile(configPath, []byte(proxyConfig), 0o644); err != nil {
		return fmt.Errorf("suite: %w", err)
	}
	twemPath := ""
	if twemBin != "" {
		if p, err := exec.LookPath(twemBin); err == nil {
			twemPath = p
		}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("suite: %w", err)
	}

	// A path to Redis per latency the scenarios need: its targets, and the
	// loopback proxy, whose memory the last step measures.
	paths := map[time.Duration][]target{}
	var proxyAddr string
	var proxyProc *process
	for _, sc := range scenarios {
		if _, ok := paths[sc.Latency]; !ok {
			ts, proc, err := startPath(l, self, redisAddr, sc.Latency, proxyPath, configPath, twemPath, stderr)
			if err != nil {
				return fmt.Errorf("suite: %w", err)
			}
			paths[sc.Latency] = ts
			if sc.Latency == 0 {
				proxyAddr, proxyProc = ts[1].Addr, proc
			}
		}
	}
	if memory && proxyProc == nil {
		ts, proc, err := startPath(l, self, redisAddr, 0, proxyPath, configPath, twemPath, stderr)
		if err != nil {
			return fmt.Errorf("suite: %w", err)
		}
		paths[0], proxyAddr, proxyProc = ts, ts[1].Addr, proc
	}
	if slices.ContainsFunc(scenarios, func(sc scenario) bool { return sc.Ceiling }) {
		ceilingAddr, err := l.start(ceilingName, func(addr string) ([]string, error) {
			return []string{self, "ceiling", "--listen", addr}, nil
		})
		if err != nil {
			return fmt.Errorf("suite: %w", err)
		}
		paths[0] = append(paths[0], target{Name: ceilingName, Addr: ceilingAddr, ceiling: true})
	}

	rep := newReport(pl)
	rep.Machine.Redis = redisVersion(redisPath)
	rep.Command = strings.Join(append([]string{"go run ./bench suite"}, args...), " ")
	fmt.Fprintf(stdout, "machine: %d CPUs, %s, %s\n%s\n", rep.Machine.CPUs, rep.Machine.CPUModel, rep.Machine.Go, rep.Note)
	for _, lat := range slices.Sorted(maps.Keys(paths)) {
		var names []string
		for _, t := range paths[lat] {
			names = append(names, t.Name+" "+t.Addr)
		}
		where := "Redis on loopback"
		if lat > 0 {
			where = fmt.Sprintf("Redis %v away (one way), through a relay", lat)
		}
		fmt.Fprintf(stdout, "%s: %s\n", where, strings.Join(names, ", "))
	}
	prog := newProgress(stderr, force)
	began := time.Now()
	preloaded := map[string]bool{}
	for _, sc := range scenarios {
		p := pl
		if sc.Latency > 0 {
			p = rpl
		}
		sr, err := execute(ctx, sc, paths[sc.Latency], p, preloaded, prog, stderr)
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

// startPath starts what the targets of one latency need and returns them:
// direct, proxy and, when twemPath is set, twemproxy, and the proxy's process.
// At latency 0 they reach Redis at redisAddr on loopback; otherwise a relay
// (self relay) stands in front of it, and direct is the relay, which the
// proxy's and twemproxy's upstream connections cross too.
func startPath(l *launcher, self, redisAddr string, latency time.Duration, proxyPath, configPath, twemPath string, log io.Writer) ([]target, *process, error) {
	suffix, upstream := "", redisAddr
	direct := target{Name: baselineName, Addr: redisAddr}
	if latency > 0 {
		suffix = "-" + latencyLabel(latency)
		relayAddr, err := l.start(relayName+suffix, func(addr string) ([]string, error) {
			return []string{self, "relay", "--listen", addr, "--target", redisAddr, "--latency", latency.String()}, nil
		})
		if err != nil {
			return nil, nil, err
		}
		upstream = relayAddr
		direct = target{Name: baselineName, Addr: relayAddr, origin: redisAddr}
	}
	var metricsAddr string
	proxyAddr, err := l.start("proxy"+suffix, func(addr string) ([]string, error) {
		var err error
		metricsAddr, err = localnet.FreeAddr()
		return []string{proxyPath, "--config", configPath, "--listen", addr,
			"--upstream", "redis://" + upstream + "/0", "--metrics", metricsAddr}, err
	})
	if err != nil {
		return nil, nil, err
	}
	proxyProc := l.last()
	ts := []target{direct, {Name: "proxy", Addr: proxyAddr, metrics: "http://" + metricsAddr + "/metrics"}}
	if twemPath == "" {
		return ts, proxyProc, nil
	}
	name := "twemproxy" + suffix
	twemAddr, err := l.start(name, func(addr string) ([]string, error) {
		stats, err := localnet.FreeAddr()
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(l.dir, name+".yml")
		if err := os.WriteFile(conf, []byte(twemproxyConfig(addr, upstream)), 0o644); err != nil {
			return nil, err
		}
		_, statsPort, _ := strings.Cut(stats, ":")
		return []string{twemPath, "-c", conf, "-s", statsPort, "-a", "127.0.0.1",
			"-o", filepath.Join(l.dir, name+".log"), "-p", filepath.Join(l.dir, name+".pid")}, nil
	})
	if err != nil {
		if l.ctx.Err() != nil {
			return nil, nil, l.ctx.Err()
		}
		fmt.Fprintf(log, "warning: %s left out: %v\n", name, err)
		return ts, proxyProc, nil
	}
	return append(ts, target{Name: "twemproxy", Addr: twemAddr}), proxyProc, nil
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
	for _, g := range scenarioGroups(rep) {
		if g.figureOK {
			if err := writeSVG(filepath.Join(dir, g.file), g.figure); err != nil {
				return err
			}
		}
	}
	var md strings.Builder
	writeMarkdown(&md, rep)
	return writeFile(filepath.Join(dir, "results.md"), []byte(md.String()))
}
