package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
	"github.com/cacheproxy/cacheproxy/resp"
)

var bg = context.Background()

// runAsMain makes the test binary run main instead of the tests, so that tests
// can send real signals to a real process.
const runAsMain = "CACHEPROXY_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// proc is a proxy run by run() in this process, from a config file the test
// can rewrite.
type proc struct {
	t               *testing.T
	redis           *redistest.Server
	upstream        string // the upstream URL; "" means redis's, database 0
	listen, metrics string
	file            string
	logs            *syncbuf.Buffer
	cancel          context.CancelFunc
	done            chan error
}

// writeConfig writes body after the addresses of p.
func (p *proc) writeConfig(body string) {
	p.t.Helper()
	up := p.upstream
	if up == "" {
		up = p.redis.URL(0)
	}
	head := fmt.Sprintf("listen: %s\nmetrics: %s\nupstream: %s\n", p.listen, p.metrics, up)
	// Write then rename, as editors and ConfigMap updates do, so that a poll
	// never reads half a file.
	tmp := p.file + ".tmp"
	if err := os.WriteFile(tmp, []byte(head+body), 0o644); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp, p.file); err != nil {
		p.t.Fatal(err)
	}
}

func startProc(t *testing.T, r *redistest.Server, body string) *proc {
	t.Helper()
	return startProcOn(t, r.URL(0), body)
}

// startProcOn is startProc for any upstream URL.
func startProcOn(t *testing.T, upstream, body string) *proc {
	t.Helper()
	p := &proc{t: t, upstream: upstream, listen: freeAddr(t), metrics: freeAddr(t),
		file: filepath.Join(t.TempDir(), "cacheproxy.yaml"), logs: &syncbuf.Buffer{}, done: make(chan error, 1)}
	p.writeConfig(body)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- run(ctx, []string{"--config", p.file}, p.logs, nil) }()
	t.Cleanup(func() {
		if p.cancel != nil {
			p.stop()
		}
	})
	waitReady(t, p.metrics, p.logs)
	return p
}

// stop cancels run's context and returns what run returned.
func (p *proc) stop() error {
	p.t.Helper()
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		return err
	case <-time.After(20 * time.Second):
		p.t.Fatalf("run did not return within 20s of the cancel; log:\n%s", p.logs)
		return nil
	}
}

// waitFor polls until cond holds, failing the test after bound.
func waitFor(t *testing.T, bound time.Duration, what string, logs *syncbuf.Buffer, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; log:\n%s", what, bound, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readyz(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func waitReady(t *testing.T, metrics string, logs *syncbuf.Buffer) {
	t.Helper()
	waitFor(t, 15*time.Second, "/readyz 200", logs, func() bool {
		code, _ := readyz(metrics)
		return code == http.StatusOK
	})
}

// getCalls is how many GETs Redis itself has run.
func getCalls(t *testing.T, r *redistest.Server) int {
	t.Helper()
	info, err := r.Client(0).Info(bg, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_get:calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// cached reports whether reading key through c comes to be answered without
// Redis within a few seconds (a fill is stored a moment after its reply).
func cached(t *testing.T, r *redistest.Server, c *redis.Client, key string) bool {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		before := getCalls(t, r)
		if err := c.Get(bg, key).Err(); err != nil {
			t.Fatalf("GET %s: %v", key, err)
		}
		if getCalls(t, r) == before {
			return true
		}
	}
	return false
}

func policyTTL(t *testing.T, c *redis.Client, key string) string {
	t.Helper()
	v, err := c.Do(bg, "CACHEPROXY", "POLICY", key).Result()
	if err != nil {
		t.Fatal(err)
	}
	ttl, ok := asMap(v)["ttl"].(string)
	if !ok {
		t.Fatalf("POLICY reply %v has no ttl", v)
	}
	return ttl
}

// asMap reads a CACHEPROXY reply: a map in RESP3, pairs in RESP2.
func asMap(v any) map[string]any {
	m := map[string]any{}
	switch v := v.(type) {
	case map[any]any:
		for k, x := range v {
			m[k.(string)] = x
		}
	case []any:
		for i := 0; i+1 < len(v); i += 2 {
			m[v[i].(string)] = v[i+1]
		}
	}
	return m
}

// TestReloadOnFileChange: a changed file is applied within config_poll; the
// entries of the changed policy go and the others stay; a bad file is
// rejected with its precise error and the running policies stay; settings a
// reload cannot change are named.
func TestReloadOnFileChange(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	r.Client(0).Set(bg, "a:1", "x", 0)
	r.Client(0).Set(bg, "b:1", "x", 0)
	p := startProc(t, r, `
config_poll: 100ms
policies:
  - {prefix: "a:", ttl: 1m}
  - {prefix: "b:", ttl: 1m}
`)
	c := redis.NewClient(&redis.Options{Addr: p.listen, MaxRetries: -1})
	defer c.Close()
	for _, k := range []string{"a:1", "b:1"} {
		if !cached(t, r, c, k) {
			t.Fatalf("%s is not cached before the reload", k)
		}
	}

	p.writeConfig(`
config_poll: 100ms
policies:
  - {prefix: "a:", ttl: 1m}
  - {prefix: "b:", ttl: 2m}
`)
	waitFor(t, 10*time.Second, "the reload", p.logs, func() bool { return policyTTL(t, c, "b:1") == "2m0s" })
	if !strings.Contains(p.logs.String(), `msg="configuration reloaded" trigger="file changed" policies=2 dropped_entries_of="\"b:\""`) {
		t.Errorf("the reload is not logged as expected:\n%s", p.logs)
	}
	before := getCalls(t, r)
	c.Get(bg, "a:1")
	if getCalls(t, r) != before {
		t.Error("a:'s entry was dropped though its policy did not change")
	}
	c.Get(bg, "b:1")
	if getCalls(t, r) != before+1 {
		t.Error("b:'s entry survived the change of its policy")
	}

	// A bad file: rejected, precisely, and the running policies stay.
	p.writeConfig(`
config_poll: 100ms
policies:
  - {prefix: "a:", ttl: 1m}
  - {prefix: "b:", ttl: soon}
`)
	want := `policies[1].ttl: \"soon\" is not a duration`
	waitFor(t, 10*time.Second, "the rejection", p.logs, func() bool { return strings.Contains(p.logs.String(), want) })
	if !strings.Contains(p.logs.String(), `level=ERROR msg="configuration reload rejected; the running policies stay"`) {
		t.Errorf("rejection not logged as an error:\n%s", p.logs)
	}
	if got := policyTTL(t, c, "b:1"); got != "2m0s" {
		t.Errorf("after a rejected file b:'s ttl is %s, want the running 2m0s", got)
	}
	if !cached(t, r, c, "a:1") {
		t.Error("a rejected file stopped caching")
	}
	if body := scrape(t, p.metrics); !strings.Contains(body, "cacheproxy_config_last_reload_successful 0") ||
		!strings.Contains(body, `cacheproxy_config_reloads_total{result="failure"} 1`) {
		t.Error("the rejection is not in the metrics")
	}

	// A setting only a restart applies is named, and the policies still apply.
	p.writeConfig(`
config_poll: 100ms
upstream_conns: 3
policies:
  - {prefix: "a:", ttl: 3m}
  - {prefix: "b:", ttl: 2m}
`)
	waitFor(t, 10*time.Second, "the third reload", p.logs, func() bool { return policyTTL(t, c, "a:1") == "3m0s" })
	waitFor(t, 5*time.Second, "the restart warning", p.logs, func() bool {
		return strings.Contains(p.logs.String(), "take effect only after a restart; they are ignored until then\" settings=upstream_conns")
	})
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestSignals runs the proxy as a process: SIGHUP reloads the file, SIGTERM
// drains and exits 0.
func TestSignals(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := &proc{t: t, redis: r, listen: freeAddr(t), metrics: freeAddr(t), file: filepath.Join(t.TempDir(), "c.yaml"), logs: &syncbuf.Buffer{}}
	p.writeConfig("config_poll: 0s\npolicies:\n  - {prefix: \"a:\", ttl: 1m}\n")
	cmd := exec.Command(os.Args[0], "--config", p.file)
	cmd.Env = append(os.Environ(), runAsMain+"=1")
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // fails harmlessly once it has exited
		<-exited
	})
	waitReady(t, p.metrics, p.logs)
	c := redis.NewClient(&redis.Options{Addr: p.listen, MaxRetries: -1})
	defer c.Close()

	p.writeConfig("config_poll: 0s\npolicies:\n  - {prefix: \"a:\", ttl: 7m}\n")
	if got := policyTTL(t, c, "a:1"); got != "1m0s" {
		t.Fatalf("without polling the file applied itself (ttl %s)", got)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the SIGHUP reload", p.logs, func() bool { return policyTTL(t, c, "a:1") == "7m0s" })

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("after SIGTERM: %v (want exit status 0); log:\n%s", waitErr, p.logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20s of SIGTERM; log:\n%s", p.logs)
	}
	if !strings.Contains(p.logs.String(), "every client drained") {
		t.Errorf("the drain is not logged:\n%s", p.logs)
	}
}

// TestReadiness: /readyz follows the upstream and the invalidation stream, and
// the proxy serves meanwhile; /healthz stays up.
func TestReadiness(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := startProc(t, r, "policies:\n  - {prefix: \"\", ttl: 1m}\n")
	c := redis.NewClient(&redis.Options{Addr: p.listen, MaxRetries: -1})
	defer c.Close()
	ready := func() bool { code, _ := readyz(p.metrics); return code == http.StatusOK }

	// The stream goes away while the upstream stays: Redis refuses the
	// subscriber's (P)SUBSCRIBE, and its connection is cut.
	admin := r.Client(0)
	if err := admin.Do(bg, "ACL", "SETUSER", "default", "-psubscribe", "-subscribe", "-client|tracking").Err(); err != nil {
		t.Fatal(err)
	}
	admin.Do(bg, "CLIENT", "KILL", "TYPE", "pubsub")
	waitFor(t, 15*time.Second, "not ready without a stream", p.logs, func() bool {
		code, body := readyz(p.metrics)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "invalidation:") && !strings.Contains(body, "upstream:")
	})
	c.Set(bg, "k", "v1", 0)
	if v, err := c.Get(bg, "k").Result(); err != nil || v != "v1" {
		t.Fatalf("not ready, the proxy must still serve: GET = %q, %v", v, err)
	}
	if err := admin.Do(bg, "ACL", "SETUSER", "default", "+psubscribe", "+subscribe", "+client|tracking").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "ready once the stream is back", p.logs, ready)

	// The upstream goes away, and comes back.
	r.Stop()
	waitFor(t, 15*time.Second, "not ready without the upstream", p.logs, func() bool {
		code, body := readyz(p.metrics)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "upstream:")
	})
	resp, err := http.Get("http://" + p.metrics + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz without the upstream: %v %v", resp, err)
	}
	resp.Body.Close()
	r.Restart()
	waitFor(t, 30*time.Second, "ready once the upstream is back", p.logs, ready)
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownUnderPipelinedLoad: clients pipeline INCRs without waiting for
// replies while the proxy is stopped. Each client must have received only
// whole replies, in order, and exactly as many as Redis ran: a command is
// either answered or never run, and the connection closes between replies.
func TestShutdownUnderPipelinedLoad(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := startProc(t, r, "shutdown_grace: 10s\n")
	const clients, batch = 8, 50
	var req []byte
	for range batch {
		req = append(req, "*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n"...)
	}
	type result struct {
		got []byte
		err error
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	started := make(chan struct{}, clients)
	for i := range clients {
		conn, err := net.Dial("tcp", p.listen)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		key := []byte("ctr" + strconv.Itoa(i)) // each client its own counter
		mine := []byte(strings.ReplaceAll(string(req), "$3\r\nctr\r\n", "$"+strconv.Itoa(len(key))+"\r\n"+string(key)+"\r\n"))
		wg.Add(2)
		go func() { // writer: batches back to back, bounded
			defer wg.Done()
			for n := 0; n < 2000; n++ {
				if _, err := conn.Write(mine); err != nil {
					return
				}
			}
		}()
		go func() { // reader: everything until the proxy closes
			defer wg.Done()
			_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
			// A connection still in the listener's backlog when the listener
			// closes is reset, by any server: the stop waits for a reply on
			// every connection, which proves the proxy accepted it.
			first := make([]byte, 1)
			if _, err := io.ReadFull(conn, first); err != nil {
				results[i].err = err
				started <- struct{}{}
				return
			}
			started <- struct{}{}
			rest, err := io.ReadAll(conn)
			results[i].got, results[i].err = append(first, rest...), err
		}()
	}
	for range clients {
		<-started
	}
	if err := p.stop(); err != nil {
		t.Fatalf("run after cancel under load: %v", err)
	}
	wg.Wait()
	total := 0
	for i, res := range results {
		if res.err != nil {
			t.Errorf("client %d: %v after %d bytes", i, res.err, len(res.got))
		}
		n, rest := 0, res.got
		for len(rest) > 0 {
			l, err := resp.ReplyLen(rest)
			if err != nil || l == 0 {
				t.Fatalf("client %d: reply %d cut or malformed: %q", i, n+1, rest[:min(len(rest), 40)])
			}
			n++
			if want := ":" + strconv.Itoa(n) + "\r\n"; string(rest[:l]) != want {
				t.Fatalf("client %d: reply %d is %q, want %q", i, n, rest[:l], want)
			}
			rest = rest[l:]
		}
		ran, _ := r.Client(0).Get(bg, "ctr"+strconv.Itoa(i)).Int()
		if ran != n {
			t.Errorf("client %d: Redis ran %d INCRs, the client got %d replies", i, ran, n)
		}
		total += n
	}
	t.Logf("%d replies before the drain closed %d pipelining clients", total, clients)
	if !strings.Contains(p.logs.String(), "every client drained") {
		t.Errorf("the drain is not logged:\n%s", p.logs)
	}
}

// TestPoolIsolation: a flood of entries under one pool evicts nothing of
// another pool's.
func TestPoolIsolation(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	direct := r.Client(0)
	const sessions = 50
	value := strings.Repeat("s", 200)
	for i := range sessions {
		direct.Set(bg, "session:"+strconv.Itoa(i), value, 0)
	}
	big := strings.Repeat("q", 16<<10)
	for i := range 2000 { // 32 MiB of query results through a 2 MiB pool
		direct.Set(bg, "q:"+strconv.Itoa(i), big, 0)
	}
	// Written before the proxy starts, so that no notification of them can
	// race the fills.
	p := startProc(t, r, `
l1:
  max_memory: 4MiB
  pools:
    sessions: {max_memory: 2MiB}
policies:
  - {prefix: "session:", ttl: 10m, pool: sessions}
  - {prefix: "", ttl: 10m}
`)
	c := redis.NewClient(&redis.Options{Addr: p.listen, MaxRetries: -1, PoolSize: 4})
	defer c.Close()
	for i := range sessions {
		c.Get(bg, "session:"+strconv.Itoa(i))
	}
	waitFor(t, 5*time.Second, "every session cached", p.logs, func() bool {
		return poolStats(t, c)["sessions"]["entries"] == sessions
	})
	for range 2 {
		for i := range 2000 {
			c.Get(bg, "q:"+strconv.Itoa(i))
		}
	}
	stats := poolStats(t, c)
	if stats["default"]["evictions"] == 0 && stats["default"]["fills_dropped_rejected"] == 0 {
		t.Fatalf("the flood did not fill the default pool: %v", stats)
	}
	if stats["sessions"]["evictions"] != 0 || stats["sessions"]["entries"] != sessions {
		t.Fatalf("the flood reached the sessions pool: %v", stats)
	}
	before := getCalls(t, r)
	for i := range sessions {
		if v, err := c.Get(bg, "session:"+strconv.Itoa(i)).Result(); err != nil || v != value {
			t.Fatalf("GET session:%d = %q, %v", i, v, err)
		}
	}
	if n := getCalls(t, r) - before; n != 0 {
		t.Fatalf("%d of %d sessions were read from Redis after the flood", n, sessions)
	}
	t.Logf("pools after the flood: %v", stats)
}

// poolStats reads CACHEPROXY STATS's pools.
func poolStats(t *testing.T, c *redis.Client) map[string]map[string]int64 {
	t.Helper()
	v, err := c.Do(bg, "CACHEPROXY", "STATS").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]int64{}
	pools, _ := asMap(v)["pools"].([]any)
	for _, pool := range pools {
		m := map[string]int64{}
		name := ""
		for k, x := range asMap(pool) {
			switch x := x.(type) {
			case int64:
				m[k] = x
			case string:
				name = x
			}
		}
		out[name] = m
	}
	return out
}

// TestDebugLog: at debug level every key's HIT, MISS, FILL and INVALIDATE is
// logged; a reload to info turns the lines off.
func TestDebugLog(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	r.Client(0).Set(bg, "k:1", "v", 0) // before the proxy: no notification to race
	p := startProc(t, r, "config_poll: 100ms\nlog: {level: debug}\n")
	c := redis.NewClient(&redis.Options{Addr: p.listen, MaxRetries: -1})
	defer c.Close()
	if !cached(t, r, c, "k:1") {
		t.Fatal("k:1 not cached")
	}
	c.Del(bg, "k:1")
	for _, want := range []string{"msg=MISS db=0 key=k:1", "msg=FILL db=0 key=k:1 stored=true", "msg=HIT db=0 key=k:1", "msg=INVALIDATE db=0 key=k:1"} {
		waitFor(t, 5*time.Second, want, p.logs, func() bool { return strings.Contains(p.logs.String(), want) })
	}
	p.writeConfig("config_poll: 100ms\nlog: {level: info}\n")
	waitFor(t, 10*time.Second, "the reload to info", p.logs, func() bool { return strings.Contains(p.logs.String(), "log_level=info") })
	n := strings.Count(p.logs.String(), "msg=HIT")
	c.Set(bg, "k:2", "v", 0)
	if !cached(t, r, c, "k:2") {
		t.Fatal("k:2 not cached")
	}
	if strings.Count(p.logs.String(), "msg=HIT") != n || strings.Contains(p.logs.String(), "key=k:2") {
		t.Fatal("per-key lines go on at info level")
	}
}
