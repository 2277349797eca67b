package upstream

import (
	"fmt"
	"sync"
	"time"
)

// Back-off bounds for failing dials.
const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = time.Second
)

// backoff spaces out dials while they fail, so that a Redis that is down (or
// a network that drops its packets) is not dialled by every request: after a
// failure, dials within the window fail at once with the error of the one that
// failed, and the window doubles from minBackoff to maxBackoff with each
// failure. The first dial after the window goes through; its success ends the
// back-off, so service resumes with the first request after Redis is back and
// the window is over, at most maxBackoff later.
//
// Failures of dials that began before the latest failure do not widen the
// window: concurrent dials that fail together count once. A dial to another
// address (the Target moved) is never held back by the old one's failures.
type backoff struct {
	mu    sync.Mutex // guards the fields below
	err   error      // the last failure; nil: dials go through
	addr  string     // where it failed
	at    time.Time  // when it was recorded
	delay time.Duration
	until time.Time // dials before this fail with err
	now   func() time.Time
}

func (b *backoff) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

// allow reports whether a dial to addr may go out now: if not, it returns the
// error to fail it with. started is the time to hand back to failed.
func (b *backoff) allow(addr string) (started time.Time, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock()
	if b.err != nil && addr == b.addr && now.Before(b.until) {
		return now, fmt.Errorf("%w (not redialled for another %v)", b.err, b.until.Sub(now).Round(time.Millisecond))
	}
	return now, nil
}

// failed records that a dial to addr begun at started failed with err.
func (b *backoff) failed(addr string, started time.Time, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock()
	if b.err != nil && addr == b.addr && started.Before(b.at) {
		return // a dial that was under way when another failed
	}
	if b.err == nil || addr != b.addr {
		b.delay = minBackoff
	} else {
		b.delay = min(2*b.delay, maxBackoff)
	}
	b.err, b.addr, b.at, b.until = err, addr, now, now.Add(b.delay)
}

// succeeded ends the back-off of addr.
func (b *backoff) succeeded(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if addr == b.addr {
		b.err, b.delay = nil, 0
	}
}
