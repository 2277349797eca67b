package loadgen

import (
	"strings"
	"testing"
)

func TestMedianTakesEachMetricsMedianAndSumsCounts(t *testing.T) {
	t.Parallel()
	h := func(v float64) *float64 { return &v }
	rounds := []Stats{
		{Ops: 10, Errors: 1, Nils: 2, Seconds: 1, OpsPerSec: 300, P50: 5, P90: 9, P99: 40, P999: 90, Max: 100, HitRatio: h(0.5)},
		{Ops: 20, Seconds: 1, OpsPerSec: 100, P50: 7, P90: 8, P99: 20, P999: 80, Max: 900, FirstError: "ERR one"},
		{Ops: 30, Errors: 2, Seconds: 1, OpsPerSec: 200, P50: 6, P90: 10, P99: 30, P999: 70, Max: 300, HitRatio: h(0.9), FirstError: "ERR two"},
	}
	m := Median(rounds)
	want := Stats{Ops: 60, Errors: 3, Nils: 2, Seconds: 3, OpsPerSec: 200, P50: 6, P90: 9, P99: 30, P999: 80, Max: 300, FirstError: "ERR one"}
	got := m
	got.HitRatio = nil
	if got != want {
		t.Errorf("Median = %+v\nwant      %+v", got, want)
	}
	// Two rounds report a hit ratio: the median of an even count is the mean of the middle two.
	if m.HitRatio == nil || *m.HitRatio != 0.7 {
		t.Errorf("hit ratio = %v, want 0.7", m.HitRatio)
	}
	if rounds[0].OpsPerSec != 300 {
		t.Error("Median reordered its input")
	}
}

func TestMedianOfEvenAndSingleCounts(t *testing.T) {
	t.Parallel()
	if m := Median([]Stats{{P99: 4}, {P99: 1}, {P99: 3}, {P99: 100}}); m.P99 != 3.5 {
		t.Errorf("median of 1, 3, 4, 100 = %v, want 3.5", m.P99)
	}
	if m := Median([]Stats{{OpsPerSec: 7}}); m.OpsPerSec != 7 || m.HitRatio != nil {
		t.Errorf("median of one round = %+v", m)
	}
	if m := Median(nil); m != (Stats{}) {
		t.Errorf("median of no rounds = %+v, want zero", m)
	}
}

func TestSpecValidateNamesTheBadField(t *testing.T) {
	t.Parallel()
	good := Spec{Workload: Get, Keys: 10, Dist: Zipf, ZipfS: 1.01, ValueMin: 1, ValueMax: 1, Pipeline: 1, Conns: 1}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec rejected: %v", err)
	}
	for _, tc := range []struct {
		edit func(*Spec)
		want string
	}{
		{func(s *Spec) { s.Workload = "scan" }, "workload"},
		{func(s *Spec) { s.Keys = 0 }, "keys"},
		{func(s *Spec) { s.ZipfS = 1 }, "zipf"},
		{func(s *Spec) { s.Dist = "gauss" }, "distribution"},
		{func(s *Spec) { s.ValueMin = 5 }, "value size"},
		{func(s *Spec) { s.Workload = Mixed; s.ReadRatio = 1.5 }, "read ratio"},
		{func(s *Spec) { s.Workload = MGet }, "mget keys"},
		{func(s *Spec) { s.Workload = HGetAll }, "hash fields"},
		{func(s *Spec) { s.Workload = Session; s.ReadRatio = 0.5 }, "ttl"},
		{func(s *Spec) { s.Pipeline = MaxPipeline + 1 }, "pipeline"},
		{func(s *Spec) { s.Conns = 0 }, "conns"},
	} {
		s := good
		tc.edit(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %q", s, err, tc.want)
		}
	}
}
