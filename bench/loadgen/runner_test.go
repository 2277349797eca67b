package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

func TestEveryWorkloadRunsCleanAgainstRedis(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	base := Spec{Keys: 200, Prefix: "t:", Dist: Zipf, ZipfS: 1.01, ValueMin: 16, ValueMax: 64,
		ReadRatio: 0.9, MGetKeys: 10, HashFields: 4, TTL: 60, Pipeline: 4, Conns: 3}
	for _, w := range Workloads {
		s := base
		s.Workload = w
		if err := Preload(ctx, srv.Addr(), s); err != nil {
			t.Fatalf("%s: %v", w, err)
		}
		r, err := NewRunner(srv.Addr(), s)
		if err != nil {
			t.Fatal(err)
		}
		st, err := r.Run(ctx, 150*time.Millisecond, 1)
		if err != nil {
			t.Fatalf("%s: %v", w, err)
		}
		if st.Ops == 0 || st.Ops%int64(s.Pipeline) != 0 || st.Ops != r.Done() {
			t.Errorf("%s: ops %d (Done %d), want a positive multiple of the pipeline depth", w, st.Ops, r.Done())
		}
		if st.Errors != 0 || st.Nils != 0 {
			t.Errorf("%s: %d error replies (%q), %d nils after preload", w, st.Errors, st.FirstError, st.Nils)
		}
		if !(st.P50 > 0 && st.P50 <= st.P90 && st.P90 <= st.P99 && st.P99 <= st.P999 && st.P999 <= st.Max) {
			t.Errorf("%s: percentiles out of order: %+v", w, st)
		}
		if st.Seconds < 0.15 || st.OpsPerSec <= 0 {
			t.Errorf("%s: ran %.3fs at %.0f ops/s", w, st.Seconds, st.OpsPerSec)
		}
	}
	// Preload wrote what the workloads read, with the types they expect.
	c := srv.Client(0)
	if n, err := c.HLen(ctx, "t:h:0").Result(); err != nil || n != 4 {
		t.Errorf("HLEN t:h:0 = %d, %v; want 4", n, err)
	}
	if ttl, err := c.TTL(ctx, "t:s:1").Result(); err != nil || ttl <= 0 {
		t.Errorf("session key TTL = %v, %v; want set by the session preload", ttl, err)
	}
}

func TestRunCountsErrorRepliesAndNils(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	// GET on keys that do not exist: every reply is a nil.
	s := Spec{Workload: Get, Keys: 10, Prefix: "missing:", Dist: Uniform, Pipeline: 2, Conns: 1}
	r, _ := NewRunner(srv.Addr(), s)
	st, err := r.Run(ctx, 50*time.Millisecond, 1)
	if err != nil || st.Nils != st.Ops || st.Ops == 0 {
		t.Errorf("GET of missing keys: %+v, %v; want every reply a nil", st, err)
	}
	// HGETALL on string keys: every reply is a WRONGTYPE error.
	if err := srv.Client(0).Set(ctx, "w:h:0", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s = Spec{Workload: HGetAll, Keys: 1, Prefix: "w:", Dist: Uniform, HashFields: 1, Pipeline: 1, Conns: 1}
	r, _ = NewRunner(srv.Addr(), s)
	st, err = r.Run(ctx, 50*time.Millisecond, 1)
	if err != nil || st.Errors != st.Ops || st.Ops == 0 || !strings.HasPrefix(st.FirstError, "WRONGTYPE") {
		t.Errorf("HGETALL of a string: %+v, %v; want every reply a WRONGTYPE error", st, err)
	}
}

func TestRunStopsOnCancelAndFailsOnDeadTarget(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	s := Spec{Workload: Get, Keys: 10, Dist: Uniform, Pipeline: 1, Conns: 2}
	r, _ := NewRunner(srv.Addr(), s)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if _, err := r.Run(ctx, time.Minute, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled run returned %v, want context.Canceled", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("cancelled run took %v to return", el)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	r, _ = NewRunner(addr, s)
	if _, err := r.Run(context.Background(), time.Second, 1); err == nil {
		t.Error("run against a closed port succeeded")
	}
	if err := Preload(context.Background(), addr, s); err == nil {
		t.Error("preload against a closed port succeeded")
	}
}

func TestRunFailsWhenTheServerDropsConnections(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	s := Spec{Workload: Get, Keys: 10, Dist: Uniform, Pipeline: 1, Conns: 2}
	r, _ := NewRunner(srv.Addr(), s)
	time.AfterFunc(100*time.Millisecond, srv.Stop)
	if _, err := r.Run(context.Background(), 20*time.Second, 1); err == nil {
		t.Error("run survived its server stopping")
	}
}

// A runner that continues another's Seq position reads none of the keys the
// other read: a scenario measured at several connection counts keeps every
// read through a cache a first read.
func TestContinueKeepsSeqKeysUnread(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	// SETs of keys in turn: the database counts the distinct keys written.
	s := Spec{Workload: Set, Keys: 1_000_000, Prefix: "seq:", Dist: Seq, ValueMin: 8, ValueMax: 8, Pipeline: 1, Conns: 1}
	r1, err := NewRunner(srv.Addr(), s)
	if err != nil {
		t.Fatal(err)
	}
	st1, err := r1.Run(ctx, 100*time.Millisecond, 1)
	if err != nil {
		t.Fatal(err)
	}
	s.Conns = 2
	r2, err := NewRunner(srv.Addr(), s)
	if err != nil {
		t.Fatal(err)
	}
	r2.Continue(r1)
	st2, err := r2.Run(ctx, 100*time.Millisecond, 2)
	if err != nil {
		t.Fatal(err)
	}
	n, err := srv.Client(0).DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != st1.Ops+st2.Ops {
		t.Fatalf("%d keys after %d and %d SETs of keys in turn, want every key a new one", n, st1.Ops, st2.Ops)
	}
}

// Warm reads each key once, with the workload's own read command.
func TestWarmReadsEveryKeyOnce(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	c := srv.Client(0)
	for _, w := range []string{Get, MGet, HGetAll, HGet} {
		s := Spec{Workload: w, Keys: 300, Prefix: "warm:", Dist: Zipf, ZipfS: 1.01, ValueMin: 8, ValueMax: 8,
			MGetKeys: 10, HashFields: 2, Pipeline: 1, Conns: 1}
		if err := Preload(ctx, srv.Addr(), s); err != nil {
			t.Fatal(err)
		}
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := Warm(ctx, srv.Addr(), s); err != nil {
			t.Fatalf("%s: %v", w, err)
		}
		info, err := c.Info(ctx, "stats", "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		cmd := map[string]string{Get: "get", MGet: "mget", HGetAll: "hgetall", HGet: "hget"}[w]
		reads := 300
		if w == HGet {
			reads = 600 // each of the 2 fields
		}
		for _, want := range []string{fmt.Sprintf("keyspace_hits:%d\r", reads), "keyspace_misses:0\r", fmt.Sprintf("cmdstat_%s:calls=%d,", cmd, reads)} {
			if !strings.Contains(info, want) {
				t.Errorf("%s: INFO lacks %q:\n%s", w, want, info)
			}
		}
	}
}

func TestPreloadKey(t *testing.T) {
	t.Parallel()
	get := Spec{Workload: Get, Keys: 100, Prefix: "p:", Dist: Zipf, ZipfS: 1.01, ValueMin: 100, ValueMax: 100, Pipeline: 1}
	same := []Spec{get}
	for _, w := range []string{Set, MGet, Mixed} {
		s := get
		s.Workload, s.Pipeline, s.Dist, s.MGetKeys = w, 16, Uniform, 10
		same = append(same, s)
	}
	for _, s := range same {
		if PreloadKey(s) != PreloadKey(get) {
			t.Errorf("%s writes what %s does, yet %q != %q", s, get, PreloadKey(s), PreloadKey(get))
		}
	}
	for _, edit := range []func(*Spec){
		func(s *Spec) { s.Keys = 101 },
		func(s *Spec) { s.Prefix = "q:" },
		func(s *Spec) { s.ValueMax = 200 },
		func(s *Spec) { s.Workload, s.TTL = Session, 60 },
		func(s *Spec) { s.Workload, s.HashFields = HGetAll, 4 },
		func(s *Spec) { s.Workload = Incr },
	} {
		s := get
		edit(&s)
		if PreloadKey(s) == PreloadKey(get) {
			t.Errorf("%s and %s share the preload key %q", s, get, PreloadKey(s))
		}
	}
}
