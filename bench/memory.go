package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cacheproxy/cacheproxy/bench/loadgen"
)

// memoryScenario is the name `--only` knows the memory check by.
const memoryScenario = "memory"

// memorySpec is the memory check's workload: a working set four times the
// suite's L1 budget, read in order so that every read is a miss whose fill
// evicts an older entry. That is the L1's worst case for memory: every fill
// leaves the entry it replaces as garbage.
func memorySpec() loadgen.Spec {
	return loadgen.Spec{Workload: loadgen.Get, Keys: 1_000_000, Prefix: "bench:mem:", Dist: loadgen.Seq,
		ValueMin: 1024, ValueMax: 1024, Pipeline: 16, Conns: 10}
}

// memoryResult is what the memory check measured of the proxy process.
type memoryResult struct {
	Spec        loadgen.Spec `json:"spec"`
	BudgetBytes int64        `json:"budget_bytes"` // the proxy's l1.max_memory
	Reads       int64        `json:"reads"`
	OpsPerSec   float64      `json:"ops_per_sec"`
	RSSBytes    int64        `json:"rss_bytes"`      // resident memory at the end
	PeakBytes   int64        `json:"peak_rss_bytes"` // the process's high-water mark (VmHWM)
}

func (m memoryResult) peakRatio() float64 { return float64(m.PeakBytes) / float64(m.BudgetBytes) }

// memoryPasses is how many times the check reads every key; memoryTurns
// bounds the runs it takes, however slow the target.
const (
	memoryPasses = 2
	memoryTurns  = 30
	memoryTurn   = 5 * time.Second
)

// checkMemory preloads the memory workload through preload, reads every key
// memoryPasses times through the proxy at proxyAddr, and reads the proxy
// process's resident memory.
func checkMemory(ctx context.Context, preload, proxyAddr string, pid int, budget int64, prog *progress) (memoryResult, error) {
	spec := memorySpec()
	res := memoryResult{Spec: spec, BudgetBytes: budget}
	prog.note(fmt.Sprintf("%s: preloading %d keys of %d B via %s", memoryScenario, spec.Keys, spec.ValueMax, preload))
	err := loadgen.Preload(ctx, preload, spec)
	prog.note("")
	if err != nil {
		return res, fmt.Errorf("%s: %w", memoryScenario, err)
	}
	r, err := loadgen.NewRunner(proxyAddr, spec)
	if err != nil {
		return res, fmt.Errorf("%s: %w", memoryScenario, err)
	}
	var secs float64
	want := int64(memoryPasses * spec.Keys)
	for turn := 0; res.Reads < want && turn < memoryTurns; turn++ {
		label := fmt.Sprintf("%s  %d conns  %d of %d reads", memoryScenario, spec.Conns, res.Reads, want)
		stop := prog.track(label, memoryTurn, r.Done)
		st, err := r.Run(ctx, memoryTurn, uint64(turn))
		stop()
		if err != nil {
			return res, fmt.Errorf("%s: %w", memoryScenario, err)
		}
		res.Reads += st.Ops
		secs += st.Seconds
	}
	if res.Reads < want {
		return res, fmt.Errorf("%s: only %d of %d reads in %d turns of %v", memoryScenario, res.Reads, want, memoryTurns, memoryTurn)
	}
	res.OpsPerSec = float64(res.Reads) / secs
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return res, fmt.Errorf("%s: resident memory: %w", memoryScenario, err)
	}
	defer f.Close()
	res.RSSBytes, res.PeakBytes, err = residentMemory(f)
	if err != nil {
		return res, fmt.Errorf("%s: resident memory of process %d: %w", memoryScenario, pid, err)
	}
	return res, nil
}

// residentMemory reads VmRSS and VmHWM from a Linux /proc/<pid>/status.
func residentMemory(r io.Reader) (rss, peak int64, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, ok := strings.CutSuffix(strings.TrimSpace(value), " kB")
		n, err := strconv.ParseInt(kb, 10, 64)
		if !ok || err != nil {
			return 0, 0, fmt.Errorf("%s: unreadable value %q", name, value)
		}
		if name == "VmRSS" {
			rss = n << 10
		} else {
			peak = n << 10
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if rss == 0 || peak == 0 {
		return 0, 0, fmt.Errorf("no VmRSS or VmHWM line")
	}
	return rss, peak, nil
}

func writeMemoryTable(w io.Writer, m memoryResult) {
	fmt.Fprintf(w, "\n%s: %d reads at %.0f/s of %d keys of %d B through the proxy (L1 budget %d MiB): RSS %d MiB at the end, peak %d MiB = %.2fx the budget\n",
		memoryScenario, m.Reads, m.OpsPerSec, m.Spec.Keys, m.Spec.ValueMax, m.BudgetBytes>>20, m.RSSBytes>>20, m.PeakBytes>>20, m.peakRatio())
}

func writeMemoryMarkdown(w io.Writer, m memoryResult) {
	fmt.Fprintf(w, "\n## Memory\n\n")
	fmt.Fprintf(w, "The proxy's resident memory after %d reads (every key %d times, each read a miss whose fill evicts an older entry) of %d keys of %d B, `%s`, with `l1.max_memory: %dMiB`:\n\n",
		m.Reads, memoryPasses, m.Spec.Keys, m.Spec.ValueMax, m.Spec, m.BudgetBytes>>20)
	fmt.Fprintf(w, "| L1 budget | RSS at the end | peak RSS (VmHWM) | peak × budget | reads/s |\n|--:|--:|--:|--:|--:|\n")
	fmt.Fprintf(w, "| %d MiB | %d MiB | %d MiB | %.2fx | %.0f |\n", m.BudgetBytes>>20, m.RSSBytes>>20, m.PeakBytes>>20, m.peakRatio(), m.OpsPerSec)
}
