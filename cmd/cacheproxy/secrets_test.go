package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

// TestPasswordsNeverShow runs the proxy at debug level with passwords for
// its clients and for the upstream, does what shows text (a failed AUTH,
// CLIENT LIST, INFO, CONFIG GET, the upstream going away) and looks for the
// passwords in everything it said: replies, errors, the log, /metrics.
func TestPasswordsNeverShow(t *testing.T) {
	t.Parallel()
	const (
		upPass  = "up-Secret-7319"
		defPass = "def-Secret-2281"
		appPass = "app-Secret-5402"
	)
	r := redistest.Start(t, redistest.Options{})
	if err := r.Client(0).Do(bg, "acl", "setuser", "px", "on", ">"+upPass, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	up := url.URL{Scheme: "redis", User: url.UserPassword("px", upPass), Host: r.Addr(), Path: "/0"}
	listen, metrics := freeAddr(t), freeAddr(t)
	file := filepath.Join(t.TempDir(), "cacheproxy.yaml")
	body := fmt.Sprintf(`listen: %s
metrics: %s
upstream: %s
log: {level: debug}
auth:
  requirepass: %s
  users:
    - name: app
      password: %s
      keys: ["user:*"]
`, listen, metrics, up.String(), defPass, appPass)
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--config", file}, logs, nil) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("run did not return within 20s")
		}
	}()
	waitReady(t, metrics, logs)

	var said strings.Builder // every reply and error the clients saw
	note := func(v any, err error) {
		fmt.Fprintf(&said, "%v %v\n", v, err)
	}
	admin := redis.NewClient(&redis.Options{Addr: listen, Password: defPass, MaxRetries: -1})
	defer admin.Close()
	app := redis.NewClient(&redis.Options{Addr: listen, Username: "app", Password: appPass, ClientName: "app", MaxRetries: -1})
	defer app.Close()
	note(app.Set(bg, "user:1", "v", 0).Result())
	// The SET's keyspace event may land after a GET and drop what it cached:
	// read until a hit shows in the log (bounded).
	for i := 0; i < 50 && !strings.Contains(logs.String(), "msg=HIT"); i++ {
		note(app.Get(bg, "user:1").Result())
		time.Sleep(10 * time.Millisecond)
	}
	note(app.Get(bg, "other").Result())
	for _, o := range []*redis.Options{{Password: "wrong"}, {Username: "app", Password: "wrong"}, {Username: "nobody", Password: appPass}} {
		o.Addr, o.MaxRetries = listen, -1
		c := redis.NewClient(o)
		note(c.Ping(bg).Result())
		c.Close()
	}
	for _, args := range [][]any{
		{"client", "list"}, {"client", "info"}, {"info", "everything"}, {"config", "get", "*"},
		{"cacheproxy", "stats"}, {"hello", "3", "auth", "app", "wrong"}, {"auth", "app", "wrong"},
		{"acl", "whoami"}, {"acl", "list"},
	} {
		note(admin.Do(bg, args...).Result())
	}
	note(app.Do(bg, "client", "list").Result())
	// The upstream goes away: errors and log lines about it.
	r.Stop()
	for i := 0; i < 3; i++ {
		note(admin.Get(bg, fmt.Sprintf("user:%d", 10+i)).Result())
		note(app.Set(bg, "user:1", "w", 0).Result())
	}
	time.Sleep(200 * time.Millisecond) // reconnect attempts log
	out := map[string]string{"replies": said.String(), "log": logs.String(), "metrics": scrape(t, metrics)}
	if !strings.Contains(out["replies"], "upstream unavailable") || !strings.Contains(out["replies"], "WRONGPASS") {
		t.Errorf("the test did not see what it meant to:\n%s", out["replies"])
	}
	if !strings.Contains(out["log"], r.Addr()) || !strings.Contains(out["log"], "msg=HIT") {
		t.Errorf("the log has neither the upstream's address nor a debug line:\n%s", out["log"])
	}
	for where, text := range out {
		for _, pass := range []string{upPass, defPass, appPass} {
			if i := strings.Index(text, pass); i >= 0 {
				t.Errorf("%s shows a password: ...%s...", where, text[max(0, i-200):min(len(text), i+50)])
			}
		}
	}
}
