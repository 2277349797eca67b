package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cacheproxy/cacheproxy/bench/plot"
)

type soakReport struct {
	Duration     string       `json:"duration"`
	Conns        int          `json:"conns"`
	FaultEvery   string       `json:"fault_every"`
	FaultLength  string       `json:"fault_length"`
	SampleEvery  string       `json:"sample_every"`
	StaleBound   string       `json:"stale_bound"`
	Began        time.Time    `json:"began"`
	Ops          int64        `json:"ops"`
	DirectWrites int64        `json:"direct_writes"`
	FaultErrors  int64        `json:"errors_during_faults"`
	CalmErrors   int64        `json:"errors_outside_faults"`
	Wrong        int64        `json:"wrong_replies"`
	Reconnects   int64        `json:"reconnects"`
	BaselineS    float64      `json:"baseline_s"`
	Tolerance    float64      `json:"flat_tolerance"`
	Flatness     []flatResult `json:"flatness"`
	Faults       []faultEvent `json:"faults"`
	WrongSeen    []string     `json:"wrong_seen,omitempty"`
	CalmSeen     []string     `json:"errors_outside_faults_seen,omitempty"`
	SampleError  string       `json:"sample_error,omitempty"`
	Samples      []soakSample `json:"samples"`
}

// flatResult compares one resource of the proxy at the baseline mark, the
// middle and the end of the run.
type flatResult struct {
	Metric   string  `json:"metric"`
	Start    float64 `json:"start"`
	Baseline float64 `json:"baseline"`
	Middle   float64 `json:"middle"`
	End      float64 `json:"end"`
	Limit    float64 `json:"limit"` // End above this is a leak
	Leak     bool    `json:"leak"`
	bytes    bool
}

func (f flatResult) fmt(v float64) string {
	if f.bytes {
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	}
	return fmt.Sprintf("%.0f", v)
}

// flatWindow is the span of samples whose median stands for a mark.
const flatWindow = 15 * time.Second

// flatness compares the median of the samples in the flatWindow before the
// baseline mark with the median of the last flatWindow's: the end may exceed
// the baseline by tolerance (and, for the small counts, by 5) before it is a
// leak.
func flatness(samples []soakSample, baselineAt, duration time.Duration, tolerance float64) []flatResult {
	median := func(get func(soakSample) float64, from, to time.Duration) float64 {
		var vs []float64
		for _, s := range samples {
			t := time.Duration(s.TS * float64(time.Second))
			if t >= from && t <= to {
				vs = append(vs, get(s))
			}
		}
		if len(vs) == 0 {
			// No sample in the window: the nearest one before its end.
			for _, s := range samples {
				if time.Duration(s.TS*float64(time.Second)) <= to {
					vs = []float64{get(s)}
				}
			}
		}
		if len(vs) == 0 {
			return 0
		}
		slices.Sort(vs)
		return vs[len(vs)/2]
	}
	metrics := []struct {
		name  string
		get   func(soakSample) float64
		slack float64
		bytes bool
	}{
		{"RSS", func(s soakSample) float64 { return float64(s.RSSBytes) }, 0, true},
		{"goroutines", func(s soakSample) float64 { return float64(s.Goroutines) }, 5, false},
		{"open files", func(s soakSample) float64 { return float64(s.FDs) }, 5, false},
	}
	var out []flatResult
	if len(samples) == 0 {
		return nil
	}
	for _, m := range metrics {
		f := flatResult{Metric: m.name, bytes: m.bytes,
			Start:    m.get(samples[0]),
			Baseline: median(m.get, baselineAt-flatWindow, baselineAt),
			Middle:   median(m.get, duration/2-flatWindow, duration/2),
			End:      median(m.get, duration-flatWindow, duration+time.Minute),
		}
		f.Limit = f.Baseline*(1+tolerance) + m.slack
		f.Leak = f.End > f.Limit
		out = append(out, f)
	}
	return out
}

func writeSoakReport(dir string, rep soakReport) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode soak.json: %w", err)
	}
	if err := writeFile(filepath.Join(dir, "soak.json"), append(b, '\n')); err != nil {
		return err
	}
	if err := writeSVG(filepath.Join(dir, "soak.svg"), soakFigure(rep)); err != nil {
		return err
	}
	var md strings.Builder
	writeSoakMarkdown(&md, rep)
	return writeFile(filepath.Join(dir, "soak.md"), []byte(md.String()))
}

func (rep soakReport) passed() bool {
	if rep.Wrong > 0 {
		return false
	}
	for _, f := range rep.Flatness {
		if f.Leak {
			return false
		}
	}
	return true
}

func writeSoakSummary(w io.Writer, rep soakReport) {
	verdict := "PASS"
	if !rep.passed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\nsoak %s: %s, %d ops, %d faults, %d errors during faults, %d outside, %d wrong replies\n",
		verdict, rep.Duration, rep.Ops, len(rep.Faults), rep.FaultErrors, rep.CalmErrors, rep.Wrong)
	for _, f := range rep.Flatness {
		fmt.Fprintf(w, "  %-10s start %s, baseline %s, middle %s, end %s (limit %s): %s\n", f.Metric,
			f.fmt(f.Start), f.fmt(f.Baseline), f.fmt(f.Middle), f.fmt(f.End), f.fmt(f.Limit), flatWord(f))
	}
}

func flatWord(f flatResult) string {
	if f.Leak {
		return "LEAK"
	}
	return "flat"
}

func writeSoakMarkdown(w io.Writer, rep soakReport) {
	verdict := "**pass**"
	if !rep.passed() {
		verdict = "**FAIL**"
	}
	fmt.Fprintf(w, "# Soak\n\n")
	fmt.Fprintf(w, "Verdict: %s. `go run ./bench soak` (`make soak`): %s of mixed load from %d connections through the proxy "+
		"(a separate process) in front of a redis-server, the proxy's upstream and invalidation connections through a fault "+
		"bridge, a fault every %s lasting %s, then healed. Began %s.\n\n",
		verdict, rep.Duration, rep.Conns, rep.FaultEvery, rep.FaultLength, rep.Began.Format(time.RFC3339))
	fmt.Fprintf(w, "Each connection GETs, SETs and MGETs keys of its own (cached), INCRs a counter of its own, sends one request in ten as a "+
		"pipeline of 8-24 commands, and reads keys written directly on Redis every few ms. Every reply is checked: a read of an own key "+
		"returns the last acknowledged SET's value (or one of a SET whose outcome a fault left unknown); INCR replies rise by exactly 1 "+
		"(more only across INCRs of unknown outcome); a directly written key is never older than the last write acknowledged %s before "+
		"the read; types and lengths are right. Error replies and broken connections during a fault or the %v after it are counted "+
		"apart from wrong replies.\n\n", rep.StaleBound, faultSettle)
	fmt.Fprintf(w, "## Totals\n\n| ops checked | direct writes | errors during faults | errors outside faults | reconnects | wrong replies |\n|--:|--:|--:|--:|--:|--:|\n")
	fmt.Fprintf(w, "| %d | %d | %d | %d | %d | **%d** |\n\n", rep.Ops, rep.DirectWrites, rep.FaultErrors, rep.CalmErrors, rep.Reconnects, rep.Wrong)
	fmt.Fprintf(w, "## Resources of the proxy process\n\n")
	fmt.Fprintf(w, "Medians of the samples (every %s) in the %v before each mark; the baseline is at %s; a leak is an end above "+
		"baseline × %.2f (+5 for goroutines and open files).\n\n", rep.SampleEvery, flatWindow, fmtOffset(time.Duration(rep.BaselineS*float64(time.Second))), 1+rep.Tolerance)
	fmt.Fprintf(w, "| | start | baseline | middle | end | limit | verdict |\n|--|--:|--:|--:|--:|--:|--|\n")
	for _, f := range rep.Flatness {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", f.Metric, f.fmt(f.Start), f.fmt(f.Baseline), f.fmt(f.Middle),
			f.fmt(f.End), f.fmt(f.Limit), flatWord(f))
	}
	fmt.Fprintf(w, "\n![soak](soak.svg)\n\n## Faults\n\n| # | fault | from | to | what |\n|--:|--|--|--|--|\n")
	for i, f := range rep.Faults {
		fmt.Fprintf(w, "| %d | %s | %s (%s) | %s (%s) | %s |\n", i+1, f.Kind,
			fmtOffset(time.Duration(f.StartS*float64(time.Second))), f.StartAt.Format("15:04:05"),
			fmtOffset(time.Duration(f.EndS*float64(time.Second))), f.EndAt.Format("15:04:05"), f.Detail)
	}
	if len(rep.WrongSeen) > 0 {
		fmt.Fprintf(w, "\n## Wrong replies (first %d)\n\n", len(rep.WrongSeen))
		for _, s := range rep.WrongSeen {
			fmt.Fprintf(w, "- %s\n", s)
		}
	}
	if len(rep.CalmSeen) > 0 {
		fmt.Fprintf(w, "\n## Errors outside fault windows (first %d)\n\n", len(rep.CalmSeen))
		for _, s := range rep.CalmSeen {
			fmt.Fprintf(w, "- %s\n", s)
		}
	}
	if rep.SampleError != "" {
		fmt.Fprintf(w, "\nSampling trouble (first): %s\n", rep.SampleError)
	}
}

// soakFigure plots the samples over time with the fault windows shaded.
func soakFigure(rep soakReport) plot.Figure {
	cats := make([]string, len(rep.Samples))
	for i, s := range rep.Samples {
		cats[i] = fmtOffset(time.Duration(s.TS * float64(time.Second)))
	}
	var bands []plot.Band
	for _, f := range rep.Faults {
		b := plot.Band{From: -1, To: -1, Label: f.Kind}
		for i, s := range rep.Samples {
			if s.TS >= f.StartS && b.From < 0 {
				b.From = i
			}
			if s.TS <= f.EndS+5 {
				b.To = i
			}
		}
		if b.From >= 0 && b.To >= b.From {
			bands = append(bands, b)
		}
	}
	series := func(name string, get func(soakSample) float64) []plot.Series {
		vs := make([]float64, len(rep.Samples))
		for i, s := range rep.Samples {
			vs[i] = get(s)
		}
		return []plot.Series{{Name: name, Values: vs}}
	}
	every := max(1, len(cats)/8)
	chart := func(title, ylabel string, s []plot.Series) plot.Chart {
		return plot.Chart{Title: title, XLabel: "time into the run (m:ss)", YLabel: ylabel, Categories: cats, Series: s,
			Lines: true, NoMarkers: true, Bands: bands, LabelEvery: every}
	}
	return plot.Figure{
		Title: "Soak: the proxy process over time",
		Notes: []string{fmt.Sprintf("%s, %d connections, a fault every %s (shaded); %d ops, %d errors during faults, %d wrong replies",
			rep.Duration, rep.Conns, rep.FaultEvery, rep.Ops, rep.FaultErrors, rep.Wrong)},
		Charts: []plot.Chart{
			chart("Resident memory", "MiB", series("RSS", func(s soakSample) float64 { return float64(s.RSSBytes) / (1 << 20) })),
			chart("Goroutines", "goroutines", series("goroutines", func(s soakSample) float64 { return float64(s.Goroutines) })),
			chart("Open files", "fds", series("open files", func(s soakSample) float64 { return float64(s.FDs) })),
			chart("Throughput", "ops/s", series("ops/s", func(s soakSample) float64 { return s.OpsPerSec })),
		},
		ChartWidth: 640,
	}
}
