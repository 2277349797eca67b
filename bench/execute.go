package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/cacheproxy/cacheproxy/bench/loadgen"
)

// scenario is one workload, measured at one or more connection counts.
type scenario struct {
	Name        string
	Description string
	Spec        loadgen.Spec // Conns is taken from Conns
	Conns       []int
	Ceiling     bool // the ceiling server runs too (L1-hit scenarios)
	// Latency is added each way between every target and Redis by a relay
	// (see relay); 0: Redis on loopback.
	Latency time.Duration
	// Warm reads every key once through each target before the warmup of
	// each connection count, so that a cache serves hits from the first
	// round: over a remote link a cold key's miss would dwarf a hit.
	Warm bool
}

// plan says how a scenario is measured.
type plan struct {
	Rounds   int
	Duration time.Duration // of one target's turn in one round
	Warmup   time.Duration // per target before the first round; not measured
	Preload  bool
	Seed     uint64
}

func (p plan) validate() error {
	switch {
	case p.Rounds < 1 || p.Rounds > 100:
		return fmt.Errorf("rounds %d is not in [1, 100]", p.Rounds)
	case p.Duration <= 0 || p.Duration > time.Hour:
		return fmt.Errorf("duration %v is not in (0, 1h]", p.Duration)
	case p.Warmup < 0 || p.Warmup > time.Hour:
		return fmt.Errorf("warmup %v is not in [0, 1h]", p.Warmup)
	}
	return nil
}

// execute preloads the scenario's keys, then for each connection count runs
// the targets in turn, round after round (A B C A B C ...), so that drift in
// the machine's state spreads over all of them. preloaded, when not nil, holds
// what earlier scenarios wrote where (loadgen.PreloadKey at an address), which
// is not written again.
func execute(ctx context.Context, sc scenario, all []target, pl plan, preloaded map[string]bool, prog *progress, log io.Writer) (scenarioResult, error) {
	res := scenarioResult{Name: sc.Name, Description: sc.Description, Spec: sc.Spec,
		RoundDuration: pl.Duration.String(), Warmup: pl.Warmup.String()}
	if sc.Latency > 0 {
		res.Latency = sc.Latency.String()
	}
	var targets, preload []target
	for _, t := range all {
		if t.ceiling && !sc.Ceiling {
			continue
		}
		targets = append(targets, t)
		if t.ceiling {
			preload = append(preload, t)
		}
	}
	if pl.Preload {
		preload = append([]target{preloadTarget(targets)}, preload...)
	}
	for _, via := range preload {
		addr := via.Addr
		if via.origin != "" {
			addr = via.origin
		}
		done := addr + " " + loadgen.PreloadKey(sc.Spec)
		if preloaded[done] {
			continue
		}
		prog.note(fmt.Sprintf("%s: preloading %d keys via %s", sc.Name, sc.Spec.Keys, via.Name))
		spec := sc.Spec
		spec.Conns = 1
		err := loadgen.Preload(ctx, addr, spec)
		prog.note("")
		if err != nil {
			return res, fmt.Errorf("%s: %w", sc.Name, err)
		}
		if preloaded != nil {
			preloaded[done] = true
		}
	}
	warned := map[string]bool{}
	var prev []*loadgen.Runner
	for _, conns := range sc.Conns {
		spec := sc.Spec
		spec.Conns = conns
		runners := make([]*loadgen.Runner, len(targets))
		for i, t := range targets {
			r, err := loadgen.NewRunner(t.Addr, spec)
			if err != nil {
				return res, fmt.Errorf("%s: %w", sc.Name, err)
			}
			if prev != nil {
				r.Continue(prev[i]) // a Seq workload reads no key twice
			}
			runners[i] = r
		}
		prev = runners
		if sc.Warm {
			for _, t := range targets {
				prog.note(fmt.Sprintf("%s: reading %d keys once via %s", sc.Name, sc.Spec.Keys, t.Name))
				err := loadgen.Warm(ctx, t.Addr, spec)
				prog.note("")
				if err != nil {
					return res, fmt.Errorf("%s: %w", sc.Name, err)
				}
			}
		}
		if pl.Warmup > 0 {
			for i, t := range targets {
				stop := prog.track(fmt.Sprintf("%s  %d conns  warmup  %s", sc.Name, conns, t.Name), pl.Warmup, runners[i].Done)
				_, err := runners[i].Run(ctx, pl.Warmup, pl.Seed^0xa5a5)
				stop()
				if err != nil {
					return res, fmt.Errorf("%s: warmup of %s: %w", sc.Name, t.Name, err)
				}
			}
		}
		rounds := make([][]loadgen.Stats, len(targets))
		for round := range pl.Rounds {
			for i, t := range targets {
				label := fmt.Sprintf("%s  %d conns  round %d/%d  %s", sc.Name, conns, round+1, pl.Rounds, t.Name)
				st, err := measure(ctx, t, runners[i], pl.Duration, pl.Seed+uint64(round), label, prog, func(err error) {
					if !warned[t.Name] {
						warned[t.Name] = true
						fmt.Fprintf(log, "warning: no hit ratio for %s: %v\n", t.Name, err)
					}
				})
				if err != nil {
					return res, fmt.Errorf("%s, %d conns, round %d, %s: %w", sc.Name, conns, round+1, t.Name, err)
				}
				rounds[i] = append(rounds[i], st)
			}
		}
		pt := point{Conns: conns}
		for i, t := range targets {
			pt.Targets = append(pt.Targets, targetResult{Target: t.Name, Addr: t.Addr, Median: loadgen.Median(rounds[i]), Rounds: rounds[i]})
		}
		res.Points = append(res.Points, pt)
	}
	return res, nil
}

// measure runs one target's turn, reading its cache counters around it when
// it has a metrics endpoint.
func measure(ctx context.Context, t target, r *loadgen.Runner, d time.Duration, seed uint64, label string, prog *progress, warn func(error)) (loadgen.Stats, error) {
	var before cacheCounters
	scraped := false
	if t.metrics != "" {
		var err error
		if before, err = scrapeCounters(ctx, t.metrics); err != nil {
			warn(err)
		} else {
			scraped = true
		}
	}
	stop := prog.track(label, d, r.Done)
	st, err := r.Run(ctx, d, seed)
	stop()
	if err != nil {
		return st, err
	}
	if scraped {
		after, err := scrapeCounters(ctx, t.metrics)
		if err != nil {
			warn(err)
		} else {
			st.HitRatio = before.hitRatio(after)
		}
	}
	return st, nil
}

// parseConns parses a comma-separated list of connection counts.
func parseConns(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > loadgen.MaxConns {
			return nil, fmt.Errorf("connection count %q is not in [1, %d]", f, loadgen.MaxConns)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no connection count in %q", s)
	}
	return out, nil
}
