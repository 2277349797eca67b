package proxy

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/acl"
)

// permEnv is a proxy with a read-only user, a key-restricted user, an admin
// and a named user with the default permissions; the default user's password
// is "secret" and it may do everything.
func permEnv(t *testing.T) *env {
	e := startEnv(t, envOptions{options: func(o *Options) {
		o.RequirePass = "secret"
		o.Users = []User{
			{Name: "ro", Password: "ro-pw", Permissions: acl.Permissions{ReadOnly: true}},
			{Name: "app", Password: "app-pw", Permissions: acl.Permissions{Keys: []string{"user:*", "session:?"}}},
			{Name: "ops", Password: "ops-pw", Permissions: acl.Permissions{Admin: true}},
			{Name: "plain", Password: "plain-pw"},
		}
	}})
	e.waitSubscribed()
	return e
}

func (e *env) rawAs(t *testing.T, user, pass string) *rawConn {
	r := dialRaw(t, e.addr)
	if got := r.roundTrip(crlf("AUTH "+user+" "+pass+"\n"), 1); got != "+OK\r\n" {
		t.Fatalf("AUTH %s: %q", user, got)
	}
	return r
}

const (
	noPermKeys = "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
)

func noPerm(cmd string) string {
	return "-NOPERM this user has no permissions to run the '" + cmd + "' command\r\n"
}

// TestPermissionsGoRedis: go-redis connects as a read-only user with its
// defaults (HELLO 3, SELECT, CLIENT SETNAME, CLIENT SETINFO) and reads; its
// writes get Redis's NOPERM.
func TestPermissionsGoRedis(t *testing.T) {
	t.Parallel()
	e := permEnv(t)
	e.direct.Do(bg, "select", 2)
	for _, proto := range []int{2, 3} {
		c := redis.NewClient(&redis.Options{Addr: e.addr, Username: "ro", Password: "ro-pw", DB: 2, ClientName: "reader", Protocol: proto, MaxRetries: -1})
		if err := c.Ping(bg).Err(); err != nil {
			t.Fatalf("RESP%d: PING: %v", proto, err)
		}
		if err := c.Get(bg, "user:1").Err(); err != redis.Nil {
			t.Fatalf("RESP%d: GET: %v", proto, err)
		}
		err := c.Set(bg, "user:1", "x", 0).Err()
		if err == nil || err.Error() != strings.TrimSuffix(noPerm("set")[1:], "\r\n") {
			t.Fatalf("RESP%d: SET: %v", proto, err)
		}
		c.Close()
	}
	c := redis.NewClient(&redis.Options{Addr: e.addr, Username: "app", Password: "app-pw", MaxRetries: -1})
	defer c.Close()
	if err := c.Set(bg, "user:1", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(bg, "other").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("GET other: %v", err)
	}
}

// TestPermissionsReadOnly: what a read-only user may and may not run.
func TestPermissionsReadOnly(t *testing.T) {
	t.Parallel()
	e := permEnv(t)
	e.direct.Set(bg, "k", "v", 0)
	r := e.rawAs(t, "ro", "ro-pw")
	for _, c := range []struct{ cmd, want string }{
		{"GET k", "$1\r\nv\r\n"},
		{"GET k", "$1\r\nv\r\n"}, // an L1 hit
		{"MGET k k", "*2\r\n$1\r\nv\r\n$1\r\nv\r\n"},
		{"SET k x", noPerm("set")},
		{"DEL k", noPerm("del")},
		{"EVAL 'return 1' 0", noPerm("eval")},
		{"FCALL f 0", noPerm("fcall")},
		{"PUBLISH ch m", noPerm("publish")},
		{"EVAL_RO 'return 2' 0", ":2\r\n"},
		{"SELECT 1", "+OK\r\n"},
		{"CLIENT SETNAME r", "+OK\r\n"},
		{"SELECT 0", "+OK\r\n"},
		{"STRLEN k", ":1\r\n"},
		{"SET k", "-ERR wrong number of arguments for 'set' command\r\n"},
		{"NOSUCH a", "-ERR unknown command 'NOSUCH', with args beginning with: 'a' \r\n"},
		{"CONFIG GET maxmemory", noPerm("config|get")},
		{"CLIENT KILL ID 1", noPerm("client|kill")},
	} {
		if got := r.roundTrip(crlf(c.cmd+"\n"), 1); got != c.want {
			t.Errorf("%s: %q, want %q", c.cmd, got, c.want)
		}
	}
	// Refused when queued: EXEC then aborts, and nothing ran.
	got := r.roundTrip(crlf("MULTI\nGET k\nSET k x\nEXEC\nGET k\n"), 5)
	want := "+OK\r\n+QUEUED\r\n" + noPerm("set") + "-EXECABORT Transaction discarded because of previous errors.\r\n$1\r\nv\r\n"
	if got != want {
		t.Errorf("MULTI: %q, want %q", got, want)
	}
}

// TestPermissionsKeys: every key of a key-restricted user's command must
// match one of its patterns, cached reads included.
func TestPermissionsKeys(t *testing.T) {
	t.Parallel()
	e := permEnv(t)
	e.direct.Set(bg, "secret", "s", 0)
	// An unrestricted client puts the key in the L1: the hit must not leak it.
	admin := redis.NewClient(&redis.Options{Addr: e.addr, Password: "secret", MaxRetries: -1})
	defer admin.Close()
	for i := 0; i < 3; i++ {
		admin.Get(bg, "secret")
		e.cache.Wait()
	}
	hits := e.counter("cacheproxy_l1_hits_total", nil)
	r := e.rawAs(t, "app", "app-pw")
	for _, c := range []struct{ cmd, want string }{
		{"GET secret", noPermKeys},
		{"SET user:1 a", "+OK\r\n"},
		{"GET user:1", "$1\r\na\r\n"},
		{"SET session:a b", "+OK\r\n"},
		{"SET session:ab b", noPermKeys},
		{"MGET user:1 secret", noPermKeys},
		{"MGET user:1 session:a", "*2\r\n$1\r\na\r\n$1\r\nb\r\n"},
		{"HGET secret f", noPermKeys},
		{"EXISTS user:1 secret", noPermKeys},
		{"DEL user:9 secret", noPermKeys},
		{"RENAME user:1 secret", noPermKeys},
		{"EVAL 'return 1' 1 secret", noPermKeys},
		{"EVAL 'return 1' 1 user:1", ":1\r\n"},
		{"SORT user:l BY secret*", noPermKeys},
		{"FLUSHDB", noPerm("flushdb")},
		{"FLUSHALL", noPerm("flushall")},
		{"SWAPDB 0 1", noPerm("swapdb")},
		{"WATCH secret", noPermKeys},
		{"TYPE user:1", "+string\r\n"},
		{"CACHEPROXY FLUSH", noPerm("cacheproxy|flush")},
		{"CACHEPROXY STATS", noPerm("cacheproxy|stats")},
	} {
		if got := r.roundTrip(crlf(c.cmd+"\n"), 1); got != c.want {
			t.Errorf("%s: %q, want %q", c.cmd, got, c.want)
		}
	}
	if h := e.counter("cacheproxy_l1_hits_total", nil); h != hits {
		t.Errorf("the refused GET secret was counted as a hit (%v, then %v)", hits, h)
	}
	got := r.roundTrip(crlf("MULTI\nSET user:2 x\nSET secret x\nEXEC\nGET user:2\n"), 5)
	want := "+OK\r\n+QUEUED\r\n" + noPermKeys + "-EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n"
	if got != want {
		t.Errorf("MULTI: %q, want %q", got, want)
	}
	if v := e.direct.Get(bg, "secret").Val(); v != "s" {
		t.Errorf("secret = %q", v)
	}
}

// TestPermissionsAdmin: only admins run the proxy's operator commands and
// Redis's admin commands; the default user of requirepass is one.
func TestPermissionsAdmin(t *testing.T) {
	t.Parallel()
	e := permEnv(t)
	plain := e.rawAs(t, "plain", "plain-pw")
	for _, c := range []struct{ cmd, want string }{
		{"CACHEPROXY FLUSH", noPerm("cacheproxy|flush")},
		{"CACHEPROXY POLICY k", noPerm("cacheproxy|policy")},
		{"CLIENT KILL ID 999", noPerm("client|kill")},
		{"CLIENT LIST", noPerm("client|list")},
		{"MONITOR", noPerm("monitor")},
		{"SET k v", "+OK\r\n"},
		{"CLIENT ID", ""},
		{"CACHEPROXY NOSUCH", "-ERR unknown subcommand 'NOSUCH'. Try CACHEPROXY HELP.\r\n"},
	} {
		got := plain.roundTrip(crlf(c.cmd+"\n"), 1)
		if c.want != "" && got != c.want || c.want == "" && got[0] != ':' {
			t.Errorf("plain: %s: %q, want %q", c.cmd, got, c.want)
		}
	}
	if got := plain.roundTrip(crlf("CACHEPROXY HELP\n"), 1); !strings.HasPrefix(got, "*") {
		t.Errorf("plain: CACHEPROXY HELP: %q", got)
	}
	for _, who := range [][2]string{{"ops", "ops-pw"}, {"default", "secret"}} {
		r := e.rawAs(t, who[0], who[1])
		for _, cmd := range []string{"CACHEPROXY FLUSH", "CLIENT KILL ID 999", "CLIENT LIST", "CONFIG GET maxclients"} {
			if got := r.roundTrip(crlf(cmd+"\n"), 1); strings.HasPrefix(got, "-NOPERM") {
				t.Errorf("%s: %s: %q", who[0], cmd, got)
			}
		}
	}
	// RESET brings back the default user's permissions, whatever AUTH gave.
	if got := plain.roundTrip(crlf("RESET\nAUTH secret\nCLIENT LIST\n"), 3); strings.Contains(got, "NOPERM") {
		t.Errorf("after RESET and AUTH as default: %q", got)
	}
}

func TestPermissionsOptionsErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Users: []User{{Name: "a", Password: "p", Permissions: acl.Permissions{Keys: []string{"x["}}}}}, `proxy: user "a": keys[0]: key pattern "x["`},
		{Options{RequirePass: "p", DefaultPermissions: &acl.Permissions{Keys: []string{}}}, "proxy: the default user's permissions: keys lists no pattern"},
	} {
		if _, err := newAuthConfig(c.o.RequirePass, c.o.DefaultPermissions, c.o.Users); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}
