package loadgen

import (
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

func TestZipfPickerIsSkewedAndInRange(t *testing.T) {
	t.Parallel()
	const keys, draws = 1000, 200_000
	s := Spec{Keys: keys, Dist: Zipf, ZipfS: 1.01}
	p := newKeyPicker(s, rand.New(rand.NewPCG(7, 0)), nil)
	counts := make([]int, keys)
	for range draws {
		i := p.pick()
		if i >= keys {
			t.Fatalf("picked %d, outside [0, %d)", i, keys)
		}
		counts[i]++
	}
	// With s close to 1, rank k is drawn about 1/(k+1)^s as often as rank 0.
	if !(counts[0] > 2*counts[9] && counts[9] > 2*counts[99] && counts[99] > 0) {
		t.Errorf("counts of ranks 0, 9, 99 = %d, %d, %d: not Zipf-skewed", counts[0], counts[9], counts[99])
	}
	top10 := 0
	for _, c := range counts[:10] {
		top10 += c
	}
	if share := float64(top10) / draws; share < 0.3 || share > 0.55 {
		t.Errorf("the 10 hottest of %d keys got %.2f of draws, want about 0.4", keys, share)
	}
}

func TestPickerIsDeterministicPerSeed(t *testing.T) {
	t.Parallel()
	for _, dist := range []string{Zipf, Uniform} {
		s := Spec{Keys: 1 << 20, Dist: dist, ZipfS: 1.2}
		draw := func(seed uint64) []uint64 {
			p := newKeyPicker(s, rand.New(rand.NewPCG(seed, 1)), nil)
			out := make([]uint64, 50)
			for i := range out {
				out[i] = p.pick()
			}
			return out
		}
		a, b, c := draw(1), draw(1), draw(2)
		if !slices.Equal(a, b) {
			t.Errorf("%s: same seed gave different keys", dist)
		}
		if slices.Equal(a, c) {
			t.Errorf("%s: different seeds gave the same keys", dist)
		}
	}
}

func TestUniformPickerCoversEveryKey(t *testing.T) {
	t.Parallel()
	p := newKeyPicker(Spec{Keys: 50, Dist: Uniform}, rand.New(rand.NewPCG(3, 3)), nil)
	seen := map[uint64]bool{}
	for range 5000 {
		seen[p.pick()] = true
	}
	if len(seen) != 50 {
		t.Errorf("5000 uniform draws over 50 keys hit %d distinct keys", len(seen))
	}
}

func TestSeqPickersNeverRepeatUntilWrap(t *testing.T) {
	t.Parallel()
	const keys = 10 * seqBlock
	var shared atomic.Uint64
	s := Spec{Keys: keys, Dist: Seq}
	a := newKeyPicker(s, nil, &shared)
	b := newKeyPicker(s, nil, &shared)
	seen := make(map[uint64]bool, keys)
	for i := 0; i < keys/2; i++ {
		for _, p := range []*keyPicker{a, b} {
			k := p.pick()
			if seen[k] {
				t.Fatalf("key %d drawn twice before the sequence wrapped", k)
			}
			seen[k] = true
		}
	}
	// A new picker on the same sequence, as in the next round, carries on.
	c := newKeyPicker(s, nil, &shared)
	if k := c.pick(); k != 0 {
		t.Errorf("after all %d keys the sequence continued at %d, want a wrap to 0", keys, k)
	}
}

func TestCommandsAreRESPAndDoNotAllocate(t *testing.T) {
	// Not parallel: AllocsPerRun refuses to run beside parallel tests.
	values := randomValue(rand.New(rand.NewPCG(1, 1)), 4096)
	for _, tc := range []struct {
		spec Spec
		want string // the first command, for the deterministic workloads
	}{
		{Spec{Workload: Get, Keys: 1, Prefix: "p:", Dist: Uniform}, "*2\r\n$3\r\nGET\r\n$5\r\np:s:0\r\n"},
		{Spec{Workload: Incr, Keys: 1, Prefix: "p:", Dist: Uniform}, "*2\r\n$4\r\nINCR\r\n$5\r\np:n:0\r\n"},
		{Spec{Workload: HGetAll, Keys: 1, Prefix: "", Dist: Uniform, HashFields: 3}, "*2\r\n$7\r\nHGETALL\r\n$3\r\nh:0\r\n"},
		{Spec{Workload: HGet, Keys: 1, Prefix: "", Dist: Uniform, HashFields: 1}, "*3\r\n$4\r\nHGET\r\n$3\r\nh:0\r\n$2\r\nf0\r\n"},
		{Spec{Workload: Set, Keys: 1, Prefix: "", Dist: Uniform, ValueMin: 3, ValueMax: 3}, "*3\r\n$3\r\nSET\r\n$3\r\ns:0\r\n$3\r\n" + string(values[:3]) + "\r\n"},
		{Spec{Workload: MGet, Keys: 1, Prefix: "", Dist: Uniform, MGetKeys: 2}, "*3\r\n$4\r\nMGET\r\n$3\r\ns:0\r\n$3\r\ns:0\r\n"},
		{Spec{Workload: Session, Keys: 1, Prefix: "", Dist: Uniform, ValueMin: 2, ValueMax: 2, TTL: 60, ReadRatio: 0}, "*5\r\n$3\r\nSET\r\n$3\r\ns:0\r\n$2\r\n" + string(values[:2]) + "\r\n$2\r\nEX\r\n$2\r\n60\r\n"},
		{Spec{Workload: Mixed, Keys: 100, Prefix: "x", Dist: Zipf, ZipfS: 1.1, ValueMin: 1024, ValueMax: 4096, ReadRatio: 0.5}, ""},
	} {
		rng := rand.New(rand.NewPCG(1, 1))
		c := newCommander(tc.spec, rng, newKeyPicker(tc.spec, rng, nil), values)
		first := string(c.appendCommand(nil))
		if tc.want != "" && first != tc.want {
			t.Errorf("%s: command %q, want %q", tc.spec.Workload, first, tc.want)
		}
		// Every command must parse back as a RESP array of bulk strings.
		var stream []byte
		for range 100 {
			stream = c.appendCommand(stream)
		}
		rr := newReplyReader(strings.NewReader(string(stream)))
		for i := range 100 {
			if _, err := rr.next(); err != nil {
				t.Fatalf("%s: command %d is not RESP: %v", tc.spec.Workload, i, err)
			}
		}
		buf := make([]byte, 0, 1<<16)
		if allocs := testing.AllocsPerRun(100, func() { buf = c.appendCommand(buf[:0]) }); allocs != 0 {
			t.Errorf("%s: appendCommand allocated %v times, want 0", tc.spec.Workload, allocs)
		}
	}
}
