package proxy

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/tidwall/redcon"
)

var (
	replyOK   = []byte("+OK\r\n")
	replyPong = []byte("+PONG\r\n")
	replyNil  = []byte("$-1\r\n")
)

// local answers the commands that concern only the client's own connection,
// with the replies and errors Redis would give.
func (c *client) local(rt *routeInfo, cmd redcon.Command) {
	args := cmd.Args
	switch rt.name {
	case "ping":
		switch len(args) {
		case 1:
			c.emit(replyPong)
		case 2:
			c.emit(c.appendBulk(args[1]))
		default:
			c.emitError(arityError(rt.name))
		}
	case "echo":
		if len(args) != 2 {
			c.emitError(arityError(rt.name))
			return
		}
		c.emit(c.appendBulk(args[1]))
	case "quit":
		c.flush()
		c.conn.WriteRaw(replyOK)
		c.conn.Close()
		c.conn = nil
	case "select":
		if len(args) != 2 {
			c.emitError(arityError(rt.name))
			return
		}
		db, err := strconv.Atoi(string(args[1]))
		switch {
		case err != nil:
			c.emitError("ERR value is not an integer or out of range")
		case db < 0 || db >= c.s.up.Databases():
			c.emitError("ERR DB index is out of range")
		default:
			// Commands queued so far belong to the old database.
			c.flush()
			c.db = db
			c.emit(replyOK)
		}
	case "hello":
		c.hello(args)
	case "client":
		c.clientCommand(args)
	case "auth":
		switch len(args) {
		case 2:
			c.emitError("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
		case 3:
			c.emitError("WRONGPASS invalid username-password pair or user is disabled.")
		default:
			c.emitError("ERR syntax error")
		}
	case "reset":
		c.flush()
		c.release()
		c.db, c.name = c.s.db0, ""
		c.emit([]byte("+RESET\r\n"))
	case "multi", "watch":
		c.beginTx(cmd)
	default:
		c.emitError("ERR cacheproxy: " + strings.ToUpper(rt.name) + " is not supported through the proxy; connect to Redis directly for it")
	}
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

// hello implements HELLO [protover [AUTH user pass] [SETNAME name]] for RESP2
// only. HELLO 3 gets NOPROTO, which is what makes go-redis v9 and other RESP3
// clients fall back to RESP2.
func (c *client) hello(args [][]byte) {
	if len(args) >= 2 {
		ver, err := strconv.Atoi(string(args[1]))
		if err != nil {
			c.emitError("ERR Protocol version is not an integer or out of range")
			return
		}
		if ver != 2 {
			c.emitError("NOPROTO unsupported protocol version")
			return
		}
	}
	name, setName := "", false
	for i := 2; i < len(args); i++ {
		opt := strings.ToLower(string(args[i]))
		switch {
		case opt == "auth" && i+2 < len(args):
			c.emitError("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
			return
		case opt == "setname" && i+1 < len(args):
			if !validClientName(args[i+1]) {
				c.emitError("ERR Client names cannot contain spaces, newlines or special characters.")
				return
			}
			name, setName = string(args[i+1]), true
			i++
		default:
			c.emitError("ERR Syntax error in HELLO option '" + string(args[i]) + "'")
			return
		}
	}
	if setName {
		c.name = name
	}
	start := len(c.arena)
	b := redcon.AppendArray(c.arena, 14)
	b = redcon.AppendBulkString(b, "server")
	b = redcon.AppendBulkString(b, "redis")
	b = redcon.AppendBulkString(b, "version")
	b = redcon.AppendBulkString(b, c.s.version)
	b = redcon.AppendBulkString(b, "proto")
	b = redcon.AppendInt(b, 2)
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

// clientCommand answers the CLIENT subcommands that describe the client's own
// connection. The others would act on the proxy's shared upstream connections,
// not on the client, so they are refused.
func (c *client) clientCommand(args [][]byte) {
	if len(args) < 2 {
		c.emitError(arityError("client"))
		return
	}
	sub := strings.ToLower(string(args[1]))
	switch sub {
	case "setname":
		if len(args) != 3 {
			c.emitError(arityError("client|setname"))
			return
		}
		if !validClientName(args[2]) {
			c.emitError("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		c.name = string(args[2])
		c.emit(replyOK)
	case "getname":
		if len(args) != 2 {
			c.emitError(arityError("client|getname"))
			return
		}
		if c.name == "" {
			c.emit(replyNil)
			return
		}
		c.emit(c.appendBulk([]byte(c.name)))
	case "id":
		if len(args) != 2 {
			c.emitError(arityError("client|id"))
			return
		}
		start := len(c.arena)
		c.arena = redcon.AppendInt(c.arena, c.id)
		c.emit(c.arena[start:len(c.arena):len(c.arena)])
	case "setinfo":
		if len(args) != 4 {
			c.emitError(arityError("client|setinfo"))
			return
		}
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
	default:
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
