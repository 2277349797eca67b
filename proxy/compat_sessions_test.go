package proxy

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// upstreamClients returns the upstream's CLIENT LIST lines of the proxy's
// connections that match every field given (e.g. "cmd=blpop").
func (e *env) upstreamClients(fields ...string) []string {
	e.t.Helper()
	list, err := e.direct.ClientList(bg).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
next:
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, " name=cacheproxy ") {
			continue
		}
		for _, f := range fields {
			if !strings.Contains(" "+line+" ", " "+f+" ") {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// TestBlockedClientLeavingFreesUpstream: a client blocked in BLPOP, XREAD
// BLOCK or BLMOVE that goes away (closes its socket, or is killed through the
// proxy) must not leave its upstream connection blocked.
func TestBlockedClientLeavingFreesUpstream(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	for _, tc := range []struct{ cmd, upstream string }{
		{"BLPOP q 0\r\n", "cmd=blpop"},
		{"XREAD BLOCK 0 STREAMS s $\r\n", "cmd=xread"},
		{"BLMOVE a b LEFT LEFT 0\r\n", "cmd=blmove"},
	} {
		for _, how := range []string{"closes", "killed"} {
			r := dialRaw(t, e.addr)
			if _, err := r.c.Write([]byte(tc.cmd + "GET after\r\n")); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, tc.cmd+" blocked upstream", func() bool {
				return len(e.upstreamClients(tc.upstream, "flags=b")) == 1
			})
			if how == "closes" {
				r.c.Close()
			} else {
				killer := e.client(0)
				list := killer.ClientList(bg).Val()
				var id int64
				for _, line := range strings.Split(list, "\n") {
					if strings.Contains(line, "flags=b") {
						fmt.Sscanf(line, "id=%d", &id)
					}
				}
				if n, err := killer.ClientKillByFilter(bg, "ID", fmt.Sprint(id)).Result(); err != nil || n != 1 {
					t.Fatalf("CLIENT KILL ID %d of the blocked client = %d, %v\n%s", id, n, err, list)
				}
			}
			eventually(t, 5*time.Second, tc.cmd+" client "+how+": upstream connection gone", func() bool {
				return len(e.upstreamClients(tc.upstream)) == 0
			})
		}
	}
}

// TestBlockedClientKeepsItsPipeline: commands pipelined behind a blocking
// command are read while it blocks (so that a hang-up is seen) and still run
// after it, in order.
func TestBlockedClientKeepsItsPipeline(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	r := dialRaw(t, e.addr)
	var req strings.Builder
	req.WriteString("BLPOP jobs 0\r\n")
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&req, "INCR n\r\n")
	}
	if _, err := r.c.Write([]byte(req.String())); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "BLPOP blocked upstream", func() bool {
		return len(e.upstreamClients("cmd=blpop")) == 1
	})
	if n := e.direct.Get(bg, "n").Val(); n != "" {
		t.Fatalf("a command pipelined behind BLPOP ran before it: n = %q", n)
	}
	e.direct.RPush(bg, "jobs", "j")
	got := r.roundTrip("", 2001)
	if !strings.HasPrefix(got, "*2\r\n$4\r\njobs\r\n$1\r\nj\r\n:1\r\n:2\r\n") || !strings.HasSuffix(got, ":2000\r\n") {
		t.Fatalf("replies start %q, end %q", got[:min(len(got), 60)], got[max(0, len(got)-20):])
	}
}

// TestPubSubThroughProxy: messages reach a subscriber in order and byte for
// byte, large ones included, while other clients go on; a subscriber that
// leaves, or is killed, takes its upstream connection with it.
func TestPubSubThroughProxy(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	sub := e.client(0).Subscribe(bg, "news", "big")
	if _, err := sub.Receive(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Receive(bg); err != nil {
		t.Fatal(err)
	}
	pub, other := e.client(0), e.client(0)
	const n = 500
	big := strings.Repeat("x\x00\r\n", 1<<18) // 1 MiB
	go func() {
		for i := 0; i < n; i++ {
			pub.Publish(bg, "news", fmt.Sprint(i))
			if i == n/2 {
				pub.Publish(bg, "big", big)
			}
		}
	}()
	sawBig := false
	for i := 0; i < n; {
		m, err := sub.ReceiveMessage(bg)
		if err != nil {
			t.Fatal(err)
		}
		if m.Channel == "big" {
			if m.Payload != big {
				t.Fatalf("the 1 MiB message arrived as %d bytes", len(m.Payload))
			}
			sawBig = true
			continue
		}
		if m.Payload != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, m.Payload)
		}
		if err := other.Set(bg, "k", i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		i++
	}
	if !sawBig {
		t.Fatal("no big message")
	}
	if got := len(e.upstreamClients("sub=2")); got != 1 {
		t.Fatalf("%d upstream connections subscribed to 2 channels, want 1", got)
	}
	sub.Close()
	eventually(t, 5*time.Second, "subscriber's upstream connection gone", func() bool {
		return len(e.upstreamClients("sub=2")) == 0
	})

	// A client that unsubscribes gives its upstream connection up once it
	// runs another command, and can subscribe again.
	r := dialRaw(t, e.addr)
	r.roundTrip("SET k0 warm\r\n", 1) // the shared connection it uses exists
	conns := len(e.upstreamClients())
	got := r.roundTrip(crlf("SUBSCRIBE k0\nUNSUBSCRIBE\nSET k0 v\nGET k0\n"), 4)
	if want := crlf("*3\n$9\nsubscribe\n$2\nk0\n:1\n*3\n$11\nunsubscribe\n$2\nk0\n:0\n+OK\n$1\nv\n"); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	eventually(t, 5*time.Second, "the unsubscribed client's upstream connection closed", func() bool {
		return len(e.upstreamClients()) == conns
	})
	if got := r.roundTrip("SUBSCRIBE k0\r\n", 1); got != crlf("*3\n$9\nsubscribe\n$2\nk0\n:1\n") {
		t.Fatalf("SUBSCRIBE again: %q", got)
	}
	if n := len(e.upstreamClients()); n != conns+1 {
		t.Fatalf("%d upstream connections, want the %d there were and one subscribed", n, conns)
	}

	// Killed through the proxy.
	r = dialRaw(t, e.addr)
	if got := r.roundTrip("SUBSCRIBE k1\r\n", 1); !strings.Contains(got, "subscribe") {
		t.Fatalf("SUBSCRIBE = %q", got)
	}
	if got := r.roundTrip("PSUBSCRIBE p*\r\nUNSUBSCRIBE k1\r\n", 2); !strings.Contains(got, "psubscribe") || !strings.Contains(got, "unsubscribe") {
		t.Fatalf("PSUBSCRIBE, UNSUBSCRIBE = %q", got)
	}
	list := other.ClientList(bg).Val()
	if !strings.Contains(list, "flags=P") || !strings.Contains(list, " sub=0 psub=1 ") {
		t.Fatalf("CLIENT LIST does not show the subscriber's pattern alone:\n%s", list)
	}
	if n := other.ClientKillByFilter(bg, "TYPE", "pubsub").Val(); n != 2 { // k0's and k1's
		t.Fatalf("CLIENT KILL TYPE pubsub = %d", n)
	}
	_ = r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Read(make([]byte, 1)); err == nil {
		t.Fatal("killed subscriber still connected")
	}
	eventually(t, 5*time.Second, "killed subscriber's upstream connection gone", func() bool {
		return len(e.upstreamClients("sub=1")) == 0
	})
}

// TestSubscribeInsideMultiIsRefused: Redis would subscribe the connection at
// EXEC, which through the proxy would be the upstream's; the proxy refuses it
// and the transaction aborts as after any error while queueing.
func TestSubscribeInsideMultiIsRefused(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	r := dialRaw(t, e.addr)
	got := r.roundTrip(crlf("MULTI\nSET k v\nSUBSCRIBE ch\nCLIENT SETNAME x\nEXEC\nGET k\nPING\n"), 7)
	want := crlf("+OK\n+QUEUED\n" +
		"-ERR cacheproxy: SUBSCRIBE inside MULTI is not supported through the proxy\n" +
		"-ERR cacheproxy: CLIENT inside MULTI is not supported through the proxy\n" +
		"-EXECABORT Transaction discarded because of previous errors.\n$-1\n+PONG\n")
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// TestDedicatedConnectionsAreReused: a transaction or blocking command per
// request reuses upstream connections that ended clean, and never one that
// could carry state into the next client's transaction.
func TestDedicatedConnectionsAreReused(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	c := e.client(0)
	dials := func() int {
		n, _ := strconv.Atoi(e.direct.InfoMap(bg, "stats").Item("Stats", "total_connections_received"))
		return n
	}
	before := dials()
	for i := 0; i < 100; i++ {
		if _, err := c.TxPipelined(bg, func(p redis.Pipeliner) error {
			p.Incr(bg, "n")
			p.Expire(bg, "n", time.Minute)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		c.RPush(bg, "jobs", "j")
		if err := c.BLPop(bg, time.Second, "jobs").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n := dials() - before; n > 10 {
		t.Fatalf("100 transactions and blocking commands dialled %d upstream connections", n)
	}
	// A connection whose database a transaction changed must not serve the
	// next transaction of a client in another database.
	a, b := dialRaw(t, e.addr), e.client(0)
	b.Set(bg, "where", "db0", 0)
	for i := 0; i < 10; i++ {
		for _, steps := range []string{
			"MULTI\nSELECT 2\nSET where db2\nEXEC\nSELECT 0\n", // dirty: EXEC moved it to db 2
			"WATCH where\nSELECT 3\nUNWATCH\nSELECT 0\n",       // clean, now in db 3
		} {
			if got := a.roundTrip(crlf(steps), strings.Count(steps, "\n")); strings.Contains(got, "-") {
				t.Fatalf("round %d: %q", i, got)
			}
			var get *redis.StringCmd
			if _, err := b.TxPipelined(bg, func(p redis.Pipeliner) error {
				get = p.Get(bg, "where")
				return nil
			}); err != nil {
				t.Fatalf("round %d, after %q: %v", i, steps, err)
			}
			if get.Val() != "db0" {
				t.Fatalf("round %d, after %q: a transaction in db 0 read %q", i, steps, get.Val())
			}
		}
	}
}

// TestAuthThroughGoRedis: go-redis opens with HELLO 3 AUTH, falls back to
// AUTH after NOPROTO, and works; a wrong password fails the connection.
func TestAuthThroughGoRedis(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{options: func(o *Options) {
		o.RequirePass = "secret"
		o.Users = []User{{Name: "app", Password: "app-pw"}}
	}})
	for _, o := range []*redis.Options{
		{Password: "secret"},
		{Username: "app", Password: "app-pw"},
		{Username: "default", Password: "secret", DB: 2},
	} {
		o.Addr, o.MaxRetries = e.addr, -1
		c := redis.NewClient(o)
		if err := c.Set(bg, "k", "v", 0).Err(); err != nil {
			t.Fatalf("%s: %v", o.Username, err)
		}
		if v := c.Get(bg, "k").Val(); v != "v" {
			t.Fatalf("%s: GET = %q", o.Username, v)
		}
		c.Close()
	}
	for _, o := range []*redis.Options{{}, {Password: "wrong"}, {Username: "app", Password: "secret"}} {
		o.Addr, o.MaxRetries = e.addr, -1
		c := redis.NewClient(o)
		err := c.Get(bg, "k").Err()
		c.Close()
		if err == nil || !(strings.HasPrefix(err.Error(), "NOAUTH") || strings.HasPrefix(err.Error(), "WRONGPASS")) {
			t.Fatalf("user %q password %q: GET error %v", o.Username, o.Password, err)
		}
	}
}

// TestClientListAndKill: CLIENT LIST describes the proxy's clients, and KILL
// closes the ones it names.
func TestClientListAndKill(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	a := redis.NewClient(&redis.Options{Addr: e.addr, ClientName: "alpha", DB: 3, PoolSize: 1, MaxRetries: -1})
	defer a.Close()
	b := dialRaw(t, e.addr)
	if got := b.roundTrip(crlf("CLIENT SETNAME beta\nMULTI\n"), 2); got != crlf("+OK\n+OK\n") {
		t.Fatalf("b: %q", got)
	}
	a.Ping(bg)
	list := a.ClientList(bg).Val()
	lines := strings.Split(strings.TrimSuffix(list, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("CLIENT LIST has %d lines:\n%s", len(lines), list)
	}
	sort.Strings(lines) // "id=1 ... name=beta" first
	if !strings.Contains(lines[1], " name=alpha ") || !strings.Contains(lines[1], " db=3 ") || !strings.Contains(lines[1], " flags=N ") {
		t.Fatalf("alpha: %s", lines[1])
	}
	if !strings.Contains(lines[0], " name=beta ") || !strings.Contains(lines[0], " flags=x ") || !strings.Contains(lines[0], " multi=0 ") {
		t.Fatalf("beta: %s", lines[0])
	}
	info := a.ClientInfo(bg).Val()
	if info == nil || info.Name != "alpha" || info.DB != 3 {
		t.Fatalf("CLIENT INFO = %+v", info)
	}
	addr := b.c.LocalAddr().String()
	if n := a.ClientKillByFilter(bg, "ADDR", addr, "SKIPME", "yes").Val(); n != 1 {
		t.Fatalf("CLIENT KILL ADDR %s = %d", addr, n)
	}
	_ = b.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := b.c.Read(make([]byte, 1)); err == nil {
		t.Fatal("killed client still connected")
	}
	// Killing oneself answers first, then closes.
	r := dialRaw(t, e.addr)
	if got := r.roundTrip(crlf("CLIENT KILL SKIPME no ID 999999\nCLIENT KILL TYPE normal SKIPME no\nPING\n"), 3); got != crlf(":0\n:2\n") {
		t.Fatalf("self kill: %q", got)
	}
	eventually(t, 5*time.Second, "every client gone", func() bool { return e.srv.clients.Load() == 0 })
}

// TestInfoHasProxySection: INFO adds the proxy's own figures to the
// upstream's, when the defaults or "proxy" are asked for.
func TestInfoHasProxySection(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	e.waitSubscribed()
	c := e.client(0)
	c.Set(bg, "k", "v", 0)
	eventually(t, 5*time.Second, "a GET from the L1", func() bool {
		c.Get(bg, "k")
		return strings.Contains(c.Info(bg, "proxy").Val(), "proxy_l1_hits:1")
	})
	all := c.Info(bg).Val()
	for _, want := range []string{"# Server\r\n", "# Keyspace\r\n", "\r\n\r\n# Proxy\r\nproxy_connected_clients:1\r\n", "proxy_caching_enabled:1\r\n", "proxy_l1_entries:1\r\n"} {
		if !strings.Contains(all, want) {
			t.Fatalf("INFO lacks %q:\n%s", want, all)
		}
	}
	if s := c.Info(bg, "server").Val(); strings.Contains(s, "# Proxy") || !strings.HasPrefix(s, "# Server") {
		t.Fatalf("INFO server:\n%s", s)
	}
	if s := c.Info(bg, "proxy").Val(); !strings.HasPrefix(s, "# Proxy\r\n") {
		t.Fatalf("INFO proxy:\n%s", s)
	}
}

// TestConfigSetKeepsNotifications: CONFIG SET through the proxy cannot turn
// off the notifications the L1 needs.
func TestConfigSetKeepsNotifications(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	c := e.client(0)
	for _, v := range []string{"", "Kg", "KEl", "E$lshzxetg"} {
		err := c.ConfigSet(bg, "notify-keyspace-events", v).Err()
		if err == nil || !strings.Contains(err.Error(), "cacheproxy: notify-keyspace-events") {
			t.Fatalf("CONFIG SET notify-keyspace-events %q: %v", v, err)
		}
	}
	if got := e.direct.ConfigGet(bg, "notify-keyspace-events").Val()["notify-keyspace-events"]; got != "AKE" {
		t.Fatalf("notify-keyspace-events changed to %q", got)
	}
	for _, v := range []string{"KA", "KEA", "Kg$lshzxet", "AKEm"} {
		if err := c.ConfigSet(bg, "notify-keyspace-events", v).Err(); err != nil {
			t.Fatalf("CONFIG SET notify-keyspace-events %q: %v", v, err)
		}
	}
}

// TestCloseEndsEverySession: Close returns with clients subscribed, blocked
// and in a transaction, and their goroutines end.
func TestCloseEndsEverySession(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	var wg sync.WaitGroup
	for _, req := range []string{"SUBSCRIBE a\r\n", "BLPOP q 0\r\n", "MULTI\r\n", "SUBSCRIBE b\r\nUNSUBSCRIBE\r\nBLPOP q 0\r\n"} {
		r := dialRaw(t, e.addr)
		if _, err := r.c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 1024)
			for {
				if _, err := r.c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	eventually(t, 5*time.Second, "both BLPOPs blocked", func() bool {
		return len(e.upstreamClients("cmd=blpop")) == 2
	})
	done := make(chan struct{})
	go func() { e.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	wg.Wait()
	// redcon closes a socket before it hands the connection back, so the
	// count may drop just after the client has seen its end.
	eventually(t, 5*time.Second, "every client let go after Close", func() bool {
		return e.srv.clients.Load() == 0
	})
}

// BenchmarkRateLimiterTx is a rate limiter's transaction per request through
// the proxy; with a dedicated connection dialled per transaction it costs a
// connect and handshake more than direct Redis.
func BenchmarkRateLimiterTx(b *testing.B) {
	e := startEnv(b, envOptions{})
	for _, side := range []struct {
		name string
		c    *redis.Client
	}{{"direct", e.redis.Client(0)}, {"proxy", e.client(0)}} {
		b.Run(side.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				now := float64(i)
				if _, err := side.c.TxPipelined(bg, func(p redis.Pipeliner) error {
					p.ZRemRangeByScore(bg, "rl:user", "-inf", fmt.Sprint(now-100))
					p.ZAdd(bg, "rl:user", redis.Z{Score: now, Member: i})
					p.ZCard(bg, "rl:user")
					p.Expire(bg, "rl:user", time.Minute)
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
