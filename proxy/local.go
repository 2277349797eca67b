package proxy

import (
	"bytes"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/resp"
)

var (
	replyOK    = []byte("+OK\r\n")
	replyPong  = []byte("+PONG\r\n")
	replyReset = []byte("+RESET\r\n")
)

// local answers the commands that concern the client's own connection, or
// that the proxy must see before the upstream does, with the replies and
// errors Redis would give.
func (c *client) local(rt *routeInfo, cmd redcon.Command) {
	args := cmd.Args
	if rt.name == "cacheproxy" {
		c.admin(args) // the proxy's own command: the upstream's table does not know it
		return
	}
	if msg := c.commandError(args); msg != "" {
		c.emitError(msg)
		return
	}
	switch rt.name {
	case "ping":
		switch len(args) {
		case 1:
			c.emit(replyPong)
		case 2:
			c.emit(c.appendBulk(args[1]))
		default:
			c.emitError(arityError("ping"))
		}
	case "echo":
		c.emit(c.appendBulk(args[1]))
	case "quit":
		c.flush()
		c.conn.WriteRaw(replyOK)
		c.conn.Close()
		c.conn = nil
	case "select":
		db, err := strconv.Atoi(string(args[1]))
		switch {
		case err != nil:
			c.emitError("ERR value is not an integer or out of range")
		case c.s.cluster && db != 0:
			c.emitError("ERR SELECT is not allowed in cluster mode")
		case db < 0 || db >= c.s.up.Databases():
			c.emitError("ERR DB index is out of range")
		default:
			// Commands queued so far belong to the old database.
			c.flush()
			c.db = db
			c.publish()
			c.emit(replyOK)
		}
	case "hello":
		c.hello(args)
	case "client":
		c.clientCommand(cmd)
	case "auth":
		c.authenticate(args)
	case "reset":
		c.flush()
		c.resetState()
		c.emit(replyReset)
	case "multi", "watch":
		c.beginTx(cmd)
	case "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe":
		c.subscribe(rt, cmd)
	case "monitor":
		c.startMonitor(cmd)
	case "info":
		c.info(cmd)
	case "config":
		c.config(cmd)
	default:
		c.emitError(refusal(args[0]))
	}
}

// refusal is the error for commands that cannot work through a proxy: they
// would act on the proxy's shared upstream connections, or make one a replica,
// rather than serve the client.
func refusal(name []byte) string {
	return "ERR cacheproxy: " + strings.ToUpper(string(name)) + " is not supported through the proxy; connect to Redis directly for it"
}

// resetState is RESET's effect on the proxy's side of the connection: no
// transaction, RESP2, no tracking, the initial database, no name, and not
// authenticated when the proxy requires AUTH.
func (c *client) resetState() {
	c.release()
	c.stopTracking()
	c.db, c.name, c.proto = c.s.db0, "", 2
	c.setFlag(clientNoEvict, false)
	c.setAuthed(!c.s.auth.required, "default")
}

func arityError(name string) string {
	return "ERR wrong number of arguments for '" + name + "' command"
}

func (c *client) emitError(msg string) {
	start := len(c.arena)
	c.arena = redcon.AppendError(c.arena, msg)
	c.emit(c.arena[start:len(c.arena):len(c.arena)])
}

func (c *client) appendBulk(b []byte) []byte {
	start := len(c.arena)
	c.arena = redcon.AppendBulk(c.arena, b)
	return c.arena[start:len(c.arena):len(c.arena)]
}

func (c *client) emitInt(n int64) {
	start := len(c.arena)
	c.arena = redcon.AppendInt(c.arena, n)
	c.emit(c.arena[start:len(c.arena):len(c.arena)])
}

// hello implements HELLO [protover [AUTH user pass] [SETNAME name]]. HELLO 3
// switches the client to RESP3 when the proxy has a RESP3 upstream pool;
// otherwise it gets NOPROTO, which makes go-redis v9 fall back to RESP2.
func (c *client) hello(args [][]byte) {
	proto := c.proto
	if len(args) >= 2 {
		ver, err := strconv.ParseInt(string(args[1]), 10, 64)
		if err != nil {
			c.emitError("ERR Protocol version is not an integer or out of range")
			return
		}
		if ver < 2 || ver > 3 || ver == 3 && c.s.up3 == nil {
			c.emitError("NOPROTO unsupported protocol version")
			return
		}
		proto = int(ver)
	}
	if proto != c.proto && (c.ps != nil || c.mon != nil) {
		// The subscribed or monitoring upstream connection would go on in
		// the old one.
		c.emitError("ERR cacheproxy: HELLO cannot change the protocol of a subscribed or monitoring connection through the proxy; RESET or unsubscribe first")
		return
	}
	var user, pass, name []byte
	setName := false
	for i := 2; i < len(args); i++ {
		more := len(args) - 1 - i
		switch opt := strings.ToLower(string(args[i])); {
		case opt == "auth" && more >= 2:
			user, pass = args[i+1], args[i+2]
			i += 2
		case opt == "setname" && more >= 1:
			if !validClientName(args[i+1]) {
				c.emitError("ERR Client names cannot contain spaces, newlines or special characters.")
				return
			}
			name, setName = args[i+1], true
			i++
		default:
			c.emitError("ERR Syntax error in HELLO option '" + string(args[i]) + "'")
			return
		}
	}
	if user != nil {
		if !c.s.auth.check(string(user), pass) {
			c.emitError(errWrongPass)
			return
		}
		c.setAuthed(true, string(user))
	}
	if !c.authed {
		c.emitError(errHelloAuth)
		return
	}
	if setName {
		c.name = string(name)
		c.publish()
	}
	if proto != c.proto {
		// Commands queued so far were sent in the old protocol.
		c.flush()
		c.proto = proto
		c.publish()
	}
	start := len(c.arena)
	b := resp.AppendMapOrArray(c.arena, 7, c.proto)
	b = redcon.AppendBulkString(b, "server")
	b = redcon.AppendBulkString(b, "redis")
	b = redcon.AppendBulkString(b, "version")
	b = redcon.AppendBulkString(b, c.s.version)
	b = redcon.AppendBulkString(b, "proto")
	b = redcon.AppendInt(b, int64(c.proto))
	b = redcon.AppendBulkString(b, "id")
	b = redcon.AppendInt(b, c.id)
	b = redcon.AppendBulkString(b, "mode")
	b = redcon.AppendBulkString(b, "standalone")
	b = redcon.AppendBulkString(b, "role")
	b = redcon.AppendBulkString(b, "master")
	b = redcon.AppendBulkString(b, "modules")
	b = redcon.AppendArray(b, 0)
	c.arena = b
	c.emit(c.arena[start:len(c.arena):len(c.arena)])
}

// clientCommand answers the CLIENT subcommands about the proxy's own clients
// (this connection, or others for LIST and KILL). PAUSE and UNPAUSE act on the
// upstream, which is what pausing the proxy's clients means. Subcommands that
// would change how the upstream treats the proxy's shared connections are
// refused; unknown ones get the upstream's error. commandError has checked the
// subcommand and its arity.
func (c *client) clientCommand(cmd redcon.Command) {
	args := cmd.Args
	switch sub := strings.ToLower(string(args[1])); sub {
	case "setname":
		if !validClientName(args[2]) {
			c.emitError("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		c.name = string(args[2])
		c.publish()
		c.emit(replyOK)
	case "getname":
		if c.name == "" {
			c.emit(c.appendNull())
			return
		}
		c.emit(c.appendBulk([]byte(c.name)))
	case "id":
		c.emitInt(c.id)
	case "setinfo":
		attr := strings.ToLower(string(args[2]))
		if attr != "lib-name" && attr != "lib-ver" {
			c.emitError("ERR Unrecognized option '" + string(args[2]) + "'")
			return
		}
		if bytes.ContainsAny(args[3], " \n\r") {
			c.emitError("ERR " + attr + " cannot contain spaces, newlines or special characters.")
			return
		}
		c.emit(replyOK)
	case "info":
		c.emit(c.appendVerbatim(clientLine(nil, c, time.Now())))
	case "list":
		c.clientList(args)
	case "kill":
		c.clientKill(args)
	case "no-evict":
		switch strings.ToLower(string(args[2])) {
		case "on", "off":
			c.setFlag(clientNoEvict, strings.EqualFold(string(args[2]), "on"))
			c.emit(replyOK)
		default:
			c.emitError("ERR syntax error")
		}
	case "tracking", "caching", "getredir", "trackinginfo":
		c.clientTracking(sub, args)
	case "pause", "unpause", "help":
		c.forward(cmd.Raw)
	default: // REPLY, UNBLOCK, and whatever a newer Redis adds
		c.emitError("ERR cacheproxy: CLIENT " + strings.ToUpper(sub) + " is not supported through the proxy")
	}
}

// validClientName applies Redis's rule: printable ASCII without spaces.
func validClientName(b []byte) bool {
	for _, ch := range b {
		if ch < '!' || ch > '~' {
			return false
		}
	}
	return true
}
