// Command bench is a load generator for Redis-protocol servers: it measures
// named targets (the proxy, Redis directly, another proxy) with the same
// workload, in alternation, and reports medians across rounds as a table, JSON
// and SVG figures.
//
//	go run ./bench --target proxy=127.0.0.1:6380 --target direct=127.0.0.1:6379 \
//	    --metrics proxy=http://127.0.0.1:9180/metrics --workload get --conns 1,10,50,200
//	go run ./bench suite --proxy-bin ./cacheproxy --out bench/results [--only memory]
//	go run ./bench ceiling --listen 127.0.0.1:7000
//	go run ./bench cluster --proxy-bin ./cacheproxy --out bench/results
//	go run ./bench relay --listen 127.0.0.1:7001 --target 127.0.0.1:6379 --latency 500us
//	go run ./bench soak --proxy-bin bin/cacheproxy --duration 30m --out bench/results/soak
//
// The suite starts its own redis-server, proxy, (when installed) twemproxy and
// ceiling server (bench ceiling: GET and SET from a map on redcon) on free
// loopback ports and stops them when it ends; its last step measures the
// proxy's resident memory against its L1 budget. Its remote scenarios put
// Redis one network hop away: behind a relay (bench relay) that adds a
// one-way latency, crossed by every target alike — the load generator's
// direct connections, and the proxy's and twemproxy's upstream connections,
// the proxy's invalidation stream included. bench speaks RESP over
// TCP only; it never imports the proxy. It loads only loopback addresses unless
// told otherwise, and every run it makes is bounded by its duration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cacheproxy/cacheproxy/bench/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli(ctx, os.Args[1:], os.Stdout, os.Stderr)
	interrupted := ctx.Err() != nil // before stop, which cancels ctx too
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil && interrupted {
		fmt.Fprintln(os.Stderr, "bench: interrupted; every server it started has been stopped")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func cli(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "suite" {
		return suiteCmd(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "soak" {
		return soakCmd(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "cluster" {
		return clusterCmd(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "ceiling" {
		return ceilingCmd(ctx, args[1:], stderr)
	}
	if len(args) > 0 && args[0] == "relay" {
		return relayCmd(ctx, args[1:], stderr)
	}
	return runCmd(ctx, args, stdout, stderr)
}

// workloadFlags are the flags that shape a workload, shared by both modes.
type workloadFlags struct {
	workload, prefix, dist, valueSize, conns string
	keys, mgetKeys, hashFields, ttl, pipe    int
	zipfS, readRatio                         float64
}

func (w *workloadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&w.workload, "workload", loadgen.Get, "workload: "+strings.Join(loadgen.Workloads, ", "))
	fs.IntVar(&w.keys, "keys", 10000, "number of distinct keys")
	fs.StringVar(&w.prefix, "key-prefix", "bench:", "prefix of every key (the proxy caches by prefix)")
	fs.StringVar(&w.dist, "dist", loadgen.Zipf, "key popularity: zipf, uniform, or seq (each key once in turn)")
	fs.Float64Var(&w.zipfS, "zipf-s", 1.01, "Zipf exponent, > 1; larger is more skewed")
	fs.StringVar(&w.valueSize, "value-size", "", "value size in bytes, or a range MIN-MAX drawn uniformly; k suffix = KiB (default 100, sessions 1k-4k)")
	fs.Float64Var(&w.readRatio, "read-ratio", 0.9, "share of reads in the mixed and session workloads")
	fs.IntVar(&w.mgetKeys, "mget-keys", 10, "keys per MGET")
	fs.IntVar(&w.hashFields, "hash-fields", 10, "fields per hash for hgetall")
	fs.IntVar(&w.ttl, "ttl", 1800, "seconds of SET EX in the session workload")
	fs.IntVar(&w.pipe, "pipeline", 1, "commands written per batch before reading their replies")
	fs.StringVar(&w.conns, "conns", "50", "connections, or a comma-separated list for a scaling run (1,10,50,200)")
}

func (w *workloadFlags) spec() (loadgen.Spec, []int, error) {
	vs := w.valueSize
	if vs == "" {
		vs = "100"
		if w.workload == loadgen.Session {
			vs = "1k-4k"
		}
	}
	lo, hi, err := parseSizeRange(vs)
	if err != nil {
		return loadgen.Spec{}, nil, err
	}
	conns, err := parseConns(w.conns)
	if err != nil {
		return loadgen.Spec{}, nil, err
	}
	s := loadgen.Spec{Workload: w.workload, Keys: w.keys, Prefix: w.prefix, Dist: w.dist, ZipfS: w.zipfS,
		ValueMin: lo, ValueMax: hi, ReadRatio: w.readRatio, MGetKeys: w.mgetKeys, HashFields: w.hashFields,
		TTL: w.ttl, Pipeline: w.pipe}
	// Report only the knobs the workload uses.
	if s.Dist != loadgen.Zipf {
		s.ZipfS = 0
	}
	if s.Workload != loadgen.Mixed && s.Workload != loadgen.Session {
		s.ReadRatio = 0
	}
	if s.Workload != loadgen.MGet {
		s.MGetKeys = 0
	}
	if s.Workload != loadgen.HGetAll && s.Workload != loadgen.HGet {
		s.HashFields = 0
	}
	if s.Workload != loadgen.Session {
		s.TTL = 0
	}
	for _, c := range conns {
		s.Conns = c
		if err := s.Validate(); err != nil {
			return loadgen.Spec{}, nil, err
		}
	}
	return s, conns, nil
}

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		targets, metrics namedValues
		wf               workloadFlags
		pl               plan
		remote, force    bool
		preload          bool
		name, jsonPath   string
		svgPath          string
		seed             uint64
	)
	fs.Var(&targets, "target", "a server to load, name=host:port (repeat; run in turn, in this order)")
	fs.Var(&metrics, "metrics", "a target's Prometheus endpoint, name=URL, to report its L1 hit ratio (repeatable)")
	fs.BoolVar(&remote, "allow-remote", false, "allow targets that are not loopback addresses")
	wf.register(fs)
	fs.IntVar(&pl.Rounds, "rounds", 3, "rounds; each runs every target once, and medians are reported")
	fs.DurationVar(&pl.Duration, "duration", 5*time.Second, "length of one target's turn in one round")
	fs.DurationVar(&pl.Warmup, "warmup", time.Second, "unmeasured run per target before the rounds of each connection count")
	fs.BoolVar(&preload, "preload", true, "write the keys first, through the target named direct, else the first")
	fs.Uint64Var(&seed, "seed", 1, "seed of the key and value choices; every target sees the same sequence")
	fs.StringVar(&name, "name", "", "scenario name in reports (default: the workload)")
	fs.StringVar(&jsonPath, "json", "", "write results as JSON to this file")
	fs.StringVar(&svgPath, "svg", "", "write an SVG figure of throughput and latency to this file")
	fs.BoolVar(&force, "progress", false, "show a live progress line on stderr even when it is not a terminal")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench --target name=host:port [--target ...] [flags]\n       bench suite --proxy-bin PATH [flags]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags only; the suite is \"bench suite\")", fs.Arg(0))
	}
	ts, err := buildTargets(targets, metrics, remote)
	if err != nil {
		return err
	}
	spec, conns, err := wf.spec()
	if err != nil {
		return err
	}
	pl.Preload, pl.Seed = preload, seed
	if err := pl.validate(); err != nil {
		return err
	}
	if name == "" {
		name = spec.Workload
	}
	rep := newReport(pl)
	fmt.Fprintf(stdout, "%s\n", rep.Note)
	sr, err := execute(ctx, scenario{Name: name, Spec: spec, Conns: conns}, ts, pl, nil, newProgress(stderr, force), stderr)
	if err != nil {
		return err
	}
	rep.Scenarios = append(rep.Scenarios, sr)
	writeTable(stdout, rep, sr)
	if jsonPath != "" {
		if err := writeJSON(jsonPath, rep); err != nil {
			return err
		}
	}
	if svgPath != "" {
		if err := writeSVG(svgPath, scenarioFigure(rep, sr)); err != nil {
			return err
		}
	}
	return nil
}

func newReport(pl plan) report {
	m := thisMachine()
	return report{Machine: m, Note: sharedCPUNote(m.CPUs), Rounds: pl.Rounds,
		Duration: pl.Duration.String(), Warmup: pl.Warmup.String()}
}

// parseSizeRange parses "100", "4k" or "1k-4k" into a byte range.
func parseSizeRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = parseSize(a); err != nil {
		return 0, 0, err
	}
	hi = lo
	if isRange {
		if hi, err = parseSize(b); err != nil {
			return 0, 0, err
		}
	}
	if hi < lo {
		return 0, 0, fmt.Errorf("value size %q: the range's maximum is below its minimum", s)
	}
	return lo, hi, nil
}

func parseSize(s string) (int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1
	for _, suf := range []struct {
		s string
		m int
	}{{"kib", 1 << 10}, {"kb", 1 << 10}, {"k", 1 << 10}, {"mib", 1 << 20}, {"mb", 1 << 20}, {"m", 1 << 20}, {"b", 1}} {
		if rest, ok := strings.CutSuffix(t, suf.s); ok {
			t, mult = rest, suf.m
			break
		}
	}
	n, err := strconv.Atoi(t)
	if err != nil || n < 0 || n > loadgen.MaxValue/mult {
		return 0, fmt.Errorf("value size %q is not a size up to %d bytes", s, loadgen.MaxValue)
	}
	return n * mult, nil
}
