package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/cacheproxy/cacheproxy/bench/loadgen"
	"github.com/cacheproxy/cacheproxy/bench/plot"
)

// report is everything a run measured; it is also the JSON output.
type report struct {
	Machine   machine          `json:"machine"`
	Command   string           `json:"command,omitempty"` // what produced it
	Note      string           `json:"note"`
	Rounds    int              `json:"rounds"`
	Duration  string           `json:"round_duration"`
	Warmup    string           `json:"warmup"`
	Scenarios []scenarioResult `json:"scenarios"`
	Memory    *memoryResult    `json:"memory,omitempty"` // the suite's memory check
}

type scenarioResult struct {
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	Spec        loadgen.Spec `json:"spec"`
	// Latency is the one-way latency added between the targets and Redis,
	// "" on loopback.
	Latency       string  `json:"one_way_latency,omitempty"`
	RoundDuration string  `json:"round_duration,omitempty"`
	Warmup        string  `json:"warmup,omitempty"`
	Points        []point `json:"points"`
}

// point is one connection count of a scenario.
type point struct {
	Conns   int            `json:"conns"`
	Targets []targetResult `json:"targets"`
}

type targetResult struct {
	Target string          `json:"target"`
	Addr   string          `json:"addr"`
	Median loadgen.Stats   `json:"median"`
	Rounds []loadgen.Stats `json:"rounds"`
}

const baselineName = "direct"

// baseline is the result of the target named direct, if the point has one.
func (p point) baseline() *targetResult {
	for i := range p.Targets {
		if p.Targets[i].Target == baselineName {
			return &p.Targets[i]
		}
	}
	return nil
}

func sharedCPUNote(cpus int) string {
	return fmt.Sprintf("The load generator and all targets share this machine's %d CPUs: "+
		"every number is the whole system's, the generator's own CPU use included.", cpus)
}

func (r report) roundsLine() string { return roundsLine(r.Rounds, r.Duration, r.Warmup) }

// scenarioRounds is how a scenario was measured: its own round length and warmup
// when it has them, else the report's.
func (r report) scenarioRounds(sr scenarioResult) string {
	d, w := r.Duration, r.Warmup
	if sr.RoundDuration != "" {
		d, w = sr.RoundDuration, sr.Warmup
	}
	return roundsLine(r.Rounds, d, w)
}

func roundsLine(rounds int, duration, warmup string) string {
	s := fmt.Sprintf("median of %d rounds of %s per target, targets interleaved", rounds, duration)
	if rounds == 1 {
		s = fmt.Sprintf("one round of %s per target", duration)
	}
	if warmup != "0s" && warmup != "" {
		s += ", after " + warmup + " warmup each"
	}
	return s
}

// targetNames lists the targets in the order they ran, so that each keeps its
// colour in every figure.
func (r report) targetNames() []string {
	var names []string
	for _, sr := range r.Scenarios {
		for _, p := range sr.Points {
			for _, t := range p.Targets {
				if !slices.Contains(names, t.Target) {
					names = append(names, t.Target)
				}
			}
		}
	}
	return names
}

// writeTable prints one scenario as an aligned text table.
func writeTable(w io.Writer, r report, sr scenarioResult) {
	fmt.Fprintf(w, "\n== %s", sr.Name)
	if sr.Description != "" {
		fmt.Fprintf(w, ": %s", sr.Description)
	}
	fmt.Fprintf(w, "\n   %s; %s\n", sr.Spec, r.scenarioRounds(sr))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tconns\tops/s\tvs direct\tp50 µs\tp90 µs\tp99 µs\tp99.9 µs\tmax µs\thit ratio\terrors\tnils\t")
	for _, p := range sr.Points {
		base := p.baseline()
		for _, t := range p.Targets {
			m := t.Median
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t\n", t.Target, p.Conns, m.OpsPerSec,
				ratio(m.OpsPerSec, base, func(s loadgen.Stats) float64 { return s.OpsPerSec }),
				us(m.P50), us(m.P90), us(m.P99), us(m.P999), us(m.Max), hitRatio(m.HitRatio), m.Errors, m.Nils)
		}
	}
	tw.Flush()
	for _, p := range sr.Points {
		for _, t := range p.Targets {
			if t.Median.Errors > 0 {
				fmt.Fprintf(w, "   warning: %s answered %d errors, the first: %s\n", t.Target, t.Median.Errors, t.Median.FirstError)
			}
		}
	}
}

// writeMarkdown writes the whole report as a markdown document: the remote
// scenarios first, led by what a user of a remote Redis gains and pays, then
// the loopback ones, each group with its figure and table.
func writeMarkdown(w io.Writer, r report) {
	m := r.Machine
	fmt.Fprintf(w, "# Benchmark results\n\n")
	fmt.Fprintf(w, "Machine: %d CPUs (nproc), %s, %s %s", m.CPUs, m.CPUModel, m.Go, m.OS)
	if m.Redis != "" {
		fmt.Fprintf(w, ", Redis %s", m.Redis)
	}
	fmt.Fprintf(w, ".\n\n%s\n\n", r.Note)
	if r.Command != "" {
		fmt.Fprintf(w, "Produced by `%s`.\n\n", r.Command)
	}
	fmt.Fprintf(w, "Latencies are in µs, from a batch's write to each of its replies; ops/s counts commands (an MGET is one). "+
		"Ratios are against the target named %s at the same point: above 1 is more throughput, or a higher (worse) latency.\n\n", baselineName)
	groups := scenarioGroups(r)
	for _, g := range groups {
		if g.latency == "" || len(g.scenarios) == 0 {
			continue
		}
		fmt.Fprintf(w, "## Redis %s away\n\n", g.latency)
		fmt.Fprintf(w, "Redis sits behind a relay that adds %s each way, as a network would; every target crosses it: "+
			"direct is client → relay → Redis, proxy is client → proxy → relay → Redis (its invalidation stream too), "+
			"twemproxy is client → twemproxy → relay → Redis. The relay shares this machine's CPUs with the rest. "+
			"Each number is the %s.\n\n", g.latency, r.scenarioRounds(g.scenarios[0]))
		writeHeadline(w, g)
		if g.figureOK {
			fmt.Fprintf(w, "![%s](%s)\n\n", g.title, g.file)
		}
		writeResultsTable(w, g.scenarios)
	}
	for _, g := range groups {
		if g.latency != "" || len(g.scenarios) == 0 {
			continue
		}
		fmt.Fprintf(w, "## Redis on loopback\n\nEach number is the %s.\n\n", r.roundsLine())
		if g.figureOK {
			fmt.Fprintf(w, "![summary](%s)\n\n", g.file)
		}
		writeResultsTable(w, g.scenarios)
	}
	fmt.Fprintf(w, "## Scenarios\n\n")
	for _, sr := range r.Scenarios {
		fmt.Fprintf(w, "- **%s**", sr.Name)
		if sr.Description != "" {
			fmt.Fprintf(w, ": %s", sr.Description)
		}
		fmt.Fprintf(w, ". `%s`. [figure](%s.svg)\n", sr.Spec, sr.Name)
	}
	if r.Memory != nil {
		writeMemoryMarkdown(w, *r.Memory)
	}
}

func writeResultsTable(w io.Writer, scenarios []scenarioResult) {
	fmt.Fprintln(w, "| scenario | target | conns | ops/s | × direct | p50 µs | p99 µs | p99 × direct | p99.9 µs | max µs | hit ratio | errors |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, sr := range scenarios {
		for _, p := range sr.Points {
			base := p.baseline()
			for _, t := range p.Targets {
				s := t.Median
				fmt.Fprintf(w, "| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s | %d |\n",
					sr.Name, t.Target, p.Conns, s.OpsPerSec,
					ratio(s.OpsPerSec, base, func(s loadgen.Stats) float64 { return s.OpsPerSec }),
					us(s.P50), us(s.P99), ratio(s.P99, base, func(s loadgen.Stats) float64 { return s.P99 }),
					us(s.P999), us(s.Max), hitRatio(s.HitRatio), s.Errors)
			}
		}
	}
	fmt.Fprintln(w)
}

// writeHeadline writes, for one latency, what the proxy's L1 gains on cached
// reads and what a miss and a write cost, against direct Redis and twemproxy
// on the same path, at each connection count.
func writeHeadline(w io.Writer, g scenarioGroup) {
	find := func(base string) *scenarioResult {
		for i := range g.scenarios {
			if strings.HasSuffix(g.scenarios[i].Name, "-"+base) {
				return &g.scenarios[i]
			}
		}
		return nil
	}
	hit, miss, write := find(remoteHit), find(remoteMiss), find(remoteWrite)
	if hit == nil && miss == nil && write == nil {
		return
	}
	var conns []int
	for _, sr := range []*scenarioResult{hit, miss, write} {
		if sr != nil {
			for _, p := range sr.Points {
				if !slices.Contains(conns, p.Conns) {
					conns = append(conns, p.Conns)
				}
			}
		}
	}
	slices.Sort(conns)
	fmt.Fprintf(w, "What the L1 gains (cached reads, proxy against direct) and what a miss and a write cost "+
		"(p50 µs and ops/s of proxy, direct and twemproxy); from the %s, %s and %s scenarios below.\n\n",
		remoteHit, remoteMiss, remoteWrite)
	fmt.Fprintln(w, "| conns | hit ops/s × direct | hit p50 µs: proxy / direct | miss p50 µs: proxy / direct / twemproxy | "+
		"miss ops/s × direct: proxy / twemproxy | write p50 µs: proxy / direct / twemproxy | write ops/s × direct: proxy / twemproxy |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range conns {
		at := func(sr *scenarioResult, target string) *loadgen.Stats {
			if sr == nil {
				return nil
			}
			for _, p := range sr.Points {
				if p.Conns != c {
					continue
				}
				for i := range p.Targets {
					if p.Targets[i].Target == target {
						return &p.Targets[i].Median
					}
				}
			}
			return nil
		}
		p50s := func(sr *scenarioResult, targets ...string) string {
			var parts []string
			for _, t := range targets {
				if s := at(sr, t); s != nil {
					parts = append(parts, us(s.P50))
				} else {
					parts = append(parts, "-")
				}
			}
			return strings.Join(parts, " / ")
		}
		times := func(sr *scenarioResult, targets ...string) string {
			base := at(sr, baselineName)
			var parts []string
			for _, t := range targets {
				if s := at(sr, t); s != nil && base != nil && base.OpsPerSec > 0 {
					parts = append(parts, fmt.Sprintf("%.2fx", s.OpsPerSec/base.OpsPerSec))
				} else {
					parts = append(parts, "-")
				}
			}
			return strings.Join(parts, " / ")
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s |\n", c,
			times(hit, "proxy"), p50s(hit, "proxy", baselineName),
			p50s(miss, "proxy", baselineName, "twemproxy"), times(miss, "proxy", "twemproxy"),
			p50s(write, "proxy", baselineName, "twemproxy"), times(write, "proxy", "twemproxy"))
	}
	fmt.Fprintln(w)
}

// scenarioGroup is the scenarios of one latency, with their summary figure.
type scenarioGroup struct {
	latency   string // "" on loopback
	title     string
	file      string // of the summary figure
	scenarios []scenarioResult
	figure    plot.Figure
	figureOK  bool
}

// scenarioGroups splits the report by latency: the remote groups in the order
// they ran, then loopback.
func scenarioGroups(r report) []scenarioGroup {
	var gs []scenarioGroup
	idx := map[string]int{}
	for _, sr := range r.Scenarios {
		i, ok := idx[sr.Latency]
		if !ok {
			g := scenarioGroup{latency: sr.Latency, title: "Relative to direct Redis, on loopback", file: "summary.svg"}
			if sr.Latency != "" {
				g.title = fmt.Sprintf("Relative to direct Redis, %s away", sr.Latency)
				g.file = "remote-" + fileLabel(sr.Latency) + ".svg"
			}
			i = len(gs)
			idx[sr.Latency] = i
			gs = append(gs, g)
		}
		gs[i].scenarios = append(gs[i].scenarios, sr)
	}
	slices.SortStableFunc(gs, func(a, b scenarioGroup) int {
		return cmpBool(a.latency == "", b.latency == "")
	})
	for i := range gs {
		gs[i].figure, gs[i].figureOK = summaryFigure(r, gs[i].title, gs[i].scenarios)
	}
	return gs
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

func ratio(v float64, base *targetResult, f func(loadgen.Stats) float64) string {
	if base == nil || f(base.Median) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v/f(base.Median))
}

func us(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func hitRatio(h *float64) string {
	if h == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100**h)
}

// scenarioFigure draws a scenario: throughput and latency percentiles per
// target at one connection count, or throughput, p50 and p99 against the
// connection count.
func scenarioFigure(r report, sr scenarioResult) plot.Figure {
	title := sr.Name
	if sr.Description != "" {
		title += ": " + sr.Description
	}
	f := plot.Figure{Title: title, Notes: []string{sr.Spec.String() + "; " + r.scenarioRounds(sr), r.Note}, Legend: r.targetNames()}
	var names []string
	if len(sr.Points) > 0 {
		for _, t := range sr.Points[0].Targets {
			names = append(names, t.Target)
		}
	}
	series := func(get func(loadgen.Stats) float64) []plot.Series {
		out := make([]plot.Series, len(names))
		for i, n := range names {
			out[i].Name = n
			for _, p := range sr.Points {
				v := math.NaN()
				for _, t := range p.Targets {
					if t.Target == n {
						v = get(t.Median)
					}
				}
				out[i].Values = append(out[i].Values, v)
			}
		}
		return out
	}
	if len(sr.Points) == 1 {
		p := sr.Points[0]
		f.Charts = []plot.Chart{
			{Title: "Throughput", YLabel: "commands per second", Categories: []string{fmt.Sprintf("%d connections", p.Conns)},
				Series: series(func(s loadgen.Stats) float64 { return s.OpsPerSec })},
			{Title: "Latency percentiles", YLabel: "latency, µs", LogY: true, Categories: []string{"p50", "p90", "p99", "p99.9", "max"}},
		}
		for _, t := range p.Targets {
			m := t.Median
			f.Charts[1].Series = append(f.Charts[1].Series, plot.Series{Name: t.Target, Values: []float64{m.P50, m.P90, m.P99, m.P999, m.Max}})
		}
		return f
	}
	var cats []string
	for _, p := range sr.Points {
		cats = append(cats, fmt.Sprint(p.Conns))
	}
	f.Columns, f.ChartWidth = 3, 420
	f.Charts = []plot.Chart{
		{Title: "Throughput", XLabel: "connections", YLabel: "commands per second", Lines: true, Categories: cats,
			Series: series(func(s loadgen.Stats) float64 { return s.OpsPerSec })},
		{Title: "p50 latency", XLabel: "connections", YLabel: "latency, µs", Lines: true, LogY: true, Categories: cats,
			Series: series(func(s loadgen.Stats) float64 { return s.P50 })},
		{Title: "p99 latency", XLabel: "connections", YLabel: "latency, µs", Lines: true, LogY: true, Categories: cats,
			Series: series(func(s loadgen.Stats) float64 { return s.P99 })},
	}
	return f
}

// summaryFigure draws every other target's throughput, p50 and p99 relative
// to direct across the scenarios; ok is false when there is nothing to
// compare.
func summaryFigure(r report, title string, scenarios []scenarioResult) (f plot.Figure, ok bool) {
	var cats []string
	byTarget := map[string]*[3]plot.Series{}
	var order []string
	for _, sr := range scenarios {
		for _, p := range sr.Points {
			base := p.baseline()
			if base == nil {
				continue
			}
			// The figure's title says how far Redis is.
			cat := strings.TrimPrefix(sr.Name, "remote-"+fileLabel(sr.Latency)+"-")
			if len(sr.Points) > 1 {
				cat = fmt.Sprintf("%s@%d", cat, p.Conns)
			}
			cats = append(cats, cat)
			for _, t := range p.Targets {
				if t.Target == baselineName {
					continue
				}
				s, seen := byTarget[t.Target]
				if !seen {
					s = &[3]plot.Series{{Name: t.Target}, {Name: t.Target}, {Name: t.Target}}
					byTarget[t.Target] = s
					order = append(order, t.Target)
				}
				// A target first seen late has no values for earlier categories.
				pad(s, len(cats)-1)
				s[0].Values = append(s[0].Values, t.Median.OpsPerSec/base.Median.OpsPerSec)
				s[1].Values = append(s[1].Values, t.Median.P50/base.Median.P50)
				s[2].Values = append(s[2].Values, t.Median.P99/base.Median.P99)
			}
		}
	}
	if len(order) == 0 {
		return f, false
	}
	one := 1.0
	f = plot.Figure{
		Title:       title,
		Notes:       []string{r.scenarioRounds(scenarios[0]), r.Note},
		Columns:     1,
		ChartWidth:  max(760, 64*len(cats)),
		ChartHeight: 360,
		Legend:      r.targetNames(),
		Charts: []plot.Chart{
			{Title: "Throughput relative to direct (higher is better)", YLabel: "× direct ops/s", Categories: cats, RefLine: &one},
			{Title: "p50 latency relative to direct (lower is better)", YLabel: "× direct p50", Categories: cats, RefLine: &one},
			{Title: "p99 latency relative to direct (lower is better)", YLabel: "× direct p99", Categories: cats, RefLine: &one},
		},
	}
	for _, name := range order {
		s := byTarget[name]
		// Nor a target missing from the last categories (the ceiling server
		// runs in some scenarios only).
		pad(s, len(cats))
		for i := range f.Charts {
			f.Charts[i].Series = append(f.Charts[i].Series, s[i])
			// Hits over a remote link run tens of times direct's rate: on a
			// linear scale every other bar would be a sliver.
			f.Charts[i].LogY = f.Charts[i].LogY || slices.ContainsFunc(s[i].Values, func(v float64) bool { return v > 4 || v < 0.25 })
		}
	}
	return f, true
}

// pad fills a target's series with gaps up to n categories.
func pad(s *[3]plot.Series, n int) {
	for i := range s {
		for len(s[i].Values) < n {
			s[i].Values = append(s[i].Values, math.NaN())
		}
	}
}

func writeSVG(path string, f plot.Figure) error {
	var buf bytes.Buffer
	if err := f.WriteSVG(&buf); err != nil {
		return fmt.Errorf("draw %s: %w", path, err)
	}
	return writeFile(path, buf.Bytes())
}

func writeJSON(path string, r report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return writeFile(path, append(b, '\n'))
}

func writeFile(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
