package proxy

// routeKind says how the proxy treats a command before it consults the
// upstream's command table.
type routeKind uint8

const (
	routeOther routeKind = iota // the command table decides: write, blocking or plain forward
	routeRead                   // a cacheable read of the key at args[1]
	routeMGet                   // MGET: cached per key
	routeLocal                  // answered or checked by the proxy (local.go)
)

type routeInfo struct {
	kind routeKind
	// name is the lower-case command name; for reads it starts every variant.
	name string
	// For reads: the argument counts (command name included) for which the
	// reply depends only on the key's value; 0 maxArgs means no upper bound.
	// Other counts are forwarded so that Redis gives its own arity error.
	minArgs, maxArgs int
	// id numbers the routes from 0, for per-command counters (metrics.go).
	id int
}

// cacheable reads: single-key, read-only commands whose reply is a function of
// the key's value and the arguments after the key. Commands whose reply
// changes with time or chance (TTL, OBJECT IDLETIME, SRANDMEMBER) stay out.
var routes = func() map[string]*routeInfo {
	m := map[string]*routeInfo{}
	read := func(name string, min, max int) {
		m[name] = &routeInfo{kind: routeRead, name: name, minArgs: min, maxArgs: max}
	}
	read("get", 2, 2)
	read("strlen", 2, 2)
	read("getrange", 4, 4)
	read("exists", 2, 2) // one key only: EXISTS k1 k2 counts across keys
	read("type", 2, 2)
	read("hget", 3, 3)
	read("hmget", 3, 0)
	read("hgetall", 2, 2)
	read("hexists", 3, 3)
	read("hlen", 2, 2)
	read("hstrlen", 3, 3)
	read("hkeys", 2, 2)
	read("hvals", 2, 2)
	read("llen", 2, 2)
	read("lindex", 3, 3)
	read("lrange", 4, 4)
	read("scard", 2, 2)
	read("sismember", 3, 3)
	read("smismember", 3, 0)
	read("smembers", 2, 2)
	read("zcard", 2, 2)
	read("zscore", 3, 3)
	read("zmscore", 3, 0)
	read("zrank", 3, 3)
	read("zrange", 4, 0)
	m["mget"] = &routeInfo{kind: routeMGet, name: "mget"}
	// Answered by the proxy, or seen by it before the upstream (local.go).
	for _, name := range []string{
		"ping", "echo", "quit", "select", "hello", "client", "auth", "reset",
		"multi", "watch",
		"subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
		"info", "config",
		"monitor", "sync", "psync", "replconf",
		"cacheproxy",
	} {
		m[name] = &routeInfo{kind: routeLocal, name: name}
	}
	id := 0
	for _, r := range m {
		r.id = id
		id++
	}
	return m
}()

var otherRoute = &routeInfo{kind: routeOther}

// longestRoute bounds the names worth looking up.
const longestRoute = 16

// route finds a command's route by its name in any case, without allocating.
func route(name []byte) *routeInfo {
	if len(name) > longestRoute {
		return otherRoute
	}
	var buf [longestRoute]byte
	for i, ch := range name {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		buf[i] = ch
	}
	if r, ok := routes[string(buf[:len(name)])]; ok {
		return r
	}
	return otherRoute
}
