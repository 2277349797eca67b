package invalidation

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/redis/go-redis/v9"
)

var bg = context.Background()

func TestCanaryMeasuresLag(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}})
	h.waitReady(t)
	waitUntil(t, "three canaries back", func() bool { return h.sub.State().Canaries >= 3 })
	st := h.sub.State()
	if st.Lag <= 0 || st.Lag > waitLimit {
		t.Errorf("Lag = %v after %d canaries", st.Lag, st.Canaries)
	}
	t.Logf("canary lag %v", st.Lag)
	for _, c := range h.rec.snapshot() {
		if strings.HasPrefix(c.key, CanaryPrefix) {
			t.Fatalf("the canary's own key reached the Target: %v", c)
		}
	}
	// Each canary key expires by itself.
	keys, err := srv.Client(0).Keys(bg, CanaryPrefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if ttl := srv.Client(0).PTTL(bg, k).Val(); ttl <= 0 {
			t.Errorf("canary key %q has PTTL %v; it must expire", k, ttl)
		}
	}
}

// TestCanaryDetectsNotificationsSwitchedOff: the subscription stays healthy
// but publishes nothing once notify-keyspace-events is cleared; only the
// canary can tell. The next session re-checks the configuration: fixed when
// allowed, caching disabled otherwise.
func TestCanaryDetectsNotificationsSwitchedOff(t *testing.T) {
	t.Parallel()
	for _, allow := range []bool{true, false} {
		t.Run(fmt.Sprintf("config_set=%v", allow), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t, redistest.Options{})
			h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, AllowConfigSet: allow, CanaryTimeout: 200 * time.Millisecond})
			h.waitReady(t)
			c := srv.Client(0)
			if err := c.ConfigSet(bg, "notify-keyspace-events", "").Err(); err != nil {
				t.Fatal(err)
			}
			h.rec.waitTrust(t, "suspend resume suspend")
			if !allow {
				waitUntil(t, "CachingDisabled", func() bool { return h.sub.State().CachingDisabled != "" })
				if err := c.ConfigSet(bg, "notify-keyspace-events", "KA").Err(); err != nil {
					t.Fatal(err)
				}
			}
			h.rec.waitTrust(t, "suspend resume suspend resume")
			set(t, c, "after")
			h.rec.waitInvalidate(t, 0, "after")
			if !strings.Contains(h.logs.String(), "not notified within") {
				t.Error("the loss is not attributed to the canary in the log")
			}
		})
	}
}

// TestCanaryRefusedFallsBackToConfig: a server that refuses the canary's write
// (a read-only replica) is trusted on its verified configuration alone.
func TestCanaryRefusedFallsBackToConfig(t *testing.T) {
	t.Parallel()
	primary, replica := startReplica(t)
	h := run(t, Config{Options: &redis.Options{Addr: replica.Addr()}})
	h.waitReady(t)
	if !strings.Contains(h.logs.String(), "refused the canary") {
		t.Error("no warning that the canary was refused")
	}
	// Writes replicated from the primary are notified on the replica.
	set(t, primary.Client(0), "k")
	h.rec.waitInvalidate(t, 0, "k")
}

// startReplica starts a primary and a replica of it, in sync.
func startReplica(t *testing.T) (primary, replica *redistest.Server) {
	t.Helper()
	primary = redistest.Start(t, redistest.Options{Args: []string{"--repl-diskless-sync-delay", "0"}})
	replica = redistest.Start(t, redistest.Options{})
	host, port, _ := strings.Cut(primary.Addr(), ":")
	if err := replica.Client(0).SlaveOf(bg, host, port).Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "replica in sync", func() bool {
		return strings.Contains(replica.Client(0).Info(bg, "replication").Val(), "master_link_status:up")
	})
	return primary, replica
}

// TestPollFlushesOnSilentCommands: commands that change many keys without a
// per-key event flush the Target, wherever they run.
func TestPollFlushesOnSilentCommands(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}})
	h.waitReady(t)
	c := srv.Client(0)
	flush := call{op: "flushall"}
	waitUntil(t, "a few polls", func() bool { return h.sub.State().Canaries >= 5 })
	if n := h.rec.count(flush); n != 0 {
		t.Fatalf("%d flushes before any flush command", n)
	}
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"FLUSHDB", func() error { return c.FlushDB(bg).Err() }},
		{"FLUSHALL", func() error { return c.FlushAll(bg).Err() }},
		{"SWAPDB", func() error { return c.Do(bg, "SWAPDB", 0, 1).Err() }},
		{"FLUSHDB in MULTI", func() error {
			_, err := c.TxPipelined(bg, func(p redis.Pipeliner) error { p.FlushDB(bg); return nil })
			return err
		}},
		{"SWAPDB in a script", func() error {
			return c.Eval(bg, "return redis.call('SWAPDB', 0, 2)", nil).Err()
		}},
	} {
		before := h.rec.count(flush)
		if err := tc.run(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		start := time.Now()
		waitUntil(t, tc.name+" flushes", func() bool { return h.rec.count(flush) > before })
		t.Logf("%s: flushed after %v", tc.name, time.Since(start))
	}
	if got := h.rec.trust(); got != "suspend resume" {
		t.Errorf("trust sequence %q; a flush must not cost the subscription", got)
	}
}

// TestPollDetectsAnotherServer: failover behind one address. The
// subscription survives on the old server while the proxy's connections (here
// the control connection, killed as normal clients) reconnect to the new one,
// whose writes the subscription never sees. The canary is off: the poller
// alone must notice.
func TestPollDetectsAnotherServer(t *testing.T) {
	t.Parallel()
	oldSrv := redistest.Start(t, redistest.Options{})
	newSrv := redistest.Start(t, redistest.Options{})
	br := newBridge(t, oldSrv.Addr())
	h := run(t, Config{Options: &redis.Options{Addr: br.addr()}, CanaryInterval: -1})
	h.waitReady(t)
	to := newSrv.Addr()
	br.target.Store(&to)
	if err := oldSrv.Client(0).ClientKillByFilter(bg, "TYPE", "normal").Err(); err != nil {
		t.Fatal(err)
	}
	h.rec.waitTrust(t, "suspend resume suspend resume")
	if !strings.Contains(h.logs.String(), "another server") {
		t.Error("the loss is not attributed to the server change in the log")
	}
	set(t, newSrv.Client(0), "k")
	h.rec.waitInvalidate(t, 0, "k")
}

// TestPollDetectsReplicaResync: a replica cut off from its primary may, when
// the link comes back, reload the whole dataset without a single event.
func TestPollDetectsReplicaResync(t *testing.T) {
	t.Parallel()
	primary, replica := startReplica(t)
	h := run(t, Config{Options: &redis.Options{Addr: replica.Addr()}})
	h.waitReady(t)
	// The primary starts asking for a password the replica does not have,
	// and the replica's link is cut: it stays down until the password goes.
	p := primary.Client(0)
	if err := p.ConfigSet(bg, "requirepass", "secret").Err(); err != nil {
		t.Fatal(err)
	}
	if err := replica.Client(0).ClientKillByFilter(bg, "TYPE", "master").Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the link's loss seen", func() bool { return h.sub.State().Reconnects >= 1 })
	// A new stream is trusted while the link is down...
	waitUntil(t, "trusted again", func() bool { return h.sub.State().Subscribed })
	if err := p.Do(bg, "AUTH", "secret").Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.ConfigSet(bg, "requirepass", "").Err(); err != nil {
		t.Fatal(err)
	}
	// ...and lost again when it comes back.
	waitUntil(t, "the link's return seen", func() bool { return h.sub.State().Reconnects >= 2 })
	waitUntil(t, "trusted again", func() bool { return h.sub.State().Subscribed })
	if !strings.Contains(h.logs.String(), "master_link_status down") {
		t.Error("the loss is not attributed to the replica's link in the log")
	}
	set(t, p, "k")
	h.rec.waitInvalidate(t, 0, "k")
}

// TestOutputBufferLimitLoss: Redis drops a subscriber that reads too slowly
// (client-output-buffer-limit pubsub); the loss is seen like any other.
func TestOutputBufferLimitLoss(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{Args: []string{"--client-output-buffer-limit", "pubsub 64kb 64kb 0"}})
	// The test stalls the reader on purpose: neither silence nor a late
	// canary may end the session first.
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, CanaryTimeout: time.Minute}, func(s *Subscriber) {
		s.pingInterval = time.Minute
	})
	h.waitReady(t)
	c := srv.Client(0)
	stall := make(chan struct{})
	h.rec.mu.Lock()
	h.rec.onInvalidate = func() { <-stall }
	h.rec.mu.Unlock()
	long := strings.Repeat("x", 1024)
	for round := 0; ; round++ {
		_, err := c.Pipelined(bg, func(p redis.Pipeliner) error {
			for i := range 500 {
				p.Set(bg, fmt.Sprintf("%s:%d:%d", long, round, i), "v", 0)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(c.ClientList(bg).Val(), " flags=P ") {
			break // Redis dropped the subscriber
		}
		if round == 50 {
			t.Fatal("Redis never dropped the stalled subscriber")
		}
	}
	h.rec.mu.Lock()
	h.rec.onInvalidate = nil
	h.rec.mu.Unlock()
	close(stall)
	h.rec.waitTrust(t, "suspend resume suspend resume")
	set(t, c, "after")
	h.rec.waitInvalidate(t, 0, "after")
}

func TestTrackingInvalidatesEveryDB(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{NotifyKeyspaceEvents: "none"})
	// The poller is off: the flush must come from tracking's own message.
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, Mode: Tracking, PollInterval: -1})
	h.waitReady(t)
	set(t, srv.Client(0), "k")
	h.rec.waitInvalidate(t, everyDB, "k")
	set(t, srv.Client(3), "k3")
	h.rec.waitInvalidate(t, everyDB, "k3")

	flush := call{op: "flushall"}
	for _, c := range []*redis.Client{srv.Client(0), srv.Client(5)} {
		before := h.rec.count(flush)
		if err := c.FlushDB(bg).Err(); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "flush", func() bool { return h.rec.count(flush) > before })
	}
	if got, st := h.rec.trust(), h.sub.State(); got != "suspend resume" || st.Reconnects != 0 || st.Flushes != 2 {
		t.Errorf("trust %q, state %+v; want the flush messages handled on the same subscription", got, st)
	}
	if got := notifyConfig(t, srv.Client(0)); got != "" {
		t.Errorf("tracking mode changed notify-keyspace-events to %q", got)
	}
}

func TestTrackingPrefixes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, Mode: Tracking, Prefixes: []string{"user:", "user:vip:", "session:"}})
	h.waitReady(t)
	c := srv.Client(0)
	for _, k := range []string{"other:1", "user:vip:1", "user:2", "session:1"} {
		set(t, c, k)
	}
	h.rec.waitInvalidate(t, everyDB, "session:1") // messages arrive in order: the rest came first
	var got []string
	for _, cl := range h.rec.snapshot() {
		if cl.op == "invalidate" {
			got = append(got, cl.key)
		}
	}
	if want := []string{"user:vip:1", "user:2", "session:1"}; !slices.Equal(got, want) {
		t.Errorf("invalidated %q, want %q", got, want)
	}
}

func TestTrackedPrefixes(t *testing.T) {
	const canary = CanaryPrefix + "id:"
	for _, tc := range []struct {
		cached, want []string
	}{
		{nil, nil},
		{[]string{"a:", ""}, nil},
		{[]string{}, []string{canary}},
		{[]string{"b:", "a:", "a:b:", "a:", "ab"}, []string{canary, "a:", "ab", "b:"}},
		{[]string{"__"}, []string{"__"}}, // covers the canary's
		{[]string{canary + "x"}, []string{canary}},
	} {
		if got := trackedPrefixes(tc.cached, canary); !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("trackedPrefixes(%q) = %q, want %q", tc.cached, got, tc.want)
		}
	}
}

// TestTrackingRefused: a user that may not run CLIENT TRACKING gets caching
// disabled with the reason, and no stream.
func TestTrackingRefused(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	err := srv.Client(0).Do(bg, "ACL", "SETUSER", "proxy", "on", ">pw", "~*", "&*", "+@all", "-client|tracking").Err()
	if err != nil {
		t.Fatal(err)
	}
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr(), Username: "proxy", Password: "pw"}, Mode: Tracking})
	waitUntil(t, "CachingDisabled", func() bool { return h.sub.State().CachingDisabled != "" })
	if reason := h.sub.State().CachingDisabled; !strings.Contains(reason, "CLIENT TRACKING refused") {
		t.Errorf("CachingDisabled = %q", reason)
	}
	if got := h.rec.trust(); got != "suspend" {
		t.Errorf("trust %q, want %q", got, "suspend")
	}
}

var trackingClient = regexp.MustCompile(`(?m)^id=(\d+) .* redir=(\d+) `)

// TestTrackingConnectionLoss: tracking lives on its own connection, and dies
// with it without a word to the subscription: that loss must be seen too.
func TestTrackingConnectionLoss(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	h := run(t, Config{Options: &redis.Options{Addr: srv.Addr()}, Mode: Tracking, CanaryInterval: -1, PollInterval: -1})
	h.waitReady(t)
	c := srv.Client(0)
	m := trackingClient.FindStringSubmatch(c.ClientList(bg).Val())
	if m == nil {
		t.Fatalf("no tracking client in CLIENT LIST:\n%s", c.ClientList(bg).Val())
	}
	if err := c.Do(bg, "CLIENT", "KILL", "ID", m[1]).Err(); err != nil {
		t.Fatal(err)
	}
	h.rec.waitTrust(t, "suspend resume suspend resume")
	set(t, c, "after")
	h.rec.waitInvalidate(t, everyDB, "after")
}

func TestParseInfo(t *testing.T) {
	var st upstreamState
	parseInfo("# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\n", &st)
	parseInfo("# Replication\r\nrole:slave\r\nmaster_link_status:up\r\nmaster_replid:r1\r\nmaster_replid2:0000\r\n", &st)
	parseInfo("# Commandstats\r\ncmdstat_get:calls=9,usec=1\r\ncmdstat_flushdb:calls=3,usec=5,usec_per_call=1.67,rejected_calls=0,failed_calls=0\r\n"+
		"cmdstat_swapdb:calls=x\r\ncmdstat_config|get:calls=2,usec=1\r\n", &st)
	want := upstreamState{id: identity{"abc", "slave", "r1", "up"}, calls: [len(silentCommands)]int64{3, 0, -1, 0}}
	if st != want {
		t.Errorf("parseInfo = %+v, want %+v", st, want)
	}
}
