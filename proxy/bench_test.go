package proxy

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/acl"
)

// sinkConn is the client side of the hit path: it counts reply bytes. Only
// WriteRaw is on the hit path; anything else would panic and fail the benchmark.
type sinkConn struct {
	redcon.Conn
	n int
}

func (s *sinkConn) WriteRaw(b []byte) { s.n += len(b) }

// command is what redcon hands the server for args: Raw matters, because a miss
// forwards it upstream as it is.
func command(args ...string) redcon.Command {
	var cmd redcon.Command
	cmd.Raw = redcon.AppendArray(nil, len(args))
	for _, a := range args {
		cmd.Raw = redcon.AppendBulkString(cmd.Raw, a)
		cmd.Args = append(cmd.Args, []byte(a))
	}
	return cmd
}

// BenchmarkHitPath measures the proxy's own work for an L1 hit: routing, policy
// lookup, L1 get and the reply write, for GET, HGET and an MGET of 10 keys, in
// each protocol, for a user who may do everything and for one limited to
// read-only access under two key patterns. Parsing is not included: see
// resp.CommandReader's own test.
func BenchmarkHitPath(b *testing.B) {
	e := startEnv(b, envOptions{})
	e.waitSubscribed()
	keys := make([]string, 10)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
		e.direct.Set(bg, keys[i], "0123456789abcdef0123456789abcdef", 0)
	}
	e.direct.HSet(bg, "user:h", "f", "v")
	mget := append([]string{"MGET"}, keys...)
	restricted, err := acl.New(acl.Permissions{ReadOnly: true, Keys: []string{"session:*", "user:*"}})
	if err != nil {
		b.Fatal(err)
	}
	for _, proto := range []int{2, 3} {
		c := redis.NewClient(&redis.Options{Addr: e.addr, Protocol: proto})
		b.Cleanup(func() { c.Close() })
		for _, tc := range []struct {
			name string
			args []string
		}{
			{"GET", []string{"GET", "user:1"}},
			{"HGET", []string{"HGET", "user:h", "f"}},
			{"MGET10", mget},
		} {
			benchHit(b, e, c, proto, tc.name, tc.args, acl.Unrestricted)
			benchHit(b, e, c, proto, tc.name+"/restricted", tc.args, restricted)
		}
	}
}

func benchHit(b *testing.B, e *env, c *redis.Client, proto int, name string, args []string, perm *acl.User) {
	b.Run(fmt.Sprintf("RESP%d/%s", proto, name), func(b *testing.B) {
		cmd := command(args...)
		// Warm the L1 through a real client and let the fills settle.
		argsAny := make([]any, len(args))
		for i, a := range args {
			argsAny[i] = a
		}
		for i := 0; i < 3; i++ {
			c.Do(bg, argsAny...)
			e.cache.Wait()
		}
		b.RunParallel(func(pb *testing.PB) {
			sink := &sinkConn{}
			cl := &client{s: e.srv, conn: sink, proto: proto}
			cl.authed, cl.perm = true, perm
			misses := e.counter("cacheproxy_l1_misses_total", nil)
			for pb.Next() {
				cl.cmds = append(cl.cmds[:0], cmd)
				cl.run()
			}
			if e.counter("cacheproxy_l1_misses_total", nil) != misses {
				b.Error("the benchmark missed the L1")
			}
		})
	})
}
