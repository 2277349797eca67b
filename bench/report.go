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
	Points      []point      `json:"points"`
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

func (r report) roundsLine() string {
	s := fmt.Sprintf("median of %d rounds of %s per target, targets interleaved", r.Rounds, r.Duration)
	if r.Rounds == 1 {
		s = fmt.Sprintf("one round of %s per target", r.Duration)
	}
	if r.Warmup != "0s" && r.Warmup != "" {
		s += ", after " + r.Warmup + " warmup each"
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
	fmt.Fprintf(w, "\n   %s; %s\n", sr.Spec, r.roundsLine())
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

// writeMarkdown writes the whole report as a markdown document with one table
// and links to the scenarios' figures.
func writeMarkdown(w io.Writer, r report, summary bool) {
	m := r.Machine
	fmt.Fprintf(w, "# Benchmark results\n\n")
	fmt.Fprintf(w, "Machine: %d CPUs (nproc), %s, %s %s", m.CPUs, m.CPUModel, m.Go, m.OS)
	if m.Redis != "" {
		fmt.Fprintf(w, ", Redis %s", m.Redis)
	}
	fmt.Fprintf(w, ".\n\n%s\n\n", r.Note)
	fmt.Fprintf(w, "Each number is the %s. Latencies are in µs, from a batch's write to each of its replies; "+
		"ops/s counts commands (an MGET is one). Ratios are against the target named %s at the same point: "+
		"above 1 is more throughput, or a higher (worse) p99.\n\n", r.roundsLine(), baselineName)
	if summary {
		fmt.Fprintf(w, "![summary](summary.svg)\n\n")
	}
	fmt.Fprintln(w, "| scenario | target | conns | ops/s | × direct | p50 µs | p99 µs | p99 × direct | p99.9 µs | max µs | hit ratio | errors |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, sr := range r.Scenarios {
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
	fmt.Fprintf(w, "\n## Scenarios\n\n")
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
	f := plot.Figure{Title: title, Notes: []string{sr.Spec.String() + "; " + r.roundsLine(), r.Note}, Legend: r.targetNames()}
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

// summaryFigure draws every other target's throughput and p99 relative to
// direct across all scenarios; ok is false when there is nothing to compare.
func summaryFigure(r report) (f plot.Figure, ok bool) {
	var cats []string
	byTarget := map[string]*[2]plot.Series{}
	var order []string
	for _, sr := range r.Scenarios {
		for _, p := range sr.Points {
			base := p.baseline()
			if base == nil {
				continue
			}
			cat := sr.Name
			if len(sr.Points) > 1 {
				cat = fmt.Sprintf("%s@%d", sr.Name, p.Conns)
			}
			cats = append(cats, cat)
			for _, t := range p.Targets {
				if t.Target == baselineName {
					continue
				}
				s, seen := byTarget[t.Target]
				if !seen {
					s = &[2]plot.Series{{Name: t.Target}, {Name: t.Target}}
					byTarget[t.Target] = s
					order = append(order, t.Target)
				}
				// A target first seen late has no values for earlier categories.
				for len(s[0].Values) < len(cats)-1 {
					s[0].Values = append(s[0].Values, math.NaN())
					s[1].Values = append(s[1].Values, math.NaN())
				}
				s[0].Values = append(s[0].Values, t.Median.OpsPerSec/base.Median.OpsPerSec)
				s[1].Values = append(s[1].Values, t.Median.P99/base.Median.P99)
			}
		}
	}
	if len(order) == 0 {
		return f, false
	}
	one := 1.0
	f = plot.Figure{
		Title:       "Relative to direct Redis",
		Notes:       []string{r.roundsLine(), r.Note},
		Columns:     1,
		ChartWidth:  max(760, 64*len(cats)),
		ChartHeight: 400,
		Legend:      r.targetNames(),
		Charts: []plot.Chart{
			{Title: "Throughput relative to direct (higher is better)", YLabel: "× direct ops/s", Categories: cats, RefLine: &one},
			{Title: "p99 latency relative to direct (lower is better)", YLabel: "× direct p99", Categories: cats, RefLine: &one},
		},
	}
	for _, name := range order {
		s := byTarget[name]
		// Nor a target missing from the last categories (the ceiling server
		// runs in some scenarios only).
		for len(s[0].Values) < len(cats) {
			s[0].Values = append(s[0].Values, math.NaN())
			s[1].Values = append(s[1].Values, math.NaN())
		}
		f.Charts[0].Series = append(f.Charts[0].Series, s[0])
		f.Charts[1].Series = append(f.Charts[1].Series, s[1])
	}
	return f, true
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
