package proxy

import (
	"strings"

	"github.com/cacheproxy/cacheproxy/commands"
)

// Permissions (acl.User) are checked in command, after authentication and
// before anything else: before the L1, so that a cache hit never bypasses
// one, before CLIENT TRACKING remembers keys, and inside MULTI when the
// command is queued, as Redis checks them. The rules, a subset of Redis's ACL:
//
//   - Redis's own errors come first: an unknown command, or a known one with
//     the wrong number of arguments, gets the error Redis would give.
//   - Not admin: the commands Redis flags admin (CONFIG, CLIENT KILL, CLIENT
//     LIST, MONITOR, SHUTDOWN, DEBUG...) and CACHEPROXY POLICY, STATS and
//     FLUSH are refused; CACHEPROXY HELP is not.
//   - Read-only: what the proxy treats as a write is refused: commands Redis
//     flags write or may_replicate, PUBLISH and SPUBLISH, and scripts and functions
//     other than EVAL_RO, EVALSHA_RO and FCALL_RO. Everything else, the
//     connection's own commands included (HELLO, SELECT, CLIENT SETNAME,
//     MULTI, SUBSCRIBE...), is allowed, so that clients connect as usual.
//   - Key patterns: every key the command names, found as write invalidation
//     finds them, must match one; a command whose keys cannot all be known
//     (SORT BY a pattern) is refused, and so are FLUSHDB, FLUSHALL and SWAPDB,
//     which touch every key. Scripts are checked by the keys they declare;
//     the proxy cannot see what a script reads or writes beyond them.
//     Pub/sub channels are not restricted.
const (
	errNoPermKeys = "NOPERM this user has no permissions to access one of the keys used as arguments"
)

func noPermCommand(name string) string {
	return "NOPERM this user has no permissions to run the '" + name + "' command"
}

// permitted checks a command of a restricted user, answers it with the
// refusal if it is not allowed, and reports whether it may go on. info is
// the command's table entry when command looked it up.
func (c *client) permitted(rt *routeInfo, info *commands.Info, args [][]byte) bool {
	u := c.perm
	switch rt.kind {
	case routeRead:
		// Cacheable reads are neither writes nor admin commands, and name one
		// key: the hit path's only check. Other argument counts (EXISTS of
		// several keys) are checked by the table.
		if len(args) >= rt.minArgs && (rt.maxArgs == 0 || len(args) <= rt.maxArgs) {
			if u.Key(args[1]) {
				return true
			}
			return c.refuse(errNoPermKeys)
		}
		info = c.s.cmds.Lookup(args)
	case routeMGet:
		if u.Keys(args[1:]) {
			return true
		}
		return c.refuse(errNoPermKeys)
	case routeLocal:
		if rt.name == "cacheproxy" {
			if !u.Admin && len(args) >= 2 {
				switch sub := strings.ToLower(string(args[1])); sub {
				case "policy", "stats", "flush":
					return c.refuse(noPermCommand("cacheproxy|" + sub))
				}
			}
			return true
		}
		if info = c.s.cmds.Lookup(args); info == nil {
			return true // the proxy answers it, or gives Redis's error
		}
	}
	if info == nil {
		// Unknown to the table: refused here with Redis's error rather
		// than let through to an upstream that may know it.
		return c.refuse(c.commandError(args))
	}
	if !info.ArityOK(len(args)) {
		return true // Redis's arity error comes before its permissions
	}
	if !u.Admin && info.Flags.Has(commands.Admin) || u.ReadOnly && (writes(info) || publishes(info)) {
		return c.refuse(noPermCommand(info.Name))
	}
	if u.AllKeys {
		return true
	}
	switch info.Name {
	case "flushdb", "flushall", "swapdb":
		return c.refuse(noPermCommand(info.Name))
	}
	keys, complete := info.Keys(args, c.keys[:0])
	ok := complete && u.Keys(keys)
	clear(keys)
	c.keys = keys[:0]
	if !ok {
		return c.refuse(errNoPermKeys)
	}
	return true
}

// publishes reports PUBLISH and SPUBLISH, which Redis 7.0 flags neither write
// nor may_replicate; a read-only user does not publish.
func publishes(info *commands.Info) bool {
	return info.Name == "publish" || info.Name == "spublish"
}

// refuse answers a command that may not run. Inside MULTI it also dooms the
// transaction, as Redis's refusal at queue time does: EXEC then answers
// EXECABORT.
func (c *client) refuse(msg string) bool {
	c.emitError(msg)
	if c.tx != nil && c.tx.multi {
		c.tx.aborted = true
	}
	return false
}
