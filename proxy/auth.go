package proxy

import (
	"crypto/subtle"
	"fmt"
	"strings"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/acl"
)

// User is a name and password a client may AUTH to the proxy as, and what
// it may do once it has (permissions.go). The zero Permissions allow every
// command and key except the admin ones. The proxy's own credentials for the
// upstream are separate (the upstream URL's).
type User struct {
	Name, Password string
	Permissions    acl.Permissions
}

// authConfig is who may use the proxy, modelled on Redis's ACL users: the
// "default" user, whose password is requirepass, and named users. A client is
// authenticated from the start when the default user needs no password, as
// with a Redis without requirepass; otherwise it must AUTH (or HELLO ... AUTH)
// first.
type authConfig struct {
	required    bool
	defaultPass string // the default user's password; "" while required means the default user is off
	defaultPerm *acl.User
	users       map[string]authUser
}

type authUser struct {
	pass string
	perm *acl.User
}

const (
	errNoAuth    = "NOAUTH Authentication required."
	errWrongPass = "WRONGPASS invalid username-password pair or user is disabled."
	errNoPass    = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
	errHelloAuth = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
)

func newAuthConfig(requirePass string, defaultPerm *acl.Permissions, users []User) (*authConfig, error) {
	a := &authConfig{defaultPass: requirePass, required: requirePass != "" || len(users) > 0, defaultPerm: acl.Unrestricted}
	if defaultPerm != nil {
		u, err := acl.New(*defaultPerm)
		if err != nil {
			return nil, fmt.Errorf("proxy: the default user's permissions: %w", err)
		}
		a.defaultPerm = u
	}
	for i, u := range users {
		switch {
		case u.Name == "":
			return nil, fmt.Errorf("proxy: Users[%d] has no name", i)
		case u.Name == "default":
			return nil, fmt.Errorf("proxy: Users[%d]: the default user's password is RequirePass", i)
		case u.Password == "":
			return nil, fmt.Errorf("proxy: user %q has no password", u.Name)
		case strings.ContainsAny(u.Name, " \r\n"):
			return nil, fmt.Errorf("proxy: user name %q contains a space or newline", u.Name)
		}
		if a.users == nil {
			a.users = make(map[string]authUser, len(users))
		}
		if _, dup := a.users[u.Name]; dup {
			return nil, fmt.Errorf("proxy: user %q is listed twice", u.Name)
		}
		perm, err := acl.New(u.Permissions)
		if err != nil {
			return nil, fmt.Errorf("proxy: user %q: %w", u.Name, err)
		}
		a.users[u.Name] = authUser{pass: u.Password, perm: perm}
	}
	return a, nil
}

// knownUser reports whether CLIENT KILL USER may name user.
func (a *authConfig) knownUser(user string) bool {
	_, ok := a.users[user]
	return ok || user == "default"
}

// check reports whether pass is user's password. Without a password the
// default user takes any, as Redis's nopass user does.
func (a *authConfig) check(user string, pass []byte) bool {
	u, ok := a.users[user]
	want := u.pass
	if user == "default" {
		if !a.required {
			return true
		}
		want, ok = a.defaultPass, a.defaultPass != ""
	}
	// Compare in constant time, and compare even for an unknown user so that
	// timing does not tell which names exist.
	eq := subtle.ConstantTimeCompare([]byte(want), pass) == 1
	return ok && eq
}

// perm is what user may do.
func (a *authConfig) perm(user string) *acl.User {
	if u, ok := a.users[user]; ok {
		return u.perm
	}
	return a.defaultPerm
}

// setAuthed records whether the client may run commands, and as whom.
func (c *client) setAuthed(ok bool, user string) {
	c.authed = ok
	c.cc.authed.Store(ok)
	c.user = user
	c.perm = c.s.auth.perm(user)
	c.publish()
}

// authenticate answers AUTH [user] pass.
func (c *client) authenticate(args [][]byte) {
	var user string
	switch len(args) {
	case 2:
		if !c.s.auth.required {
			c.emitError(errNoPass)
			return
		}
		user = "default"
	case 3:
		user = string(args[1])
	default:
		if len(args) < 2 {
			c.emitError(arityError("auth"))
		} else {
			c.emitError("ERR syntax error")
		}
		return
	}
	if !c.s.auth.check(user, args[len(args)-1]) {
		c.emitError(errWrongPass)
		return
	}
	c.setAuthed(true, user)
	c.emit(replyOK)
}

// unauthenticated answers a command of a client that has yet to AUTH: only
// the commands Redis flags no_auth run; the rest get Redis's error, and never
// reach the upstream.
func (c *client) unauthenticated(cmd redcon.Command) {
	if rt := route(cmd.Args[0]); rt.kind == routeLocal {
		switch rt.name {
		case "auth", "hello", "quit", "reset":
			c.local(rt, cmd)
			return
		}
	}
	if msg := c.commandError(cmd.Args); msg != "" {
		c.emitError(msg)
		return
	}
	c.emitError(errNoAuth)
}

// commandError is Redis's error for a command it does not know or whose
// argument count is wrong, or "" for one it would go on to run.
func (c *client) commandError(args [][]byte) string {
	info := c.s.cmds.Lookup(args)
	if info == nil {
		if len(args) >= 2 && c.s.cmds.Lookup(args[:1]) != nil {
			return sanitize("ERR unknown subcommand '" + truncate(args[1], 128) + "'. Try " + strings.ToUpper(string(args[0])) + " HELP.")
		}
		var rest strings.Builder
		for _, a := range args[1:] {
			if rest.Len() >= 128 {
				break
			}
			rest.WriteString("'" + truncate(a, 128-rest.Len()) + "' ")
		}
		return sanitize("ERR unknown command '" + truncate(args[0], 128) + "', with args beginning with: " + rest.String())
	}
	if !info.ArityOK(len(args)) {
		return arityError(info.Name)
	}
	return ""
}

// truncate cuts b to at most n bytes, as Redis's "%.128s" does.
func truncate(b []byte, n int) string { return string(b[:min(len(b), n)]) }
