// Package invalidation keeps the L1 coherent with writes made anywhere on the
// upstream Redis. It owns the stream of invalidations and its health, and tells
// its Target three things: which key to drop, when to drop everything, and
// whether the L1 can be trusted at all. It never serves clients and never
// decides what is cacheable.
//
// The stream comes in one of two modes. Keyspace (the default) subscribes to
// keyspace notifications, PSUBSCRIBE __keyspace@*__:*, after checking
// notify-keyspace-events (and enabling it when allowed). Tracking uses Redis's
// server-assisted client-side caching instead, which needs no CONFIG: one
// connection turns on CLIENT TRACKING in broadcast mode for the cached
// prefixes and redirects its invalidations to a subscription to
// __redis__:invalidate. Tracking messages name no database, so a key is
// dropped in every database; a nil message (FLUSHDB, FLUSHALL) drops
// everything.
//
// Notifications are fire-and-forget: whatever is published while the stream
// is down is lost for good. So the Target starts suspended, is resumed only
// once the stream is proven to work (the server confirmed the subscription
// and, with the canary on, delivered the canary's notification), and is
// suspended again the moment anything makes the stream suspect: a read error
// or the server closing a connection, PINGs going unanswered, a canary not
// notified in time, or the upstream turning out to be another server. The
// stream's connections (the subscription, and tracking's) are dialled exactly
// once per session: the client library is never allowed to reconnect behind
// our back, and messages are read with Receive, not through the library's
// channel, which can drop them, so every loss is seen here. Then a new session
// starts from scratch, re-checking the server's configuration.
//
// Three things watch for what a healthy-looking stream would miss:
//   - The canary writes a key of its own under CanaryPrefix at a steady
//     interval, through a connection that reconnects as the proxy's own do, and
//     measures how long its notification takes (State.Lag). One not back in
//     time means the stream delivers nothing (a notification setting changed, a
//     middlebox), and the session ends.
//   - The poller reads the upstream's INFO through that same kind of
//     connection: a new run_id, role or replication ID, or a replica's link to
//     its primary going down or up, means another dataset (a restart or
//     failover the stream survived, the proxy's connections now reaching
//     another server, a replica's full resynchronisation) and ends the
//     session; a change in the call counts of FLUSHDB, FLUSHALL, SWAPDB or
//     DEBUG, which change many keys without a per-key event, flushes the
//     whole L1 (the counts do not say which database).
//   - Silence: PINGs on the stream's connections, unanswered for three
//     intervals, end the session.
//
// A Redis Cluster's masters each publish their own keys' changes only: a
// Group runs a Subscriber on every master of the slot map, follows the map as
// it changes, and keeps one Target trusted only while every master's stream
// is.
package invalidation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Target is what the subscriber keeps coherent, normally the L1.
//
// Suspend and Resume are never called concurrently and alternate, starting
// with the Suspend from New; when Run returns the Target is suspended. The
// other methods may be called from other goroutines at any time, concurrently
// with each other and with Suspend and Resume.
type Target interface {
	// Invalidate drops one key of database db. key is only valid during the
	// call: copy it to keep it.
	Invalidate(db int, key []byte)
	// InvalidateEveryDB drops key in every database: tracking messages do not
	// say which database changed. key is only valid during the call.
	InvalidateEveryDB(key []byte)
	// FlushAll drops everything and fails fills in flight, but keeps trusting
	// the stream: for changes that publish no per-key event (FLUSHALL,
	// FLUSHDB, SWAPDB, DEBUG RELOAD).
	FlushAll()
	// Suspend drops everything and stops storing: from now on events may be
	// missed. It must also fail fills that are in flight.
	Suspend()
	// Resume allows storing again: every write from now on will be notified.
	// A fill that started before Resume must still not be stored, because the
	// write that made its value stale may have happened while suspended.
	Resume()
}

// Mode selects where invalidations come from.
type Mode string

const (
	// Keyspace subscribes to keyspace notifications. It needs
	// notify-keyspace-events to include K and every write class, set by the
	// operator or, when allowed, by the subscriber.
	Keyspace Mode = "keyspace"
	// Tracking uses CLIENT TRACKING in broadcast mode with a redirected
	// subscription to __redis__:invalidate. It needs no CONFIG, only CLIENT
	// TRACKING, and notifies only keys under Config.Prefixes.
	Tracking Mode = "tracking"
)

// CanaryPrefix starts every key the canary writes. Keys under it must never
// be cached; each expires on its own within seconds.
const CanaryPrefix = "__cacheproxy:canary:"

// Config configures a Subscriber.
type Config struct {
	// Options locate and authenticate the upstream. The subscriber works on
	// copies, with Protocol 2, no command or dial retries (it retries whole
	// sessions itself), small pools, and go-redis's default read and write
	// timeouts where these are disabled. Required.
	Options *redis.Options
	// Mode is Keyspace or Tracking; "" means Keyspace.
	Mode Mode
	// AllowConfigSet lets the subscriber CONFIG SET notify-keyspace-events
	// when classes it needs are missing (keyspace mode only). Without it, and
	// without the classes, caching stays disabled until an operator enables
	// them. When the server refuses CONFIG, the canary decides instead.
	AllowConfigSet bool
	// Prefixes are the key prefixes whose keys the L1 may hold; "" stands for
	// every key. Tracking mode is told of writes under these prefixes only
	// (and the canary's), so a key outside them must never be cached. Nil
	// tracks every key. Keyspace mode ignores it.
	Prefixes []string
	// CanaryInterval is the pause between one canary's notification and the
	// next canary write. 0 means 1s; negative turns the canary off, which
	// leaves a stream that silently delivers nothing undetected, and a server
	// that refuses CONFIG uncached.
	CanaryInterval time.Duration
	// CanaryTimeout is how long a canary's notification may take before the
	// stream is declared lost. 0 means 5s.
	CanaryTimeout time.Duration
	// PollInterval is how often the upstream's INFO is read for restarts,
	// failovers and commands that change keys without per-key events. It
	// bounds how long such a change can go unnoticed. 0 means 100ms; negative
	// turns polling off.
	PollInterval time.Duration
	// CanaryHashTag, when set, is called before each canary write for a hash
	// tag, braces included ("{42}"), whose slot the upstream serves at that
	// moment: a Redis Cluster node takes writes only to its
	// own slots. A canary write answered MOVED or ASK ends the session (the
	// slot map has changed) rather than counting as refused.
	CanaryHashTag func() string
	// Logger receives state changes. Nil means slog.Default().
	Logger *slog.Logger
}

// Defaults of the Config fields left zero.
const (
	DefaultCanaryInterval = time.Second
	DefaultCanaryTimeout  = 5 * time.Second
	DefaultPollInterval   = 100 * time.Millisecond
)

// State is a snapshot of the subscriber's health.
type State struct {
	Mode Mode
	// Subscribed is true while the Target is resumed.
	Subscribed bool
	// CachingDisabled, when not empty, says why caching is refused until an
	// operator acts (e.g. notifications off and CONFIG SET not allowed).
	CachingDisabled string
	// Reconnects counts trusted streams that were lost, whatever the cause.
	Reconnects int64
	// Messages counts notifications received; Malformed those that named no
	// key and were ignored.
	Messages  int64
	Malformed int64
	// LastMessage is when the last notification arrived (zero if none).
	LastMessage time.Time
	// Flushes counts whole-L1 flushes for changes without per-key events:
	// FLUSHDB, FLUSHALL, SWAPDB or DEBUG calls seen by the poller, and
	// tracking's flush messages.
	Flushes int64
	// Canaries counts canary writes whose notification came back.
	Canaries int64
	// Lag is how long the last canary's notification took, or how long the
	// canary in flight has been waiting, if that is longer: the notification
	// lag. Zero until a canary has been written.
	Lag time.Duration
}

// Subscriber maintains the invalidation stream. Create it with New, start it
// with Run.
type Subscriber struct {
	opts           redis.Options // private copy; Dialer always set
	mode           Mode
	allowConfigSet bool
	log            *slog.Logger
	target         Target

	canaryInterval time.Duration // <= 0: no canary
	canaryTimeout  time.Duration
	pollInterval   time.Duration // <= 0: no polling
	canaryKeys     string        // CanaryPrefix + this subscriber's random id + ":"
	canaryTag      func() string // nil outside a cluster
	tracked        []string      // tracking mode's PREFIX list; nil tracks every key

	// Timings; tests shorten them.
	pingInterval    time.Duration // PING on the stream's connections this often; 3 without reply end it
	recheckInterval time.Duration // re-read the config this often while caching is disabled
	minBackoff      time.Duration
	maxBackoff      time.Duration

	running   atomic.Bool
	ready     chan struct{}
	readyOnce sync.Once
	keyBuf    []byte // used by the receiving goroutine only

	canarySeq   atomic.Int64
	reconnects  atomic.Int64
	messages    atomic.Int64
	malformed   atomic.Int64
	flushes     atomic.Int64
	canaries    atomic.Int64
	lastMessage atomic.Int64 // unix nanoseconds
	lag         atomic.Int64 // nanoseconds
	canarySent  atomic.Int64 // unix nanoseconds of the canary in flight; 0 when none

	warnedPoll   atomic.Bool // a refused INFO was reported
	warnedCanary atomic.Bool // a refused canary write was reported

	mu         sync.Mutex // guards the fields below
	subscribed bool
	disabled   string

	curMu sync.Mutex // guards cur
	cur   *session   // the session under way, for Restart; nil between sessions
}

// mustCheck panics if Options is nil or Mode unknown, and fills in the
// default Mode.
func (cfg *Config) mustCheck() {
	if cfg.Options == nil {
		panic("invalidation: Config.Options is nil")
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = Keyspace
	case Keyspace, Tracking:
	default:
		panic(fmt.Sprintf("invalidation: unknown Config.Mode %q", cfg.Mode))
	}
}

// New returns a Subscriber for cfg and suspends t at once: nothing may be
// cached before the first stream is trusted. It panics if cfg.Options is nil or
// cfg.Mode unknown.
func New(cfg Config, t Target) *Subscriber {
	cfg.mustCheck()
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
	var id [8]byte
	_, _ = rand.Read(id[:])
	canaryKeys := CanaryPrefix + hex.EncodeToString(id[:]) + ":"
	return &Subscriber{
		opts:            o,
		mode:            cfg.Mode,
		allowConfigSet:  cfg.AllowConfigSet,
		log:             log.With("component", "invalidation", "mode", string(cfg.Mode), "upstream", o.Addr),
		target:          t,
		canaryInterval:  orDefault(cfg.CanaryInterval, DefaultCanaryInterval),
		canaryTimeout:   orDefault(cfg.CanaryTimeout, DefaultCanaryTimeout),
		pollInterval:    orDefault(cfg.PollInterval, DefaultPollInterval),
		canaryKeys:      canaryKeys,
		canaryTag:       cfg.CanaryHashTag,
		tracked:         trackedPrefixes(cfg.Prefixes, canaryKeys),
		pingInterval:    time.Second,
		recheckInterval: 10 * time.Second,
		minBackoff:      50 * time.Millisecond,
		maxBackoff:      5 * time.Second,
		ready:           make(chan struct{}),
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Ready is closed when the stream is first trusted and the Target resumed. It
// never closes while caching is disabled.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// State returns a snapshot; it is safe from any goroutine.
func (s *Subscriber) State() State {
	s.mu.Lock()
	st := State{Mode: s.mode, Subscribed: s.subscribed, CachingDisabled: s.disabled}
	s.mu.Unlock()
	st.Reconnects = s.reconnects.Load()
	st.Messages = s.messages.Load()
	st.Malformed = s.malformed.Load()
	st.Flushes = s.flushes.Load()
	st.Canaries = s.canaries.Load()
	if ns := s.lastMessage.Load(); ns != 0 {
		st.LastMessage = time.Unix(0, ns)
	}
	st.Lag = time.Duration(s.lag.Load())
	if sent := s.canarySent.Load(); sent != 0 {
		st.Lag = max(st.Lag, time.Since(time.Unix(0, sent)))
	}
	return st
}

// Run keeps the stream up until ctx is done, then returns nil with the Target
// suspended and every goroutine it started stopped. It may be called once.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("invalidation: Run called twice")
	}
	backoff := s.minBackoff
	failures := 0
	for {
		trusted, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var off *disabledError
		var wait time.Duration
		switch {
		case errors.As(err, &off):
			s.setDisabled(off.reason)
			wait = s.recheckInterval
		case trusted:
			backoff, failures = s.minBackoff, 0
			wait = backoff
		default:
			failures++
			s.log.Warn("invalidation stream failed; L1 stays suspended",
				"err", err, "attempt", failures, "retry_in", backoff)
			wait = backoff
			backoff = min(2*backoff, s.maxBackoff)
		}
		if !sleep(ctx, jitter(wait)) {
			return nil
		}
	}
}

// disabledError means the stream cannot be relied on until an operator acts;
// the Run loop re-checks at recheckInterval rather than backing off.
type disabledError struct{ reason string }

func (e *disabledError) Error() string { return e.reason }

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
		s.log.Error("CACHING DISABLED: invalidations unavailable; every read goes upstream",
			"reason", reason, "recheck_every", s.recheckInterval)
	default:
		s.log.Info("invalidations available again; caching resumes", "was", prev)
	}
}

// flushAll flushes the Target for a change that published no per-key event.
func (s *Subscriber) flushAll(why string) {
	s.target.FlushAll()
	s.flushes.Add(1)
	s.log.Info("L1 flushed: the upstream changed keys without per-key events", "why", why)
}

var errRedial = errors.New("stream connection already used; a new session must start")

// dialOnce lets a client dial a single connection. go-redis's PubSub redials
// and resubscribes by itself after an error (see PubSub.releaseConn), and a
// pool redials a broken connection; with a second dial refused, that loss
// surfaces as an error instead.
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
	return d/2 + mrand.N(d/2+1)
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
