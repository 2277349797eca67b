package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

const (
	dialTimeout = 5 * time.Second
	// replyGrace is how long the last batch of a run may take after the
	// run's end before the run fails.
	replyGrace = 10 * time.Second
	// maxLatency caps what a histogram records; slower replies count as this.
	maxLatency = int64(30 * time.Second)
)

// Runner drives one target with one workload. Run it once per round; it keeps
// its histograms and its Seq position between runs. A Runner runs one Run at a
// time.
type Runner struct {
	addr   string
	spec   Spec
	values []byte
	seq    atomic.Uint64
	hists  []*hdrhistogram.Histogram // one per connection, reset per run
	done   atomic.Int64              // replies read so far in the current run
}

// NewRunner validates the spec and prepares a runner for the server at addr
// (host:port). It does not connect.
func NewRunner(addr string, s Spec) (*Runner, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	r := &Runner{addr: addr, spec: s, values: randomValue(rand.New(rand.NewPCG(1, 2)), s.ValueMax)}
	r.hists = make([]*hdrhistogram.Histogram, s.Conns)
	for i := range r.hists {
		r.hists[i] = hdrhistogram.New(1, maxLatency, 3)
	}
	return r, nil
}

// Continue starts r's Seq position where prev's is now, so that a scenario
// measured at several connection counts, a runner for each, still reads every
// key once through a cache.
func (r *Runner) Continue(prev *Runner) { r.seq.Store(prev.seq.Load()) }

// Done is the number of replies read so far in the current run; it is safe to
// call while Run runs, for progress reports.
func (r *Runner) Done() int64 { return r.done.Load() }

// Run opens Spec.Conns connections, drives them for d and closes them. Every
// target given the same seed sees the same sequence of commands. It fails on
// the first connection or protocol error; error replies are counted, not
// failures.
func (r *Runner) Run(ctx context.Context, d time.Duration, seed uint64) (Stats, error) {
	r.done.Store(0)
	workers := make([]*worker, r.spec.Conns)
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.conn.Close()
			}
		}
	}()
	dialer := net.Dialer{Timeout: dialTimeout}
	for i := range workers {
		conn, err := dialer.DialContext(ctx, "tcp", r.addr)
		if err != nil {
			return Stats{}, fmt.Errorf("connect to %s (connection %d of %d): %w", r.addr, i+1, len(workers), err)
		}
		r.hists[i].Reset()
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		keys := newKeyPicker(r.spec, rng, &r.seq)
		workers[i] = &worker{
			conn:  conn,
			cmd:   newCommander(r.spec, rng, keys, r.values),
			rd:    newReplyReader(conn),
			hist:  r.hists[i],
			depth: r.spec.Pipeline,
		}
	}

	var stop atomic.Bool
	start := time.Now()
	end := start.Add(d)
	for _, w := range workers {
		if err := w.conn.SetDeadline(end.Add(replyGrace)); err != nil {
			return Stats{}, fmt.Errorf("set deadline on connection to %s: %w", r.addr, err)
		}
	}
	errc := make(chan error, len(workers))
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			err := w.run(&stop, &r.done)
			if err != nil {
				stop.Store(true)
			}
			errc <- err
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		stop.Store(true)
	case <-ctx.Done():
		stop.Store(true)
		for _, w := range workers {
			_ = w.conn.SetDeadline(time.Now())
		}
	case <-finished: // every worker failed before the end
	}
	<-finished
	elapsed := time.Since(start)
	close(errc)
	var errs []error
	for err := range errc {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	if len(errs) > 0 {
		return Stats{}, fmt.Errorf("%s: %w", r.addr, errors.Join(errs[0], fmt.Errorf("%d of %d connections failed", len(errs), len(workers))))
	}

	merged := hdrhistogram.New(1, maxLatency, 3)
	st := Stats{Seconds: elapsed.Seconds()}
	for i, w := range workers {
		merged.Merge(r.hists[i])
		st.Ops += w.ops
		st.Errors += w.errors
		st.Nils += w.rd.nils
		if st.FirstError == "" {
			st.FirstError = w.firstError
		}
	}
	st.OpsPerSec = float64(st.Ops) / elapsed.Seconds()
	us := func(q float64) float64 { return float64(merged.ValueAtQuantile(q)) / 1e3 }
	st.P50, st.P90, st.P99, st.P999 = us(50), us(90), us(99), us(99.9)
	st.Max = float64(merged.Max()) / 1e3
	return st, nil
}

// worker is one connection of a run, owned by its goroutine.
type worker struct {
	conn       net.Conn
	cmd        *commander
	rd         *replyReader
	hist       *hdrhistogram.Histogram
	depth      int
	wbuf       []byte
	ops        int64
	errors     int64
	firstError string
}

// run writes a batch of depth commands, reads depth replies, and repeats until
// stop. The hot loop does not allocate.
func (w *worker) run(stop *atomic.Bool, done *atomic.Int64) error {
	for !stop.Load() {
		w.wbuf = w.wbuf[:0]
		for range w.depth {
			w.wbuf = w.cmd.appendCommand(w.wbuf)
		}
		sent := time.Now()
		if _, err := w.conn.Write(w.wbuf); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		for range w.depth {
			kind, err := w.rd.next()
			if err != nil {
				return fmt.Errorf("read reply: %w", err)
			}
			if kind == replyError {
				w.errors++
				if w.firstError == "" {
					w.firstError = string(w.rd.errLine)
				}
			}
			_ = w.hist.RecordValue(min(int64(time.Since(sent)), maxLatency))
		}
		w.ops += int64(w.depth)
		done.Add(int64(w.depth))
	}
	return nil
}
