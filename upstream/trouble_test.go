package upstream

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/faultnet"
	"github.com/cacheproxy/cacheproxy/internal/redistest"
)

func bridge(t *testing.T, r *redistest.Server) *faultnet.Bridge {
	t.Helper()
	b, err := faultnet.New(r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// connect makes p's first connection. A loaded machine may take longer
// than a short request timeout, which also bounds the handshake; a PING is
// harmless to send again.
func connect(t *testing.T, p *Pool) {
	t.Helper()
	for i := 0; ; i++ {
		var b Batch
		b.Add(cmd("PING"))
		if p.Do(bg, 0, 0, &b); b.Err() == nil {
			return
		} else if i == 20 {
			t.Fatalf("no connection after %d attempts: %v", i+1, b.Err())
		}
		time.Sleep(maxBackoff)
	}
}

// TestRequestTimeoutClosesConnection: a batch not answered within the
// request timeout fails, so do the others on its connection, none is retried,
// and the next batch gets a new connection.
func TestRequestTimeoutClosesConnection(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	br := bridge(t, r)
	const timeout = 500 * time.Millisecond
	p, err := New(Config{Addr: br.Addr(), Conns: 1, RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	connect(t, p)
	var b Batch
	b.Add(cmd("INCR", "n"))
	if p.Do(bg, 0, 0, &b); b.Err() != nil {
		t.Fatal(b.Err())
	}
	br.Blackhole()
	var wg sync.WaitGroup
	errs := make([]error, 5)
	start := time.Now()
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b Batch
			b.Add(cmd("INCR", "n"))
			p.Do(bg, 0, 0, &b)
			errs[i] = b.Err()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	for i, err := range errs {
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("batch %d: err %v, want ErrTimeout", i, err)
		}
	}
	if took < timeout || took > 10*timeout {
		t.Fatalf("batches failed after %v with a %v timeout", took, timeout)
	}
	t.Logf("5 blackholed batches failed after %v", took)
	br.Heal()
	// The blackholed INCRs reach Redis now, on a connection nobody reads:
	// they may have run, never twice.
	b.Reset()
	b.Add(cmd("GET", "n"))
	if p.Do(bg, 0, 0, &b); b.Err() != nil {
		t.Fatalf("after heal: %v", b.Err())
	}
	n := strings.TrimSpace(strings.Split(string(b.Reply(0)), "\r\n")[1])
	if n < "1" || len(n) != 1 || n > "6" {
		t.Fatalf("n = %s after 1 acknowledged and 5 unknown INCRs", n)
	}
}

// TestRequestTimeoutSparesSlowButAnswered: a batch answered within the
// timeout, on a slow link, succeeds; the connection survives idle periods
// longer than the timeout.
func TestRequestTimeoutSparesSlowButAnswered(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	br := bridge(t, r)
	const timeout = time.Second
	p, err := New(Config{Addr: br.Addr(), Conns: 1, RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	br.SetLatency(50*time.Millisecond, 50*time.Millisecond)
	connect(t, p)
	var b Batch
	for i := range 3 {
		time.Sleep(timeout + 100*time.Millisecond)
		b.Reset()
		b.Add(cmd("PING"))
		if p.Do(bg, 0, 0, &b); b.Err() != nil {
			t.Fatalf("round %d: %v", i, b.Err())
		}
	}
	if br.Accepted() != 1 {
		t.Fatalf("%d connections made, want 1", br.Accepted())
	}
}

// TestDedicatedHasNoRequestTimeout: a blocking command on a dedicated
// connection may outlast the request timeout.
func TestDedicatedHasNoRequestTimeout(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p, err := New(Config{Addr: r.Addr(), RequestTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	c, err := p.Dedicated(bg, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b Batch
	b.Add(cmd("BLPOP", "nothing", "0.4"))
	if c.Do(&b); b.Err() != nil {
		t.Fatalf("BLPOP 0.4s with a 100ms request timeout: %v", b.Err())
	}
}

// TestDialBackoff: while Redis is down, dials are spaced out and the batches
// in between fail fast with the last dial's error; once Redis is back, a
// batch succeeds within the longest window.
func TestDialBackoff(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	br := bridge(t, r)
	p, err := New(Config{Addr: br.Addr(), Conns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	br.Cut(true)
	before := br.Accepted()
	deadline := time.Now().Add(time.Second)
	var b Batch
	fails := 0
	for time.Now().Before(deadline) {
		b.Reset()
		b.Add(cmd("PING"))
		p.Do(bg, 0, 0, &b)
		if b.Err() == nil {
			t.Fatal("PING through a cut bridge succeeded")
		}
		fails++
		time.Sleep(time.Millisecond)
	}
	dials := br.Accepted() - before
	// 10, 20, 40, ... 640ms: about 7 dials in a second, not one per batch.
	if dials > 12 || fails < 100 {
		t.Fatalf("%d dials for %d failed batches in 1s", dials, fails)
	}
	t.Logf("1s of a refused upstream: %d batches failed, %d dials", fails, dials)
	br.Heal()
	healed := time.Now()
	for {
		b.Reset()
		b.Add(cmd("PING"))
		if p.Do(bg, 0, 0, &b); b.Err() == nil {
			break
		}
		if time.Since(healed) > 2*maxBackoff {
			t.Fatalf("still failing %v after heal: %v", time.Since(healed), b.Err())
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("served again %v after heal", time.Since(healed))
}

func TestBackoffWindows(t *testing.T) {
	var b backoff
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	boom := errors.New("boom")
	for i, want := range []time.Duration{10, 20, 40, 80, 160, 320, 640, 1000, 1000} {
		started, err := b.allow("a")
		if err != nil {
			t.Fatalf("dial %d held back: %v", i, err)
		}
		b.failed("a", started, boom)
		now = now.Add(want*time.Millisecond - time.Nanosecond)
		if _, err := b.allow("a"); !errors.Is(err, boom) {
			t.Fatalf("dial %d: within the %vms window: %v", i, want, err)
		}
		if _, err := b.allow("b"); err != nil {
			t.Fatalf("another address held back: %v", err)
		}
		now = now.Add(time.Nanosecond)
	}
	// Concurrent failures count once.
	s1, _ := b.allow("a")
	s2, _ := b.allow("a")
	b.failed("a", s1, boom)
	b.failed("a", s2, boom)
	if b.delay != maxBackoff {
		t.Fatalf("delay %v", b.delay)
	}
	b.succeeded("a")
	now = now.Add(time.Millisecond)
	if _, err := b.allow("a"); err != nil {
		t.Fatalf("after success: %v", err)
	}
	b.failed("a", now, boom)
	if b.delay != minBackoff {
		t.Fatalf("delay after a success then a failure: %v", b.delay)
	}
}
