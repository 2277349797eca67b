package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	hitsMetric   = "cacheproxy_l1_hits_total"
	missesMetric = "cacheproxy_l1_misses_total"
)

// cacheCounters is the proxy's L1 lookups so far, summed over labels.
type cacheCounters struct {
	hits, misses float64
}

// hitRatio over the interval from c to later; nil when nothing was looked up.
func (c cacheCounters) hitRatio(later cacheCounters) *float64 {
	h, m := later.hits-c.hits, later.misses-c.misses
	if h < 0 || m < 0 || h+m == 0 {
		return nil // no lookups, or the counters were reset by a restart
	}
	r := h / (h + m)
	return &r
}

var metricsClient = &http.Client{Timeout: 3 * time.Second}

// scrapeCounters reads the L1 hit and miss counters from a Prometheus text
// endpoint.
func scrapeCounters(ctx context.Context, url string) (cacheCounters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return cacheCounters{}, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return cacheCounters{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cacheCounters{}, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	c, err := parseCounters(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return cacheCounters{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	return c, nil
}

// parseCounters sums the samples of the hit and miss counters in the
// Prometheus text format, whatever their labels.
func parseCounters(r io.Reader) (cacheCounters, error) {
	var c cacheCounters
	var seenHits, seenMisses bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := splitName(line)
		if name != hitsMetric && name != missesMetric {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return c, fmt.Errorf("sample without a value: %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(v) {
			return c, fmt.Errorf("sample %q: bad value", line)
		}
		if name == hitsMetric {
			c.hits += v
			seenHits = true
		} else {
			c.misses += v
			seenMisses = true
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if !seenHits || !seenMisses {
		return c, fmt.Errorf("no %s and %s samples", hitsMetric, missesMetric)
	}
	return c, nil
}

// splitName returns a sample line's metric name and what follows its labels.
// Label values are quoted and may hold spaces, braces and escaped quotes.
func splitName(line string) (name, rest string) {
	i := strings.IndexAny(line, "{ \t")
	if i < 0 {
		return line, ""
	}
	if line[i] != '{' {
		return line[:i], line[i:]
	}
	inQuote := false
	for j := i + 1; j < len(line); j++ {
		switch {
		case inQuote && line[j] == '\\':
			j++
		case line[j] == '"':
			inQuote = !inQuote
		case !inQuote && line[j] == '}':
			return line[:i], line[j+1:]
		}
	}
	return line[:i], ""
}
