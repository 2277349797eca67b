package main

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
	"time"
)

func bulk(s string) value { return value{kind: '$', str: s} }

var nilBulk = value{kind: '$', null: true}

func TestKeyModel(t *testing.T) {
	t.Parallel()
	now := time.Now()
	k := newKeyModel()
	if err := k.check(nilBulk, now); err != nil {
		t.Fatalf("fresh key read nil: %v", err)
	}
	if err := k.check(bulk("x"), now); err == nil {
		t.Fatal("fresh key read a value nobody wrote")
	}
	k.setAcked("c0:k0:1:01")
	for _, bad := range []value{nilBulk, bulk("c0:k0:2:0"), bulk("c0:k0:1:0"), {kind: ':', n: 1}, {kind: '+', str: "a"}} {
		if err := k.check(bad, now); err == nil {
			t.Errorf("after SET a, %s passed", bad)
		}
	}
	k.setUnknown("c0:k0:2:0123", now)
	for _, ok := range []value{bulk("c0:k0:1:01"), bulk("c0:k0:2:0123")} {
		if err := k.check(ok, now); err != nil {
			t.Errorf("after SET a, SET b of unknown outcome: %s: %v", ok, err)
		}
	}
	if err := k.check(bulk("c0:k0:2:012x"), now); err == nil {
		t.Error("a value with the wrong padding passed")
	}
	if err := k.check(bulk("c0:k0:2:0123"), now.Add(pendingTTL+time.Second)); err == nil {
		t.Error("a SET of unknown outcome was still allowed after pendingTTL")
	}
	if err := k.check(bulk("c0:k0:1:01"), now.Add(pendingTTL+time.Second)); err != nil {
		t.Error(err)
	}
	// More unknown SETs than remembered: none is forgotten while the key
	// is checked, so the key is not checked until the next acknowledged SET.
	for i := range maxPending + 1 {
		k.setUnknown(fmt.Sprintf("c0:k0:%d:0", 100+i), now)
	}
	if err := k.check(bulk("c0:k0:100:0"), now); err != nil {
		t.Error(err)
	}
	k.setAcked("c0:k0:9999:0")
	if err := k.check(bulk("c0:k0:1:01"), now); err == nil {
		t.Error("after an acknowledged SET a value never written since passed")
	}
}

func TestCounterModel(t *testing.T) {
	t.Parallel()
	var c counterModel
	for i, step := range []struct {
		unknownBefore int
		reply         value
		ok            bool
	}{
		{0, value{kind: ':', n: 1}, true},
		{0, value{kind: ':', n: 1}, false},     // did not rise
		{0, value{kind: ':', n: 3}, false},     // skipped one with nothing unknown
		{0, value{kind: '$', str: "2"}, false}, // wrong type
		{0, value{kind: ':', n: 2}, true},
		{2, value{kind: ':', n: 4}, true},  // one of the two unknown counted
		{0, value{kind: ':', n: 6}, true},  // the other one landed late
		{0, value{kind: ':', n: 8}, false}, // none left unknown
		{1, value{kind: ':', n: 7}, true},  // the unknown one did not count (yet)
	} {
		for range step.unknownBefore {
			c.incrUnknown()
		}
		err := c.check(step.reply)
		if (err == nil) != step.ok {
			t.Fatalf("step %d: %s: err %v, want ok=%v", i, step.reply, err, step.ok)
		}
	}
}

func TestDirectModel(t *testing.T) {
	t.Parallel()
	d := newDirectModel(time.Second)
	t0 := time.Now()
	n1, v1 := d.issue("k")
	d.acked("k", n1, t0)
	_, v2 := d.issue("k") // never acknowledged
	n3, v3 := d.issue("k")
	d.acked("k", n3, t0.Add(2*time.Second))
	for _, c := range []struct {
		v       value
		started time.Time
		ok      bool
	}{
		{bulk(v1), t0.Add(500 * time.Millisecond), true},
		{bulk(v1), t0.Add(2 * time.Second), true}, // d:3 acknowledged just now
		{bulk(v2), t0.Add(2 * time.Second), true},
		{bulk(v1), t0.Add(3500 * time.Millisecond), false}, // d:3 acknowledged over a second before
		{bulk(v2), t0.Add(3500 * time.Millisecond), false},
		{bulk(v3), t0.Add(time.Second), true},
		{bulk("d:4"), t0, false}, // never written
		{bulk("zzz"), t0, false},
		{nilBulk, t0, false},
		{value{kind: ':', n: 1}, t0, false},
	} {
		if err := d.check("k", c.v, c.started); (err == nil) != c.ok {
			t.Errorf("%s read at +%v: err %v, want ok=%v", c.v, c.started.Sub(t0), err, c.ok)
		}
	}
}

func TestErrorIsWrong(t *testing.T) {
	t.Parallel()
	for msg, want := range map[string]bool{
		"WRONGTYPE Operation against a key holding the wrong kind of value": true,
		"ERR unknown command 'FOO'":                                         true,
		"ERR value is not an integer or out of range":                       true,
		"ERR upstream: i/o timeout":                                         false,
		"LOADING Redis is loading the dataset":                              false,
	} {
		if got := errorIsWrong(msg); got != want {
			t.Errorf("%q: %v, want %v", msg, got, want)
		}
	}
}

func TestReadValue(t *testing.T) {
	t.Parallel()
	in := "+OK\r\n-ERR x\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*3\r\n$1\r\na\r\n$-1\r\n:7\r\n*-1\r\n"
	br := bufio.NewReader(strings.NewReader(in))
	var got []string
	for range 7 {
		v, err := readValue(br, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v.String())
	}
	want := `+"OK" -"ERR x" :42 $"abc" (nil) [$"a" (nil) :7] (nil)`
	if strings.Join(got, " ") != want {
		t.Fatalf("got %s\nwant %s", strings.Join(got, " "), want)
	}
	for _, bad := range []string{"?x\r\n", "$3\r\nabcd\r\n", ":x\r\n", "+OK\n"} {
		if _, err := readValue(bufio.NewReader(strings.NewReader(bad)), 0); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestFaultSchedule(t *testing.T) {
	t.Parallel()
	plan := faultSchedule(30*time.Minute, time.Minute, 8*time.Second)
	if len(plan) != 29 {
		t.Fatalf("%d faults in 30m, want 29", len(plan))
	}
	for i, f := range plan {
		if f.Kind != faultKinds[i%len(faultKinds)] || f.Start != time.Duration(i+1)*time.Minute {
			t.Fatalf("fault %d: %+v", i, f)
		}
		if d := f.End - f.Start; d != 8*time.Second && !(f.Kind == "blackhole" && d == 5*time.Second) {
			t.Fatalf("fault %d lasts %v", i, d)
		}
	}
	if !inFault(plan, 61*time.Second) || !inFault(plan, 75*time.Second) || inFault(plan, 90*time.Second) {
		t.Error("inFault")
	}
	if n := len(faultSchedule(2*time.Minute, time.Minute, 8*time.Second)); n != 1 {
		t.Errorf("%d faults in 2m, want 1", n)
	}
}

func TestFlatness(t *testing.T) {
	t.Parallel()
	var samples []soakSample
	for i := 0; i <= 120; i++ { // 10 minutes every 5s
		rss := int64(100 << 20)
		g := 30
		if i > 110 {
			rss, g = 130<<20, 34 // the end: RSS +30%, goroutines +4
		}
		samples = append(samples, soakSample{TS: float64(i * 5), RSSBytes: rss, Goroutines: g, FDs: 20})
	}
	res := flatness(samples, 5*time.Minute, 10*time.Minute, 0.2)
	leaks := map[string]bool{}
	for _, f := range res {
		leaks[f.Metric] = f.Leak
	}
	if !leaks["RSS"] || leaks["goroutines"] || leaks["open files"] {
		t.Fatalf("verdicts %v; %+v", leaks, res)
	}
}

func TestParseGauges(t *testing.T) {
	t.Parallel()
	in := "# HELP go_goroutines x\ngo_goroutines 42\ngo_goroutines_other 1\nprocess_open_fds 17\n"
	g, err := parseGauges(strings.NewReader(in), "go_goroutines", "process_open_fds")
	if err != nil || g["go_goroutines"] != 42 || g["process_open_fds"] != 17 {
		t.Fatalf("%v %v", g, err)
	}
}
