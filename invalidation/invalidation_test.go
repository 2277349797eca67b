package invalidation

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

const waitLimit = 5 * time.Second

type call struct {
	op  string // invalidate, flushall, suspend, resume
	db  int    // everyDB for InvalidateEveryDB
	key string
}

const everyDB = -1

func (c call) String() string {
	if c.op == "invalidate" {
		return fmt.Sprintf("invalidate(%d, %q)", c.db, c.key)
	}
	return c.op
}

// recorder is a Target that records every call in order.
type recorder struct {
	mu           sync.Mutex
	calls        []call
	onSuspend    func() // run inside Suspend when set
	onInvalidate func() // run inside Invalidate when set
}

var _ Target = (*recorder)(nil)

func (r *recorder) add(c call) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

func (r *recorder) Invalidate(db int, key []byte) {
	r.add(call{"invalidate", db, string(key)})
	r.mu.Lock()
	f := r.onInvalidate
	r.mu.Unlock()
	if f != nil {
		f()
	}
}
func (r *recorder) InvalidateEveryDB(key []byte) { r.add(call{"invalidate", everyDB, string(key)}) }
func (r *recorder) FlushAll()                    { r.add(call{op: "flushall"}) }
func (r *recorder) Suspend() {
	r.add(call{op: "suspend"})
	r.mu.Lock()
	f := r.onSuspend
	r.mu.Unlock()
	if f != nil {
		f()
	}
}
func (r *recorder) Resume() { r.add(call{op: "resume"}) }

func (r *recorder) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// trust lists the suspend/resume calls only, e.g. "suspend resume suspend".
func (r *recorder) trust() string {
	var ops []string
	for _, c := range r.snapshot() {
		if c.op == "suspend" || c.op == "resume" {
			ops = append(ops, c.op)
		}
	}
	return strings.Join(ops, " ")
}

// count is how many calls equal c.
func (r *recorder) count(c call) int {
	n := 0
	for _, got := range r.snapshot() {
		if got == c {
			n++
		}
	}
	return n
}

// waitTrust waits until the suspend/resume sequence is exactly want.
func (r *recorder) waitTrust(t *testing.T, want string) {
	t.Helper()
	waitUntil(t, "suspend/resume sequence "+want, func() bool { return r.trust() == want })
}

// waitInvalidate waits for Invalidate(db, key).
func (r *recorder) waitInvalidate(t *testing.T, db int, key string) {
	t.Helper()
	want := call{"invalidate", db, key}
	waitUntil(t, want.String(), func() bool {
		for _, c := range r.snapshot() {
			if c == want {
				return true
			}
		}
		return false
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, waitLimit, what, cond)
}

func waitWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runUntilCleanup runs run in the background until the test ends, then
// checks that it returns within limit of its cancel, with the Target not left
// resumed, and logs what (the subscriber's or group's log) if the test failed.
func runUntilCleanup(t *testing.T, run func(context.Context) error, rec *recorder, logs *syncbuf.Buffer, limit time.Duration, what string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(limit):
			t.Errorf("Run did not return within %v of cancel", limit)
		}
		if calls := rec.snapshot(); len(calls) > 0 && calls[len(calls)-1].op == "resume" {
			t.Errorf("Target left resumed after Run returned")
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", what, logs)
		}
	})
}

type harness struct {
	sub  *Subscriber
	rec  *recorder
	logs *syncbuf.Buffer
}

// run starts a Subscriber with short timings against cfg.Options, tweaked
// before it runs, and stops it, checking that Run returns and leaves the
// Target suspended, when the test ends. The canary and the poller run at short
// intervals unless cfg says otherwise.
func run(t *testing.T, cfg Config, tweaks ...func(*Subscriber)) *harness {
	t.Helper()
	h := &harness{rec: &recorder{}, logs: &syncbuf.Buffer{}}
	cfg.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.CanaryInterval == 0 {
		cfg.CanaryInterval = 20 * time.Millisecond
	}
	if cfg.CanaryTimeout == 0 {
		cfg.CanaryTimeout = 2 * time.Second
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	h.sub = New(cfg, h.rec)
	// Three of these unanswered end a stream: long enough that a loaded
	// machine's scheduling does not pass for silence (TestDetectsSilentLoss
	// shortens it).
	h.sub.pingInterval = 250 * time.Millisecond
	h.sub.recheckInterval = 50 * time.Millisecond
	h.sub.minBackoff, h.sub.maxBackoff = 10*time.Millisecond, 100*time.Millisecond
	for _, tweak := range tweaks {
		tweak(h.sub)
	}
	runUntilCleanup(t, h.sub.Run, h.rec, h.logs, waitLimit, "subscriber")
	return h
}

func (h *harness) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-h.sub.Ready():
	case <-time.After(waitLimit):
		t.Fatalf("subscription not confirmed within %v; state %+v", waitLimit, h.sub.State())
	}
}

func set(t *testing.T, c *redis.Client, key string) {
	t.Helper()
	if err := c.Set(context.Background(), key, "v", 0).Err(); err != nil {
		t.Fatalf("SET %q: %v", key, err)
	}
}

func notifyConfig(t *testing.T, c *redis.Client) string {
	t.Helper()
	res, err := c.ConfigGet(context.Background(), "notify-keyspace-events").Result()
	if err != nil {
		t.Fatalf("CONFIG GET: %v", err)
	}
	return res["notify-keyspace-events"]
}

func TestInvalidatesWritesFromAnyClient(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}})
	h.waitReady(t)
	if got := h.rec.trust(); got != "suspend resume" {
		t.Fatalf("trust sequence %q, want %q", got, "suspend resume")
	}

	set(t, srv.Client(0), "k")
	h.rec.waitInvalidate(t, 0, "k")
	set(t, srv.Client(3), "k3")
	h.rec.waitInvalidate(t, 3, "k3")
	bin := "a:b@c\n__:\x00\xffz"
	set(t, srv.Client(0), bin)
	h.rec.waitInvalidate(t, 0, bin)

	st := h.sub.State()
	if !st.Subscribed || st.CachingDisabled != "" || st.Messages < 3 || st.LastMessage.IsZero() || st.Reconnects != 0 {
		t.Errorf("state %+v; want subscribed, enabled, >= 3 messages, no reconnects", st)
	}
}

func TestIgnoresKeymissAndMalformedChannels(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{NotifyKeyspaceEvents: "KEAm"})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}})
	h.waitReady(t)
	c := srv.Client(0)
	ctx := context.Background()

	if err := c.Get(ctx, "missing").Err(); err != redis.Nil {
		t.Fatalf("GET missing: %v", err)
	}
	malformed := []string{"__keyspace@__:a", "__keyspace@x__:b", "__keyspace@01__:c", "__keyspace@99999999999__:d", "__keyspace@1___:e"}
	for _, ch := range malformed {
		if err := c.Publish(ctx, ch, "set").Err(); err != nil {
			t.Fatalf("PUBLISH %s: %v", ch, err)
		}
	}
	// Events reach the subscriber in publish order, so once the barrier is seen
	// everything above has been handled.
	set(t, c, "barrier")
	h.rec.waitInvalidate(t, 0, "barrier")

	for _, cl := range h.rec.snapshot() {
		if cl.op == "invalidate" && cl.key != "barrier" {
			t.Errorf("unexpected %v", cl)
		}
	}
	if st := h.sub.State(); st.Malformed != int64(len(malformed)) {
		t.Errorf("Malformed = %d, want %d", st.Malformed, len(malformed))
	}
	if got := notifyConfig(t, c); got != "AKEm" {
		t.Errorf("notify-keyspace-events changed to %q", got)
	}
}

func TestEnablesNotificationsWhenAllowed(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{NotifyKeyspaceEvents: "none"})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, AllowConfigSet: true})
	h.waitReady(t)
	c := srv.Client(0)
	if got := notifyConfig(t, c); got != "AK" {
		t.Errorf("notify-keyspace-events = %q, want %q", got, "AK")
	}
	if !strings.Contains(h.logs.String(), "level=WARN msg=\"enabled keyspace notifications") {
		t.Errorf("no warning about CONFIG SET logged")
	}
	set(t, c, "k")
	h.rec.waitInvalidate(t, 0, "k")
}

// configCalls is how many CONFIG commands the server has run.
func configCalls(t *testing.T, c *redis.Client) int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	n := 0
	for line := range strings.SplitSeq(info, "\n") {
		rest, ok := strings.CutPrefix(line, "cmdstat_config|")
		if !ok {
			continue
		}
		_, rest, _ = strings.Cut(rest, "calls=")
		calls, _, _ := strings.Cut(rest, ",")
		v, err := strconv.Atoi(calls)
		if err != nil {
			t.Fatalf("commandstats line %q: %v", line, err)
		}
		n += v
	}
	return n
}

func TestDisablesCachingWhenNotificationsOffAndNotAllowed(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{NotifyKeyspaceEvents: "none"})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}})
	c := srv.Client(0)

	waitUntil(t, "CachingDisabled", func() bool { return h.sub.State().CachingDisabled != "" })
	if st := h.sub.State(); !strings.Contains(st.CachingDisabled, "notify-keyspace-events") || st.Subscribed {
		t.Errorf("state %+v; want a reason naming notify-keyspace-events, not subscribed", st)
	}
	// The state is set just before the error is logged.
	waitUntil(t, "the error logged", func() bool {
		return strings.Contains(h.logs.String(), "level=ERROR msg=\"CACHING DISABLED")
	})
	// Let it re-check a few times (seen on the server), then make sure it still
	// neither resumed nor touched the config.
	seen := configCalls(t, c)
	waitUntil(t, "three more config checks", func() bool { return configCalls(t, c) >= seen+3 })
	if got := h.rec.trust(); got != "suspend" {
		t.Fatalf("trust sequence %q, want %q", got, "suspend")
	}
	select {
	case <-h.sub.Ready():
		t.Fatal("Ready closed while caching is disabled")
	default:
	}
	if got := notifyConfig(t, c); got != "" {
		t.Errorf("notify-keyspace-events changed to %q", got)
	}

	// An operator fixes the server: the next check picks it up.
	if err := c.ConfigSet(context.Background(), "notify-keyspace-events", "KA").Err(); err != nil {
		t.Fatal(err)
	}
	h.waitReady(t)
	if st := h.sub.State(); st.CachingDisabled != "" || !st.Subscribed {
		t.Errorf("state %+v after the fix; want subscribed and enabled", st)
	}
	set(t, c, "k")
	h.rec.waitInvalidate(t, 0, "k")
}

// checkResubscribes breaks the subscription with lose and checks the Target is
// suspended, then resumed, and that events flow again.
func checkResubscribes(t *testing.T, srv *redistest.Server, h *harness, lose func()) {
	t.Helper()
	h.waitReady(t)
	set(t, srv.Client(0), "before")
	h.rec.waitInvalidate(t, 0, "before")

	lose()
	h.rec.waitTrust(t, "suspend resume suspend resume")
	if st := h.sub.State(); !st.Subscribed || st.Reconnects != 1 {
		t.Errorf("state %+v; want subscribed after one reconnect", st)
	}
	set(t, srv.Client(0), "after")
	h.rec.waitInvalidate(t, 0, "after")
}

func TestResubscribesAfterClientKill(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}})
	checkResubscribes(t, srv, h, func() {
		n, err := srv.Client(0).ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
		if err != nil || n != 1 {
			t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want 1 client killed", n, err)
		}
	})
}

func TestResubscribesAfterRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}})
	checkResubscribes(t, srv, h, srv.Restart)
}

func TestReappliesConfigAfterRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{NotifyKeyspaceEvents: "none"})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, AllowConfigSet: true})
	// The new server starts with notifications off: events flow again only if
	// the subscriber re-applies them.
	checkResubscribes(t, srv, h, srv.Restart)
	if got := notifyConfig(t, srv.Client(0)); got != "AK" {
		t.Errorf("notify-keyspace-events = %q after restart, want %q", got, "AK")
	}
}

// TestConfigRefusedTrustsCanary: a server that refuses CONFIG (managed Redis)
// but publishes notifications is trusted once the canary's own notification
// arrives.
func TestConfigRefusedTrustsCanary(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Args: []string{"--rename-command", "CONFIG", ""}})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, AllowConfigSet: true})
	h.waitReady(t)
	if st := h.sub.State(); st.CachingDisabled != "" || st.Canaries < 1 {
		t.Errorf("state %+v; want enabled, trusted by a canary", st)
	}
	set(t, srv.Client(0), "k")
	h.rec.waitInvalidate(t, 0, "k")
}

// TestConfigRefusedWithoutNotifications: CONFIG refused and nothing published:
// without the canary's notification the stream is never trusted.
func TestConfigRefusedWithoutNotifications(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{NotifyKeyspaceEvents: "none", Args: []string{"--rename-command", "CONFIG", ""}})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, AllowConfigSet: true, CanaryTimeout: 100 * time.Millisecond})
	waitUntil(t, "CachingDisabled", func() bool { return h.sub.State().CachingDisabled != "" })
	if reason := h.sub.State().CachingDisabled; !strings.Contains(reason, "refused") || !strings.Contains(reason, "canary") {
		t.Errorf("CachingDisabled = %q; want it to say CONFIG was refused and the canary not notified", reason)
	}
	if got := h.rec.trust(); got != "suspend" {
		t.Errorf("trust sequence %q, want %q", got, "suspend")
	}
}

// TestConfigRefusedWithoutCanary: with neither CONFIG nor the canary nothing
// can vouch for the stream.
func TestConfigRefusedWithoutCanary(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Args: []string{"--rename-command", "CONFIG", ""}})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, AllowConfigSet: true, CanaryInterval: -1})
	waitUntil(t, "CachingDisabled", func() bool { return h.sub.State().CachingDisabled != "" })
	if reason := h.sub.State().CachingDisabled; !strings.Contains(reason, "refused") {
		t.Errorf("CachingDisabled = %q; want it to say CONFIG was refused", reason)
	}
	if got := h.rec.trust(); got != "suspend" {
		t.Errorf("trust sequence %q, want %q", got, "suspend")
	}
}

// bridge forwards TCP connections to a server and can black-hole them: bytes
// are read and dropped in both directions while the sockets stay open, as
// when a network path dies without a FIN or RST.
type bridge struct {
	ln        net.Listener
	target    atomic.Pointer[string] // where new connections go
	blackhole atomic.Bool
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     []net.Conn
	accepted  atomic.Int64
}

func newBridge(t *testing.T, target string) *bridge {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &bridge{ln: ln}
	b.target.Store(&target)
	b.wg.Go(b.accept)
	t.Cleanup(b.close)
	return b
}

func (b *bridge) addr() string { return b.ln.Addr().String() }

func (b *bridge) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.accepted.Add(1)
		up, err := net.Dial("tcp", *b.target.Load())
		if err != nil {
			c.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, c, up)
		b.mu.Unlock()
		b.wg.Go(func() { b.pipe(up, c) })
		b.wg.Go(func() { b.pipe(c, up) })
	}
}

func (b *bridge) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.blackhole.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (b *bridge) close() {
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func TestDetectsSilentLoss(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	br := newBridge(t, srv.Addr())
	opts := &redis.Options{Addr: br.addr(), DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond}
	// PINGs must notice before the poller's reads time out.
	h := run(t, Config{Options: opts}, func(s *Subscriber) { s.pingInterval = 50 * time.Millisecond })
	checkResubscribes(t, srv, h, func() {
		br.blackhole.Store(true)
		h.rec.waitTrust(t, "suspend resume suspend")
		if h.sub.State().Subscribed {
			t.Error("still Subscribed after the link went silent")
		}
		br.blackhole.Store(false)
	})
	if !strings.Contains(h.logs.String(), "subscription silent") {
		t.Error("loss not attributed to silence in the log")
	}
}

// TestSuspendsBeforeAnyRedial checks that a lost connection reaches the
// Target before anything dials again: go-redis's PubSub would otherwise redial
// inside Receive, so a slow dial would delay the Suspend.
func TestSuspendsBeforeAnyRedial(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	br := newBridge(t, srv.Addr())
	h := run(t, Config{Options: &redis.Options{Addr: br.addr()}})
	h.waitReady(t)
	dialed := br.accepted.Load()
	var atSuspend atomic.Int64
	h.rec.mu.Lock()
	h.rec.onSuspend = func() { atSuspend.CompareAndSwap(0, br.accepted.Load()) }
	h.rec.mu.Unlock()

	if err := srv.Client(0).ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	h.rec.waitTrust(t, "suspend resume suspend resume")
	if got := atSuspend.Load(); got != dialed {
		t.Errorf("%d connections dialled before Suspend, want %d (none after the loss)", got, dialed)
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}})
	h.waitReady(t)
	if err := h.sub.Run(context.Background()); err == nil {
		t.Fatal("second Run returned nil")
	}
}

// TestStopLeavesNoGoroutines is not parallel: it counts goroutines, which
// only works while no other test is running.
func TestStopLeavesNoGoroutines(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	off := redistest.Start(t, redistest.Options{NotifyKeyspaceEvents: "none"})
	down := redistest.Start(t, redistest.Options{})
	down.Stop()

	for _, tc := range []struct {
		name  string
		addr  string
		until func(*Subscriber) bool
	}{
		{"subscribed", srv.Addr(), func(s *Subscriber) bool { return s.State().Subscribed }},
		{"caching disabled", off.Addr(), func(s *Subscriber) bool { return s.State().CachingDisabled != "" }},
		{"upstream down", down.Addr(), func(s *Subscriber) bool { return true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			rec := &recorder{}
			sub := New(Config{Options: &redis.Options{Addr: tc.addr}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, rec)
			sub.minBackoff = 10 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- sub.Run(ctx) }()
			waitUntil(t, tc.name, func() bool { return tc.until(sub) })
			if tc.name == "upstream down" {
				// Let it fail a few attempts so that it is cancelled mid-backoff or mid-dial.
				time.Sleep(50 * time.Millisecond)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run returned %v", err)
				}
			case <-time.After(waitLimit):
				t.Fatalf("Run did not return within %v of cancel", waitLimit)
			}
			if calls := rec.snapshot(); calls[len(calls)-1].op != "suspend" {
				t.Errorf("last Target call %v, want suspend", calls[len(calls)-1])
			}
			if st := sub.State(); st.Subscribed {
				t.Errorf("still Subscribed after Run returned")
			}
			waitUntil(t, fmt.Sprintf("goroutines back to %d", before), func() bool { return runtime.NumGoroutine() <= before })
		})
	}
}
