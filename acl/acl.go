// Package acl is the proxy's permission model, a small subset of Redis's ACL.
// A user may be read-only (Redis's commands flagged write, and scripts that
// may write, are refused), limited to keys matching patterns (Redis's
// "~pattern"), and an admin or not (the proxy's own and Redis's admin
// commands). Which command is which is the caller's to say, from the command
// table; this package compiles the permissions once so that checking them on
// every command is a boolean for an unrestricted user and a pattern match per
// key for a key-restricted one, without allocating.
package acl

import "fmt"

// Permissions are what a user may do, as configured.
type Permissions struct {
	// ReadOnly refuses commands that write.
	ReadOnly bool
	// Admin allows the proxy's CACHEPROXY subcommands and the commands Redis
	// flags admin (CONFIG, CLIENT KILL and LIST, MONITOR, SHUTDOWN, DEBUG...).
	Admin bool
	// Keys are the patterns every key of a command must match; nil allows
	// every key, as Redis's "~*" (allkeys).
	Keys []string
}

// User is a user's compiled permissions. It is immutable and safe for
// concurrent use.
type User struct {
	// Restricted is false for a user who may do everything: then no other
	// check is needed.
	Restricted bool
	ReadOnly   bool
	Admin      bool
	// AllKeys: every key is allowed; otherwise a key must match one of keys.
	AllKeys bool
	keys    []Pattern
}

// Unrestricted is the user who may do everything, as Redis's default user
// without ACL rules ("on nopass ~* &* +@all").
var Unrestricted = &User{Admin: true, AllKeys: true}

// New compiles p. Its errors name the offending pattern by its position.
func New(p Permissions) (*User, error) {
	u := &User{ReadOnly: p.ReadOnly, Admin: p.Admin, AllKeys: p.Keys == nil}
	if p.Keys != nil && len(p.Keys) == 0 {
		return nil, fmt.Errorf("keys lists no pattern: leave it out to allow every key")
	}
	for i, src := range p.Keys {
		pat, err := Compile(src)
		if err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		if pat.kind == matchAll {
			u.AllKeys = true
		}
		u.keys = append(u.keys, pat)
	}
	if u.AllKeys {
		u.keys = nil
	}
	u.Restricted = u.ReadOnly || !u.Admin || !u.AllKeys
	return u, nil
}

// Key reports whether the user may use key.
func (u *User) Key(key []byte) bool {
	if u.AllKeys {
		return true
	}
	for i := range u.keys {
		if u.keys[i].Match(key) {
			return true
		}
	}
	return false
}

// Keys reports whether the user may use every one of keys.
func (u *User) Keys(keys [][]byte) bool {
	if u.AllKeys {
		return true
	}
	for _, k := range keys {
		if !u.Key(k) {
			return false
		}
	}
	return true
}
