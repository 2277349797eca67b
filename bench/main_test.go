package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

// countingMetrics serves proxy-style counters that grow by 3 hits and 1 miss
// per scrape, so that every interval between two scrapes has a 0.75 hit ratio.
func countingMetrics() http.Handler {
	var scrapes atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := scrapes.Add(1)
		fmt.Fprintf(w, "# TYPE cacheproxy_l1_hits_total counter\n")
		fmt.Fprintf(w, "cacheproxy_l1_hits_total{db=\"0\"} %d\ncacheproxy_l1_hits_total{db=\"1\"} %d\n", 2*n, n)
		fmt.Fprintf(w, "cacheproxy_l1_misses_total{db=\"0\"} %d\ncacheproxy_l1_misses_total_other 99\n", n)
	})
}

func TestRunEndToEndAgainstRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	metrics := httptest.NewServer(countingMetrics())
	defer metrics.Close()
	dir := t.TempDir()
	jsonPath, svgPath := filepath.Join(dir, "out.json"), filepath.Join(dir, "out.svg")
	var stdout, stderr bytes.Buffer
	err := cli(context.Background(), []string{
		"--target", "direct=" + srv.Addr(), "--metrics", "direct=" + metrics.URL + "/metrics",
		"--workload", "get", "--keys", "500", "--key-prefix", "smoke:", "--conns", "4", "--pipeline", "2",
		"--duration", "1s", "--rounds", "1", "--warmup", "0", "--json", jsonPath, "--svg", svgPath,
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr is not a terminal, yet got %q", stderr.String())
	}
	for _, want := range []string{"share this machine's", "== get", "p99.9 µs", "direct", "75.0%"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table has no %q:\n%s", want, stdout.String())
		}
	}

	var rep report
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("JSON output: %v", err)
	}
	if len(rep.Scenarios) != 1 || len(rep.Scenarios[0].Points) != 1 || len(rep.Scenarios[0].Points[0].Targets) != 1 {
		t.Fatalf("JSON holds %+v, want one scenario, point and target", rep.Scenarios)
	}
	m := rep.Scenarios[0].Points[0].Targets[0].Median
	if m.Ops == 0 || m.Errors != 0 || m.Nils != 0 || m.Seconds < 1 || m.P50 <= 0 || m.P99 < m.P50 {
		t.Errorf("median %+v: want a clean, non-empty 1 s run over preloaded keys", m)
	}
	if m.HitRatio == nil || *m.HitRatio != 0.75 {
		t.Errorf("hit ratio %v, want 0.75 from the counters' deltas", m.HitRatio)
	}
	if rep.Machine.CPUs < 1 || rep.Machine.Go == "" {
		t.Errorf("machine %+v", rep.Machine)
	}
	wellFormedSVG(t, svgPath, "commands per second")
}

func TestRunRefusesRemoteTargets(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--target", "far=10.1.2.3:6379"},
		{"--target", "far=example.com:6379"},
		{"--target", "near=127.0.0.1:1", "--metrics", "near=http://192.168.1.1:9180/metrics"},
	} {
		err := cli(context.Background(), args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--allow-remote") {
			t.Errorf("%v: %v, want a refusal naming --allow-remote", args, err)
		}
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{},
		{"--target", "a=127.0.0.1:1", "--workload", "scan"},
		{"--target", "a=127.0.0.1:1", "--conns", "0"},
		{"--target", "a=127.0.0.1:1", "--conns", "1,x"},
		{"--target", "a=127.0.0.1:1", "--value-size", "4k-1k"},
		{"--target", "a=127.0.0.1:1", "--rounds", "0"},
		{"--target", "a=127.0.0.1:1", "--target", "a=127.0.0.1:2"},
		{"--target", "a=127.0.0.1:1", "--metrics", "b=http://127.0.0.1:2/metrics"},
		{"--target", "a=127.0.0.1:1", "stray"},
	} {
		if err := cli(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestTargetsAndSizes(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{"127.0.0.1": true, "127.9.9.9": true, "::1": true, "localhost": true,
		"LOCALHOST": true, "10.0.0.1": false, "0.0.0.0": false, "::": false, "redis.internal": false} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v", host, got)
		}
	}
	var addrs namedValues
	for _, v := range []string{"proxy=127.0.0.1:6380", "127.0.0.1:6379", "direct=[::1]:6379"} {
		if err := addrs.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	ts, err := buildTargets(addrs, namedValues{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if ts[1].Name != "127.0.0.1:6379" || preloadTarget(ts).Name != "direct" {
		t.Errorf("targets %+v: a bare address names itself, and direct is preloaded", ts)
	}
	if preloadTarget(ts[:2]).Name != "proxy" {
		t.Error("without a direct target the first is preloaded")
	}
	for in, want := range map[string][2]int{"100": {100, 100}, "1k-4k": {1024, 4096}, "2KiB": {2048, 2048}, "0-1m": {0, 1 << 20}} {
		lo, hi, err := parseSizeRange(in)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("parseSizeRange(%q) = %d, %d, %v", in, lo, hi, err)
		}
	}
	for _, in := range []string{"", "x", "-1", "1k-", "17m"} {
		if _, _, err := parseSizeRange(in); err == nil {
			t.Errorf("parseSizeRange(%q) accepted", in)
		}
	}
}

func TestParseCounters(t *testing.T) {
	t.Parallel()
	text := `# HELP cacheproxy_l1_hits_total Hits.
# TYPE cacheproxy_l1_hits_total counter
cacheproxy_l1_hits_total{db="0",policy="a b}c"} 10
cacheproxy_l1_hits_total{db="1",policy="q\"}"} 5 1700000000000
cacheproxy_l1_hits_total_extra 1000
cacheproxy_l1_misses_total 2.5e1

other_metric{x="cacheproxy_l1_hits_total"} 7
`
	c, err := parseCounters(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if c.hits != 15 || c.misses != 25 {
		t.Errorf("parsed %+v, want 15 hits and 25 misses", c)
	}
	if _, err := parseCounters(strings.NewReader("cacheproxy_l1_hits_total 1\n")); err == nil {
		t.Error("no misses counter accepted")
	}
	if _, err := parseCounters(strings.NewReader("cacheproxy_l1_hits_total x\ncacheproxy_l1_misses_total 1\n")); err == nil {
		t.Error("a bad value accepted")
	}
	before := cacheCounters{hits: 10, misses: 10}
	if r := before.hitRatio(cacheCounters{hits: 19, misses: 11}); r == nil || *r != 0.9 {
		t.Errorf("hit ratio of +9 hits +1 miss = %v", r)
	}
	if r := before.hitRatio(before); r != nil {
		t.Errorf("no lookups gave hit ratio %v, want none", *r)
	}
	if r := before.hitRatio(cacheCounters{hits: 1, misses: 1}); r != nil {
		t.Errorf("counters that went backwards gave hit ratio %v, want none", *r)
	}
}

func TestProgressLine(t *testing.T) {
	t.Parallel()
	if newProgress(&bytes.Buffer{}, false) != nil {
		t.Error("progress shown on a writer that is not a terminal")
	}
	var buf syncbuf.Buffer
	p := newProgress(&buf, true)
	var n atomic.Int64
	n.Store(1000)
	stop := p.track("label", 1, n.Load)
	// Stop only after at least one update was drawn; bounded by the test timeout.
	for !strings.Contains(buf.String(), "label") {
		time.Sleep(progressEvery / 5)
	}
	stop()
	out := buf.String()
	if !strings.HasPrefix(out, "\r") || !strings.HasSuffix(out, "\r") || !strings.Contains(out, "ops/s") {
		t.Errorf("progress output %q: want carriage-return lines ending cleared", out)
	}
}

func wellFormedSVG(t *testing.T, path, text string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed: %v", path, err)
		}
	}
	if !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte(text)) {
		t.Errorf("%s lacks the chart", path)
	}
}
