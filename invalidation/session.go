package invalidation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// pattern covers every database's keyspace channel.
const pattern = "__keyspace@*__:*"

// session is one attempt at a trusted stream: its connections, whether the
// Target trusts it, and the goroutines that watch it. It ends, for good, at
// the first sign of trouble; Run then starts a new one.
type session struct {
	s     *Subscriber
	ctx   context.Context
	ctl   *redis.Client // reconnects as the proxy's own connections do: config, INFO, canary writes
	ps    *redis.PubSub // set under mu once, before the goroutines start
	track *redis.Client // tracking mode: the one connection holding CLIENT TRACKING

	// verified is set when the server's configuration vouches that writes
	// are notified; otherwise only a canary's notification can (unverified
	// says why).
	verified   bool
	unverified string

	stop     chan struct{} // closed when the session ends: its goroutines return
	wg       sync.WaitGroup
	arrived  chan struct{} // the canary in flight was notified; capacity 1
	lastRead atomic.Int64  // unix nanoseconds of the last read on the subscription

	mu sync.Mutex // guards the fields below; Target.Resume and Suspend run under it
	// confirmed: the server confirmed the subscription. resumed: the Target
	// was resumed in this session. ended: the session is over; nothing
	// resumes any more.
	confirmed, resumed, ended bool
	cause                     error     // why the session ended; the first reason wins
	canaryKey                 string    // the canary in flight, "" when none
	canarySent                time.Time // when it was written
}

// session checks the upstream, opens the stream and relays it until the
// session ends. trusted reports whether the Target was resumed during the
// session; it is suspended again before session returns.
func (s *Subscriber) session(ctx context.Context) (trusted bool, err error) {
	co := s.opts
	co.PoolSize = 2 // the poller and the canary
	ctl := redis.NewClient(&co)
	defer ctl.Close()
	ss := &session{s: s, ctx: ctx, ctl: ctl, stop: make(chan struct{}), arrived: make(chan struct{}, 1)}
	s.setCurrent(ss)
	defer s.setCurrent(nil)

	if s.mode == Keyspace {
		if ss.verified, ss.unverified, err = s.checkConfig(ctx, ctl); err != nil {
			return false, err
		}
		if !ss.verified && s.canaryInterval <= 0 {
			return false, &disabledError{ss.unverified + "; enable keyspace notifications (\"KA\") on the server"}
		}
	}
	var base *upstreamState
	if s.pollInterval > 0 {
		st, err := s.readUpstream(ctx, ctl)
		switch {
		case err == nil:
			base = &st
		case refused(err) || errors.Is(err, errNoIdentity):
			s.warnPollRefused(err)
		default:
			return false, fmt.Errorf("INFO: %w", err)
		}
	}

	o := s.opts
	o.Dialer = dialOnce(s.opts.Dialer)
	var clientID int64
	if s.mode == Tracking {
		// The redirect target of CLIENT TRACKING is the subscription itself,
		// which cannot run CLIENT ID once subscribed.
		o.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
			var err error
			clientID, err = cn.ClientID(ctx).Result()
			return err
		}
	}
	sc := redis.NewClient(&o)
	defer sc.Close()
	ps := sc.Subscribe(ctx) // no channel yet: the calls below report errors
	defer ps.Close()
	ss.mu.Lock()
	ss.ps = ps
	ended := ss.ended // by Restart
	ss.mu.Unlock()
	if ended {
		return false, ss.cause
	}
	ss.lastRead.Store(time.Now().UnixNano())
	if s.mode == Keyspace {
		err = ss.ps.PSubscribe(ctx, pattern)
	} else {
		err = ss.ps.Subscribe(ctx, trackingChannel)
	}
	if err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	if s.mode == Tracking {
		if ss.track, err = s.startTracking(ctx, clientID); err != nil {
			return false, err
		}
		defer ss.track.Close()
		ss.verified = true
	}

	ss.wg.Go(ss.watch)
	if base != nil {
		ss.wg.Go(func() { ss.poll(*base) })
	}
	ss.lose(ss.receive())
	close(ss.stop)
	// Closing the clients fails commands still in flight, so the goroutines
	// return at once.
	ctl.Close()
	if ss.track != nil {
		ss.track.Close()
	}
	ss.wg.Wait()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.resumed, ss.cause
}

// receive relays messages until the subscription fails or is closed. The
// first reply must confirm our subscription; a second confirmation would mean
// the library resubscribed on its own, which is treated as a loss.
func (ss *session) receive() error {
	s := ss.s
	confirmed := false
	for {
		msg, err := ss.ps.Receive(ss.ctx)
		if err != nil {
			if s.mode == Tracking && isFlushMessage(err) {
				ss.lastRead.Store(time.Now().UnixNano())
				s.messages.Add(1)
				s.flushAll("tracking flush message (FLUSHDB or FLUSHALL)")
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		now := time.Now().UnixNano()
		ss.lastRead.Store(now)
		switch m := msg.(type) {
		case *redis.Message:
			s.messages.Add(1)
			s.lastMessage.Store(now)
			if s.mode == Keyspace {
				ss.handleKeyspace(m)
			} else {
				ss.handleTracking(m)
			}
		case *redis.Pong:
		case *redis.Subscription:
			kind, channel := "psubscribe", pattern
			if s.mode == Tracking {
				kind, channel = "subscribe", trackingChannel
			}
			if confirmed || m.Kind != kind || m.Channel != channel {
				return fmt.Errorf("unexpected %s %q on the subscription", m.Kind, m.Channel)
			}
			confirmed = true
			ss.confirm()
		default:
			return fmt.Errorf("unexpected %T on the subscription", msg)
		}
	}
}

func (ss *session) handleKeyspace(m *redis.Message) {
	s := ss.s
	if m.Payload == "keymiss" {
		// Published for reads of missing keys when class m is on: nothing changed.
		return
	}
	db, key, ok := parseChannel(m.Channel)
	if !ok {
		s.malformed.Add(1)
		s.log.Debug("ignoring malformed keyspace channel", "channel", m.Channel)
		return
	}
	if ss.canaryNotified(key) {
		return
	}
	s.keyBuf = append(s.keyBuf[:0], key...)
	s.target.Invalidate(db, s.keyBuf)
}

// confirm runs when the server confirms the subscription: the stream is
// trusted once the canary comes back, or at once without a canary.
func (ss *session) confirm() {
	ss.mu.Lock()
	ended := ss.ended
	ss.confirmed = true
	ss.mu.Unlock()
	switch {
	case ended:
	case ss.s.canaryInterval > 0:
		ss.wg.Go(ss.canary)
	default:
		ss.resume("subscription confirmed")
	}
}

// resume trusts the stream, once per session and never after it ended.
func (ss *session) resume(by string) {
	s := ss.s
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.confirmed || ss.resumed || ss.ended {
		return
	}
	ss.resumed = true
	s.target.Resume()
	s.setSubscribed(true)
	s.setDisabled("")
	s.readyOnce.Do(func() { close(s.ready) })
	s.log.Info("invalidation stream trusted; L1 resumed", "by", by)
}

// lose ends the session for cause: the Target is suspended at once if it was
// resumed, and the subscription closed, which ends receive. Only the first
// call counts; it is safe from any goroutine.
func (ss *session) lose(cause error) {
	s := ss.s
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return
	}
	ss.ended = true
	ss.cause = cause
	if ss.canaryKey != "" {
		// The canary in flight is abandoned: keep how long it had waited.
		s.lag.Store(int64(time.Since(ss.canarySent)))
		s.canarySent.Store(0)
		ss.canaryKey = ""
	}
	wasResumed := ss.resumed
	if wasResumed {
		// Whatever is published from now until the next trusted stream is lost.
		s.target.Suspend()
		s.setSubscribed(false)
	}
	ps := ss.ps // nil while the session is still being set up
	ss.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
	if wasResumed && ss.ctx.Err() == nil {
		s.reconnects.Add(1)
		s.log.Warn("invalidation stream lost; L1 suspended until a new one is trusted", "err", cause)
	}
}

// watch ends the session when ctx is done, when the subscription has been
// silent for three ping intervals (a peer that vanished without a FIN or RST
// would otherwise leave Receive blocked, and the L1 trusted, forever), or when
// the tracking connection stops answering.
func (ss *session) watch() {
	s := ss.s
	t := time.NewTicker(s.pingInterval)
	defer t.Stop()
	for {
		select {
		case <-ss.stop:
			return
		case <-ss.ctx.Done():
			ss.lose(ss.ctx.Err())
			return
		case <-t.C:
			if silent := time.Since(time.Unix(0, ss.lastRead.Load())); silent > 3*s.pingInterval {
				ss.lose(fmt.Errorf("subscription silent for %v", silent.Round(time.Millisecond)))
				return
			}
			// The reply arrives through Receive; a failed write shows up there too.
			_ = ss.ps.Ping(ss.ctx)
			if ss.track != nil {
				if err := ss.track.Ping(ss.ctx).Err(); err != nil {
					ss.lose(fmt.Errorf("tracking connection: %w", err))
					return
				}
			}
		}
	}
}

// pause waits d, reporting false if the session ended meanwhile.
func (ss *session) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ss.stop:
		return false
	}
}

// refused tells a server that answered "no" (unknown or renamed command, ACL,
// read-only replica) from one that is only busy starting up.
func refused(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	return !redis.IsLoadingError(err) && !redis.HasErrorPrefix(err, "BUSY")
}
