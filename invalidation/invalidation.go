// Package invalidation keeps the L1 coherent with writes made anywhere on the
// upstream Redis. It owns one dedicated subscription to keyspace notifications
// (PSUBSCRIBE __keyspace@*__:*) and its health, and tells its Target two things:
// which key to drop, and whether the L1 can be trusted at all. It never serves
// clients and never decides what is cacheable.
//
// Notifications are fire-and-forget: whatever is published while the
// subscription is down is lost for good. So the Target starts suspended, is
// resumed only once the server confirms the subscription (after
// notify-keyspace-events has been checked, and enabled when allowed), and is
// suspended again the moment the connection ends for any reason: a read error,
// the server closing it, or PINGs going unanswered on a link that died
// silently. Each connection is dialled exactly once; the client library is
// never allowed to reconnect behind our back, so every loss is seen here.
package invalidation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Target is what the subscriber keeps coherent, normally the L1.
//
// Calls come one at a time: the first Suspend from New, all others from Run's
// goroutine. Suspend and Resume alternate, starting with that Suspend; when Run
// returns the Target is suspended. The subscriber does not call FlushAll yet:
// it is for changes that publish no keyspace event while the subscription
// stays up (FLUSHALL, FLUSHDB, SWAPDB, an upstream swapped behind a proxy).
type Target interface {
	// Invalidate drops one key of database db. key is only valid during the
	// call: copy it to keep it.
	Invalidate(db int, key []byte)
	// FlushAll drops everything but keeps trusting the subscription.
	FlushAll()
	// Suspend drops everything and stops storing: from now on events may be
	// missed. It must also fail fills that are in flight.
	Suspend()
	// Resume allows storing again: every write from now on will be notified.
	// A fill that started before Resume must still not be stored, because the
	// write that made its value stale may have happened while suspended.
	Resume()
}

// Config configures a Subscriber.
type Config struct {
	// Options locate and authenticate the upstream. The subscriber works on a
	// copy, with Protocol 2, no command or dial retries (it retries whole
	// sessions itself), a one-connection pool, and go-redis's default read and write
	// timeouts where these are disabled. Required.
	Options *redis.Options
	// AllowConfigSet lets the subscriber CONFIG SET notify-keyspace-events when
	// classes it needs are missing. Without it (or when the server refuses
	// CONFIG, as managed Redis often does) caching stays disabled until an
	// operator enables them.
	AllowConfigSet bool
	// Logger receives state changes. Nil means slog.Default().
	Logger *slog.Logger
}

// State is a snapshot of the subscriber's health.
type State struct {
	// Subscribed is true while the Target is resumed.
	Subscribed bool
	// CachingDisabled, when not empty, says why caching is refused until an
	// operator acts (e.g. notifications off and CONFIG SET not allowed).
	CachingDisabled string
	// Reconnects counts confirmed subscriptions that were lost.
	Reconnects int64
	// Messages counts notifications received.
	Messages int64
	// Malformed counts notifications whose channel did not name a database
	// and key; they are ignored.
	Malformed int64
	// LastMessage is when the last notification arrived (zero if none).
	LastMessage time.Time
}

// Subscriber maintains the keyspace subscription. Create it with New, start it
// with Run.
type Subscriber struct {
	opts           redis.Options // private copy; Dialer always set
	allowConfigSet bool
	log            *slog.Logger
	target         Target

	// Timings; tests shorten them.
	pingInterval    time.Duration // PING on the subscription this often; 3 without reply end it
	recheckInterval time.Duration // re-read the config this often while caching is disabled
	minBackoff      time.Duration
	maxBackoff      time.Duration

	running   atomic.Bool
	ready     chan struct{}
	readyOnce sync.Once
	keyBuf    []byte // used by the Run goroutine only

	reconnects  atomic.Int64
	messages    atomic.Int64
	malformed   atomic.Int64
	lastMessage atomic.Int64 // unix nanoseconds

	mu         sync.Mutex // guards subscribed and disabled
	subscribed bool
	disabled   string
}

// pattern covers every database's keyspace channel.
const pattern = "__keyspace@*__:*"

// New returns a Subscriber for cfg and suspends t at once: nothing may be
// cached before the first subscription is confirmed. It panics if
// cfg.Options is nil.
func New(cfg Config, t Target) *Subscriber {
	if cfg.Options == nil {
		panic("invalidation: Config.Options is nil")
	}
	t.Suspend()
	o := *cfg.Options
	o.Protocol = 2
	o.MaxRetries = -1
	o.DialerRetries = 1
	o.PoolSize, o.MinIdleConns, o.PipelinePoolSize = 1, 0, -1
	// A disabled timeout would let a dead upstream hang a config check forever.
	o.ReadTimeout = max(o.ReadTimeout, 0)
	o.WriteTimeout = max(o.WriteTimeout, 0)
	if o.Dialer == nil {
		d := o
		if d.DialTimeout <= 0 {
			d.DialTimeout = 5 * time.Second
		}
		o.Dialer = redis.NewDialer(&d)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Subscriber{
		opts:            o,
		allowConfigSet:  cfg.AllowConfigSet,
		log:             log.With("component", "invalidation", "upstream", o.Addr),
		target:          t,
		pingInterval:    time.Second,
		recheckInterval: 10 * time.Second,
		minBackoff:      50 * time.Millisecond,
		maxBackoff:      5 * time.Second,
		ready:           make(chan struct{}),
	}
}

// Ready is closed when the first subscription is confirmed and the Target
// resumed. It never closes while caching is disabled.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// State returns a snapshot; it is safe from any goroutine.
func (s *Subscriber) State() State {
	s.mu.Lock()
	st := State{Subscribed: s.subscribed, CachingDisabled: s.disabled}
	s.mu.Unlock()
	st.Reconnects = s.reconnects.Load()
	st.Messages = s.messages.Load()
	st.Malformed = s.malformed.Load()
	if ns := s.lastMessage.Load(); ns != 0 {
		st.LastMessage = time.Unix(0, ns)
	}
	return st
}

// Run keeps the subscription up until ctx is done, then returns nil with the
// Target suspended and every goroutine it started stopped. It may be called
// once.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("invalidation: Run called twice")
	}
	ctl := redis.NewClient(&s.opts)
	defer ctl.Close()
	backoff := s.minBackoff
	failures := 0
	for {
		confirmed, err := s.session(ctx, ctl)
		if ctx.Err() != nil {
			return nil
		}
		var off *disabledError
		var wait time.Duration
		switch {
		case errors.As(err, &off):
			s.setDisabled(off.reason)
			wait = s.recheckInterval
		case confirmed:
			backoff, failures = s.minBackoff, 0
			wait = backoff
		default:
			failures++
			s.log.Warn("keyspace subscription failed; L1 stays suspended",
				"err", err, "attempt", failures, "retry_in", backoff)
			wait = backoff
			backoff = min(2*backoff, s.maxBackoff)
		}
		if !sleep(ctx, jitter(wait)) {
			return nil
		}
	}
}

// session checks the config, subscribes on a fresh connection and relays
// events until that connection ends. confirmed reports whether the Target was
// resumed during the session; it is suspended again before session returns.
func (s *Subscriber) session(ctx context.Context, ctl *redis.Client) (confirmed bool, err error) {
	if err := s.checkConfig(ctx, ctl); err != nil {
		return false, err
	}
	s.setDisabled("")

	o := s.opts
	o.Dialer = dialOnce(s.opts.Dialer)
	c := redis.NewClient(&o)
	defer c.Close()
	ps := c.PSubscribe(ctx) // no pattern yet: PSubscribe below reports errors
	defer ps.Close()
	var lastRead atomic.Int64
	lastRead.Store(time.Now().UnixNano())
	if err := ps.PSubscribe(ctx, pattern); err != nil {
		return false, fmt.Errorf("psubscribe %s: %w", pattern, err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { s.watch(ctx, ps, &lastRead, stop) })
	defer wg.Wait()
	defer close(stop)

	err = s.receive(ctx, ps, &lastRead, &confirmed)
	if confirmed {
		// Whatever was published from now until the next confirmation is lost.
		s.target.Suspend()
		s.setSubscribed(false)
		if ctx.Err() == nil {
			s.reconnects.Add(1)
			s.log.Warn("keyspace subscription lost; L1 suspended until resubscribed", "err", err)
		}
	}
	return confirmed, err
}

// receive relays messages until the connection fails. The first reply must be
// the confirmation of our pattern; a second confirmation would mean the
// library resubscribed on its own, which is treated as a loss.
func (s *Subscriber) receive(ctx context.Context, ps *redis.PubSub, lastRead *atomic.Int64, confirmed *bool) error {
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		now := time.Now().UnixNano()
		lastRead.Store(now)
		switch m := msg.(type) {
		case *redis.Message:
			s.messages.Add(1)
			s.lastMessage.Store(now)
			s.handle(m)
		case *redis.Pong:
		case *redis.Subscription:
			if *confirmed || m.Kind != "psubscribe" || m.Channel != pattern {
				return fmt.Errorf("unexpected %s %q on the subscription", m.Kind, m.Channel)
			}
			*confirmed = true
			s.target.Resume()
			s.setSubscribed(true)
			s.readyOnce.Do(func() { close(s.ready) })
			s.log.Info("keyspace subscription confirmed; L1 resumed")
		default:
			return fmt.Errorf("unexpected %T on the subscription", msg)
		}
	}
}

func (s *Subscriber) handle(m *redis.Message) {
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
	s.keyBuf = append(s.keyBuf[:0], key...)
	s.target.Invalidate(db, s.keyBuf)
}

// watch closes ps when ctx is done or when the link has been silent for three
// ping intervals: a peer that vanished without a FIN or RST would otherwise
// leave Receive blocked, and the L1 trusted, forever.
func (s *Subscriber) watch(ctx context.Context, ps *redis.PubSub, lastRead *atomic.Int64, stop <-chan struct{}) {
	t := time.NewTicker(s.pingInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			_ = ps.Close()
			return
		case <-t.C:
			if silent := time.Since(time.Unix(0, lastRead.Load())); silent > 3*s.pingInterval {
				s.log.Warn("keyspace subscription silent; dropping it", "silent_for", silent)
				_ = ps.Close()
				return
			}
			// The reply arrives through Receive; a failed write shows up there too.
			_ = ps.Ping(ctx)
		}
	}
}

func (s *Subscriber) setSubscribed(v bool) {
	s.mu.Lock()
	s.subscribed = v
	s.mu.Unlock()
}

// setDisabled records why caching is refused ("" when it no longer is),
// logging only changes so a periodic re-check does not flood the log.
func (s *Subscriber) setDisabled(reason string) {
	s.mu.Lock()
	prev := s.disabled
	s.disabled = reason
	s.mu.Unlock()
	switch {
	case reason == prev:
	case reason != "":
		s.log.Error("CACHING DISABLED: keyspace notifications unavailable; every read goes upstream",
			"reason", reason, "recheck_every", s.recheckInterval)
	default:
		s.log.Info("keyspace notifications available again; caching can resume", "was", prev)
	}
}

var errRedial = errors.New("subscription connection already used; a new session must start")

// dialOnce lets a client dial a single connection. go-redis's PubSub redials
// and resubscribes by itself after an error (see PubSub.releaseConn); with a
// second dial refused, that loss surfaces as an error from Receive instead.
func dialOnce(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	var used atomic.Bool
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if used.Swap(true) {
			return nil, errRedial
		}
		return dial(ctx, network, addr)
	}
}

// jitter spreads d over [d/2, d] so that many proxies do not reconnect in step.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx is done, reporting whether it waited the full d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
