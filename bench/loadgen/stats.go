package loadgen

import (
	"slices"
)

// Stats is what one run measured, or, from Median, what several runs did.
// Latencies are in microseconds, from a batch's write to each of its replies.
type Stats struct {
	Ops       int64   `json:"ops"`    // replies read (one per command; an MGET is one)
	Errors    int64   `json:"errors"` // error replies
	Nils      int64   `json:"nils"`   // nil bulks and arrays at any depth: missing keys
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50       float64 `json:"p50_us"`
	P90       float64 `json:"p90_us"`
	P99       float64 `json:"p99_us"`
	P999      float64 `json:"p999_us"`
	Max       float64 `json:"max_us"`
	// HitRatio is the target's own cache hit ratio over the run, when the
	// caller could read it.
	HitRatio   *float64 `json:"hit_ratio,omitempty"`
	FirstError string   `json:"first_error,omitempty"`
}

// Median summarises rounds: rates, latencies and the hit ratio are the median
// of the rounds' values (each taken separately), counts and seconds are sums so
// that no error goes unreported, and FirstError is the first one seen.
func Median(rounds []Stats) Stats {
	var m Stats
	if len(rounds) == 0 {
		return m
	}
	pick := func(f func(Stats) float64) float64 {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r)
		}
		return median(v)
	}
	m.OpsPerSec = pick(func(s Stats) float64 { return s.OpsPerSec })
	m.P50 = pick(func(s Stats) float64 { return s.P50 })
	m.P90 = pick(func(s Stats) float64 { return s.P90 })
	m.P99 = pick(func(s Stats) float64 { return s.P99 })
	m.P999 = pick(func(s Stats) float64 { return s.P999 })
	m.Max = pick(func(s Stats) float64 { return s.Max })
	var hits []float64
	for _, r := range rounds {
		m.Ops += r.Ops
		m.Errors += r.Errors
		m.Nils += r.Nils
		m.Seconds += r.Seconds
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
		if r.HitRatio != nil {
			hits = append(hits, *r.HitRatio)
		}
	}
	if len(hits) > 0 {
		h := median(hits)
		m.HitRatio = &h
	}
	return m
}

// median of v, the mean of the middle two for an even count; it sorts v.
func median(v []float64) float64 {
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
