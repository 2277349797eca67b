package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The soak's reply checkers. Each knows what a reply may be given what the
// soak itself did, and tells a wrong reply (a failure of the soak) from an
// error reply (expected while a fault is in force).

// value is one RESP2 reply.
type value struct {
	kind byte // '+', '-', ':', '$', '*'
	str  string
	n    int64
	null bool // a nil bulk string or nil array
	arr  []value
}

func (v value) String() string {
	switch {
	case v.null:
		return "(nil)"
	case v.kind == ':':
		return ":" + strconv.FormatInt(v.n, 10)
	case v.kind == '*':
		parts := make([]string, len(v.arr))
		for i, e := range v.arr {
			parts[i] = e.String()
		}
		return "[" + strings.Join(parts, " ") + "]"
	default:
		s := v.str
		if len(s) > 60 {
			s = s[:60] + "..."
		}
		return string(v.kind) + strconv.Quote(s)
	}
}

// isBulk reports whether v is a bulk string or a nil: what GET may answer.
func (v value) isBulk() bool { return v.kind == '$' }

// errorIsWrong reports whether an error reply says the command itself was
// wrong (a type, arity or syntax error): the soak never sends such commands,
// so it is a wrong reply, not a fault's error.
func errorIsWrong(msg string) bool {
	m := strings.ToLower(msg)
	return strings.HasPrefix(m, "wrongtype") || strings.Contains(m, "unknown command") ||
		strings.Contains(m, "syntax error") || strings.Contains(m, "wrong number of arguments") ||
		strings.Contains(m, "not an integer")
}

// pendingTTL is how long a SET whose outcome is unknown (its connection
// failed, or it got an error reply) may still land: its bytes may be held on
// the way to Redis until the proxy gives up on its upstream connection
// (upstream_timeout, far shorter) and across upstream connections they may
// land after a later SET's.
const pendingTTL = time.Minute

// pendingSet is a SET of unknown outcome, kept compact: the value's head
// ("c<client>:k<key>:<seq>") and the length of its padding (a prefix of
// padding), as next writes them.
type pendingSet struct {
	head string
	pad  int
	at   time.Time
}

// maxPending bounds the SETs of unknown outcome remembered per key; a key
// with more stops being checked until its next acknowledged SET (dropping the
// oldest could fail a read of a value that did land).
const maxPending = 4096

// splitValue splits a value the soak writes into its head and padding.
func splitValue(v string) (head, pad string) {
	i := strings.LastIndexByte(v, ':')
	if i < 0 {
		return v, ""
	}
	return v[:i], v[i+1:]
}

// keyModel is what a key written only by one client may hold: the value of
// its last acknowledged SET (nil before any), or the value of a SET whose
// outcome is unknown and that may still land.
type keyModel struct {
	acked    string
	ackNil   bool
	pending  []pendingSet
	overflow bool      // more SETs of unknown outcome than maxPending since the last acknowledged one
	recent   [6]string // the last SETs' outcomes, for the report of a wrong read
	nrecent  int
}

func (k *keyModel) note(what, v string) {
	v, _ = splitValue(v) // the value's name, not its padding
	k.recent[k.nrecent%len(k.recent)] = what + " " + v
	k.nrecent++
}

// history lists the last SETs' outcomes, oldest first.
func (k *keyModel) history() string {
	var out []string
	for i := max(0, k.nrecent-len(k.recent)); i < k.nrecent; i++ {
		out = append(out, k.recent[i%len(k.recent)])
	}
	return strings.Join(out, ", ")
}

func newKeyModel() *keyModel { return &keyModel{ackNil: true} }

// setAcked records a SET that Redis acknowledged.
func (k *keyModel) setAcked(v string) {
	k.acked, k.ackNil, k.overflow = v, false, false
	k.note("acked", v)
}

// setUnknown records a SET whose outcome is unknown.
func (k *keyModel) setUnknown(v string, now time.Time) {
	k.note("unknown", v)
	k.expire(now)
	if len(k.pending) >= maxPending {
		k.overflow = true
		return
	}
	head, pad := splitValue(v)
	k.pending = append(k.pending, pendingSet{strings.Clone(head), len(pad), now})
}

func (k *keyModel) expire(now time.Time) {
	i := 0
	for i < len(k.pending) && now.Sub(k.pending[i].at) > pendingTTL {
		i++
	}
	k.pending = k.pending[i:]
}

// check checks a read of the key (GET, or an MGET element).
func (k *keyModel) check(v value, now time.Time) error {
	if !v.isBulk() {
		return fmt.Errorf("expected a bulk string or nil, got %s", v)
	}
	if v.null && k.ackNil || !v.null && !k.ackNil && v.str == k.acked {
		return nil
	}
	k.expire(now)
	if k.overflow {
		return nil
	}
	if !v.null {
		head, pad := splitValue(v.str)
		if strings.HasPrefix(padding, pad) {
			for _, p := range k.pending {
				if p.head == head && p.pad == len(pad) {
					return nil
				}
			}
		}
	}
	want := "(nil)"
	if !k.ackNil {
		want = strconv.Quote(k.acked)
	}
	return fmt.Errorf("read %s, want %s (the last acknowledged SET) or one of %d SETs of unknown outcome; last SETs: %s",
		v, want, len(k.pending), k.history())
}

// counterModel is a counter only one client INCRs: every INCR's reply is
// above the one before, by exactly 1 unless INCRs of unknown outcome came in
// between, each of which may have counted once.
type counterModel struct {
	last    int64
	unknown int64 // INCRs of unknown outcome not yet seen counted
}

func (c *counterModel) incrUnknown() { c.unknown++ }

func (c *counterModel) check(v value) error {
	if v.kind != ':' {
		return fmt.Errorf("INCR answered %s, want an integer", v)
	}
	skipped := v.n - c.last - 1
	if skipped < 0 || skipped > c.unknown {
		return fmt.Errorf("INCR answered %d after %d with %d INCRs of unknown outcome between", v.n, c.last, c.unknown)
	}
	c.last, c.unknown = v.n, c.unknown-skipped
	return nil
}

// directModel is the keys written straight to Redis, behind the proxy's back,
// with values "d:<n>", n rising per key. A read through the proxy that starts
// after a write was acknowledged plus staleBound must see that write or a
// later one: the proxy hears of the write on its invalidation stream, and if
// it loses the stream it must stop serving from its L1.
type directModel struct {
	mu    sync.Mutex
	bound time.Duration
	keys  map[string]*directKey
}

type directAck struct {
	n  int64
	at time.Time
}

type directKey struct {
	issued int64       // the highest n written (acknowledged or not)
	acks   []directAck // recent acknowledged writes, oldest first
}

func newDirectModel(bound time.Duration) *directModel {
	return &directModel{bound: bound, keys: make(map[string]*directKey)}
}

func (d *directModel) key(k string) *directKey {
	dk := d.keys[k]
	if dk == nil {
		dk = &directKey{}
		d.keys[k] = dk
	}
	return dk
}

// issue returns the value to write next to key k.
func (d *directModel) issue(k string) (int64, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dk := d.key(k)
	dk.issued++
	return dk.issued, "d:" + strconv.FormatInt(dk.issued, 10)
}

// acked records that Redis acknowledged the write of n to k at `at`.
func (d *directModel) acked(k string, n int64, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dk := d.key(k)
	dk.acks = append(dk.acks, directAck{n, at})
	// Only the newest ack older than the bound matters to reads from now on.
	i := 0
	for i+1 < len(dk.acks) && at.Sub(dk.acks[i+1].at) > d.bound {
		i++
	}
	dk.acks = dk.acks[i:]
}

// check checks a read of key k through the proxy that was sent at started.
func (d *directModel) check(k string, v value, started time.Time) error {
	if !v.isBulk() || v.null {
		return fmt.Errorf("expected a bulk string (the key is written before the load starts), got %s", v)
	}
	num, ok := strings.CutPrefix(v.str, "d:")
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil {
		return fmt.Errorf("read %s, not a value the soak writes", v)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dk := d.key(k)
	if n < 1 || n > dk.issued {
		return fmt.Errorf("read %s, but only values 1..%d were written", v, dk.issued)
	}
	var floor int64
	for _, a := range dk.acks {
		if started.Sub(a.at) > d.bound && a.n > floor {
			floor = a.n
		}
	}
	if n < floor {
		return fmt.Errorf("stale read: %s, but d:%d was acknowledged more than %v before the read", v, floor, d.bound)
	}
	return nil
}
