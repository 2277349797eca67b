package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/bench/loadgen"
)

const fakeProxyEnv = "BENCH_TEST_FAKE_PROXY"

// TestMain lets the test binary stand in for the proxy binary in suite tests:
// started with fakeProxyEnv set, it is a plain TCP relay to its upstream with
// a counters endpoint, taking the proxy's command line. The suite also starts
// its own executable, the test binary here, as the ceiling server and as the
// latency relay.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "relay" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		err := relayCmd(ctx, os.Args[2:], os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == "ceiling" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		err := ceilingCmd(ctx, os.Args[2:], os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "ceiling:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(fakeProxyEnv) == "1" {
		if err := fakeProxy(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "fake proxy:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func fakeProxy(args []string) error {
	fs := flag.NewFlagSet("fake", flag.ContinueOnError)
	config := fs.String("config", "", "")
	listen := fs.String("listen", "", "")
	upstream := fs.String("upstream", "", "")
	metrics := fs.String("metrics", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*config)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), `prefix: "bench:"`) || !strings.Contains(string(b), "max_memory: 256MiB") {
		return fmt.Errorf("unexpected config:\n%s", b)
	}
	up := strings.TrimSuffix(strings.TrimPrefix(*upstream, "redis://"), "/0")
	ml, err := net.Listen("tcp", *metrics)
	if err != nil {
		return err
	}
	go http.Serve(ml, countingMetrics())
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", up)
			if err != nil {
				return
			}
			defer u.Close()
			go io.Copy(u, c)
			io.Copy(c, u)
		}()
	}
}

func TestSuiteStartsMeasuresAndStopsEverything(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "results")
	rep := runSuite(t, out, "--only", "get-hit-p16,get-hit", "--duration", "100ms", "--rounds", "1", "--warmup", "0")
	if len(rep.Scenarios) != 2 || rep.Scenarios[1].Name != "get-hit" || len(rep.Scenarios[1].Points) != 4 {
		t.Fatalf("scenarios %+v, want get-hit-p16 and the 4-point get-hit scaling run", rep.Scenarios)
	}
	var addrs []string
	for _, sr := range rep.Scenarios {
		for _, p := range sr.Points {
			// The ceiling server runs in the L1-hit scenarios, with keys of
			// its own: a nil would say its preload failed.
			if len(p.Targets) != 3 || p.Targets[0].Target != "direct" || p.Targets[1].Target != "proxy" || p.Targets[2].Target != ceilingName {
				t.Fatalf("%s@%d: targets %+v, want direct, proxy and %s", sr.Name, p.Conns, p.Targets, ceilingName)
			}
			for _, tr := range p.Targets {
				if tr.Median.Ops == 0 || tr.Median.Errors != 0 || tr.Median.Nils != 0 {
					t.Errorf("%s@%d %s: %+v", sr.Name, p.Conns, tr.Target, tr.Median)
				}
			}
			if h := p.Targets[1].Median.HitRatio; h == nil || *h != 0.75 {
				t.Errorf("%s@%d: proxy hit ratio %v, want 0.75 from its metrics endpoint", sr.Name, p.Conns, h)
			}
			addrs = append(addrs, p.Targets[0].Addr, p.Targets[1].Addr, p.Targets[2].Addr)
		}
	}
	if rep.Machine.Redis == "" {
		t.Error("no Redis version in the report")
	}
	for _, f := range []string{"results.md", "summary.svg", "get-hit-p16.svg", "get-hit.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing output: %v", err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	for _, want := range []string{"Machine: ", "CPUs (nproc)", "| get-hit | proxy | 200 |", "× direct", "75.0%"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	wellFormedSVG(t, filepath.Join(out, "get-hit.svg"), "p99 latency")
	wellFormedSVG(t, filepath.Join(out, "summary.svg"), "Throughput relative to direct")
	// Everything the suite started is gone: nothing answers on its ports.
	for _, a := range addrs {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the suite", a)
		}
	}
}

// runSuite runs bench suite with the fake proxy, without twemproxy, writing
// to out, and returns the report it wrote.
func runSuite(t *testing.T, out string, args ...string) report {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args = append([]string{"suite", "--proxy-bin", fakeProxyBin(t), "--out", out, "--twemproxy", ""}, args...)
	if err := cli(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("suite: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var rep report
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// fakeProxyBin is a script that starts the test binary as the fake proxy.
func fakeProxyBin(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(t.TempDir(), "proxy.sh")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec %q \"$@\"\n", fakeProxyEnv, self)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

// The remote scenarios put a relay between Redis and every target: direct
// connections and the proxy's upstream cross it, so that no round trip to
// Redis is shorter than the latency both ways. (The fake proxy relays every
// command upstream.)
func TestSuiteRemoteScenariosCrossTheRelay(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the latency relay runs on Linux only")
	}
	out := filepath.Join(t.TempDir(), "results")
	rep := runSuite(t, out, "--only", "remote-100us-get-hit,remote-500us-set", "--remote-duration", "100ms", "--rounds", "1", "--remote-warmup", "0")
	if len(rep.Scenarios) != 2 {
		t.Fatalf("scenarios %+v, want the two asked for", rep.Scenarios)
	}
	var addrs []string
	for i, want := range []struct {
		name, latency string
		oneWay        time.Duration
	}{{"remote-100us-get-hit", "100µs", 100 * time.Microsecond}, {"remote-500us-set", "500µs", 500 * time.Microsecond}} {
		sr := rep.Scenarios[i]
		if sr.Name != want.name || sr.Latency != want.latency || sr.RoundDuration != "100ms" || len(sr.Points) != len(remoteConns) {
			t.Fatalf("scenario %d: %s, latency %q, rounds of %s, %d points; want %s, %s, 100ms, %d", i, sr.Name, sr.Latency,
				sr.RoundDuration, len(sr.Points), want.name, want.latency, len(remoteConns))
		}
		for _, p := range sr.Points {
			if len(p.Targets) != 2 || p.Targets[0].Target != "direct" || p.Targets[1].Target != "proxy" {
				t.Fatalf("%s@%d: targets %+v, want direct and proxy", sr.Name, p.Conns, p.Targets)
			}
			for _, tr := range p.Targets {
				m := tr.Median
				if m.Ops == 0 || m.Errors != 0 || m.Nils != 0 {
					t.Errorf("%s@%d %s: %+v", sr.Name, p.Conns, tr.Target, m)
				}
				if min := 2 * want.oneWay; time.Duration(m.P50*1e3) < min {
					t.Errorf("%s@%d %s: p50 %.0fµs, below the relay's %v round trip", sr.Name, p.Conns, tr.Target, m.P50, min)
				}
				addrs = append(addrs, tr.Addr)
			}
		}
	}
	for _, f := range []string{"remote-100us.svg", "remote-500us.svg", "remote-100us-get-hit.svg", "remote-500us-set.svg"} {
		wellFormedSVG(t, filepath.Join(out, f), "p50 latency")
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	for _, want := range []string{"## Redis 100µs away", "## Redis 500µs away", "hit ops/s × direct", "| remote-500us-set | proxy | 200 |",
		"Produced by `go run ./bench suite --proxy-bin "} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(string(md), "on loopback") {
		t.Errorf("results.md has a loopback section without a loopback scenario:\n%s", md)
	}
	for _, a := range addrs {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after the suite", a)
		}
	}
}

func TestSuiteFailsCleanlyWhenTheProxyDoesNotStart(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "proxy.sh")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho no such flag: $1 >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := cli(context.Background(), []string{"suite", "--proxy-bin", bad, "--out", t.TempDir(), "--twemproxy", ""}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no such flag: --config") {
		t.Errorf("suite with a failing proxy: %v, want its output in the error", err)
	}
}

func TestPickScenarios(t *testing.T) {
	t.Parallel()
	all := standardSuite()
	for _, sc := range all {
		for _, c := range sc.Conns {
			s := sc.Spec
			s.Conns = c
			if err := s.Validate(); err != nil {
				t.Errorf("standard scenario %s: %v", sc.Name, err)
			}
		}
	}
	if err := memorySpec().Validate(); err != nil {
		t.Errorf("memory check's spec: %v", err)
	}
	if got, memory, _ := pickScenarios(all, ""); len(got) != len(all) || !memory {
		t.Error("no --only should run everything, the memory check too")
	}
	if got, memory, err := pickScenarios(all, "mget-10, sessions"); err != nil || len(got) != 2 || memory {
		t.Errorf("pick two: %v, %v, %v", got, memory, err)
	}
	if got, memory, err := pickScenarios(all, "memory"); err != nil || len(got) != 0 || !memory {
		t.Errorf("pick the memory check alone: %v, %v, %v", got, memory, err)
	}
	if _, _, err := pickScenarios(all, "nope"); err == nil || !strings.Contains(err.Error(), "get-hit") || !strings.Contains(err.Error(), "memory") {
		t.Errorf("unknown scenario: %v, want an error listing the names", err)
	}
}

func TestResidentMemory(t *testing.T) {
	t.Parallel()
	status := "Name:\tcacheproxy\nVmPeak:\t  900000 kB\nVmHWM:\t  351216 kB\nVmRSS:\t  340000 kB\nThreads:\t9\n"
	rss, peak, err := residentMemory(strings.NewReader(status))
	if err != nil || rss != 340000<<10 || peak != 351216<<10 {
		t.Fatalf("residentMemory = %d, %d, %v; want %d, %d", rss, peak, err, 340000<<10, 351216<<10)
	}
	for _, bad := range []string{"", "VmRSS:\t12 kB\n", "VmRSS:\tlots kB\nVmHWM:\t1 kB\n", "VmRSS:\t12 MB\nVmHWM:\t1 kB\n"} {
		if _, _, err := residentMemory(strings.NewReader(bad)); err == nil {
			t.Errorf("residentMemory(%q) = nil error", bad)
		}
	}
	// The running test's own status, where the suite reads the proxy's.
	if f, err := os.Open("/proc/self/status"); err == nil {
		defer f.Close()
		if rss, peak, err := residentMemory(f); err != nil || rss <= 0 || peak < rss {
			t.Errorf("own status: %d, %d, %v", rss, peak, err)
		}
	}
}

// A target that runs in some scenarios only (the ceiling server) has a value,
// or a gap, for every category of the summary.
func TestSummaryWithATargetInSomeScenarios(t *testing.T) {
	t.Parallel()
	res := func(name string, ops float64) targetResult {
		return targetResult{Target: name, Median: loadgen.Stats{OpsPerSec: ops, P99: 100}}
	}
	rep := report{Scenarios: []scenarioResult{
		{Name: "hit", Points: []point{{Conns: 50, Targets: []targetResult{res("direct", 100), res("proxy", 90), res(ceilingName, 110)}}}},
		{Name: "pass", Points: []point{{Conns: 50, Targets: []targetResult{res("direct", 100), res("proxy", 70)}}}},
	}}
	f, ok := summaryFigure(rep, "t", rep.Scenarios)
	if !ok {
		t.Fatal("no summary")
	}
	for _, c := range f.Charts {
		if len(c.Series) != 2 {
			t.Fatalf("%s: %d series, want proxy and %s", c.Title, len(c.Series), ceilingName)
		}
		for _, s := range c.Series {
			if len(s.Values) != len(c.Categories) {
				t.Errorf("%s: %s has %d values for %d categories", c.Title, s.Name, len(s.Values), len(c.Categories))
			}
		}
	}
	if v := f.Charts[0].Series[1].Values; len(v) != 2 || v[0] != 1.1 || !math.IsNaN(v[1]) {
		t.Errorf("%s throughput %v, want [1.1 NaN]", ceilingName, v)
	}
}
