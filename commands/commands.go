// Package commands owns the proxy's command table: which commands exist, their
// arity and flags, and where their keys are. It learns all of that from the
// upstream's own COMMAND reply at start-up, so a newer Redis brings its new
// commands with it; the only hand-kept knowledge is for the few commands whose
// key specifications Redis itself marks incomplete. Key extraction follows
// Redis 7 key specs (begin_search, then find_keys) and falls back to the legacy
// first/last/step triple for servers that publish no specs. The package never
// sends a command to Redis except the one-off COMMAND in Load.
package commands

import "github.com/cacheproxy/cacheproxy/internal/ascii"

// Flags is the set of command flags Redis reports in COMMAND. Flags Redis
// reports that are not listed here are ignored.
type Flags uint32

// Command flags, named after Redis's lower-case flag names.
const (
	Write           Flags = 1 << iota // "write"
	ReadOnly                          // "readonly"
	Denyoom                           // "denyoom"
	Module                            // "module"
	Admin                             // "admin"
	PubSub                            // "pubsub"
	NoScript                          // "noscript"
	Blocking                          // "blocking"
	Loading                           // "loading"
	Stale                             // "stale"
	SkipMonitor                       // "skip_monitor"
	SkipSlowlog                       // "skip_slowlog"
	Asking                            // "asking"
	Fast                              // "fast"
	NoAuth                            // "no_auth"
	MayReplicate                      // "may_replicate"
	NoMandatoryKeys                   // "no_mandatory_keys"
	NoAsyncLoading                    // "no_async_loading"
	NoMulti                           // "no_multi"
	MovableKeys                       // "movablekeys"
	AllowBusy                         // "allow_busy"
)

var flagNames = map[string]Flags{
	"write":             Write,
	"readonly":          ReadOnly,
	"denyoom":           Denyoom,
	"module":            Module,
	"admin":             Admin,
	"pubsub":            PubSub,
	"noscript":          NoScript,
	"blocking":          Blocking,
	"loading":           Loading,
	"stale":             Stale,
	"skip_monitor":      SkipMonitor,
	"skip_slowlog":      SkipSlowlog,
	"asking":            Asking,
	"fast":              Fast,
	"no_auth":           NoAuth,
	"may_replicate":     MayReplicate,
	"no_mandatory_keys": NoMandatoryKeys,
	"no_async_loading":  NoAsyncLoading,
	"no_multi":          NoMulti,
	"movablekeys":       MovableKeys,
	"allow_busy":        AllowBusy,
}

// Has reports whether every flag in g is set in f.
func (f Flags) Has(g Flags) bool { return f&g == g }

// Info describes one command or subcommand as the upstream reported it.
// It is immutable once the Table is built and safe for concurrent use.
type Info struct {
	Name  string // lower case; "container|sub" for subcommands, e.g. "config|get"
	Arity int    // Redis's rule: positive is exact, negative is a minimum of -Arity
	Flags Flags

	specs   []keySpec        // in the server's order; legacy first/last/step is turned into one spec
	special keysFunc         // replaces specs where Redis's own specs are incomplete
	subs    map[string]*Info // by the part after '|'; non-nil only for containers
}

// ArityOK reports whether an invocation of n arguments, the command name
// included, satisfies the command's arity.
func (i *Info) ArityOK(n int) bool {
	if i.Arity >= 0 {
		return n == i.Arity
	}
	return n >= -i.Arity
}

// Table maps command names to their Info. It is immutable once built and safe
// for concurrent use.
type Table struct {
	cmds    map[string]*Info
	maxName int // longest name in cmds or in any container's subs: longer input is unknown without a look
}

// stackName is the longest name Lookup lower-cases on the stack; longer known
// names (only modules have them) are found by a case-folding scan instead.
const stackName = 64

// Lookup returns the Info for the command in args[0], in any case. For a
// container command (CONFIG, CLIENT, OBJECT, XGROUP, ...) it resolves args[1]
// to the subcommand's Info; an unknown subcommand is unknown (nil), and a
// container without args[1] is returned as itself so its arity check fails.
// It does not allocate.
func (t *Table) Lookup(args [][]byte) *Info {
	if t == nil || len(args) == 0 {
		return nil
	}
	info := t.find(t.cmds, args[0])
	if info == nil || info.subs == nil || len(args) < 2 {
		return info
	}
	return t.find(info.subs, args[1])
}

func (t *Table) find(m map[string]*Info, name []byte) *Info {
	if len(name) > t.maxName {
		return nil
	}
	if len(name) > stackName {
		for k, info := range m {
			if ascii.EqualFold(name, k) {
				return info
			}
		}
		return nil
	}
	var buf [stackName]byte
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return m[string(buf[:len(name)])]
}
