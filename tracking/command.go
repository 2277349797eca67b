package tracking

import (
	"errors"
	"slices"
	"strings"

	"github.com/cacheproxy/cacheproxy/internal/ascii"
)

// The errors of CLIENT TRACKING and CLIENT CACHING, worded as Redis 7.0 words
// them: the caller writes Error() as the error reply.
var (
	errSyntax        = errors.New("ERR syntax error")
	errNotInteger    = errors.New("ERR value is not an integer or out of range")
	errTrackingArity = errors.New("ERR wrong number of arguments for 'client|tracking' command")
	errCachingArity  = errors.New("ERR wrong number of arguments for 'client|caching' command")
	errOneRedirect   = errors.New("ERR A client can only redirect to a single other client")
	errNoRedirect    = errors.New("ERR The client ID you want redirect to does not exist")
	errPrefixNoBcast = errors.New("ERR PREFIX option requires BCAST mode to be enabled")
	errSwitchBcast   = errors.New("ERR You can't switch BCAST mode on/off before disabling tracking for this client, " +
		"and then re-enabling it with a different mode.")
	errOptBcast    = errors.New("ERR OPTIN and OPTOUT are not compatible with BCAST")
	errOptinOptout = errors.New("ERR You can't specify both OPTIN mode and OPTOUT mode")
	errSwitchOptin = errors.New("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, " +
		"and then re-enabling it with a different mode.")
	errCachingOff = errors.New("ERR CLIENT CACHING can be called only when the client is in tracking mode " +
		"with OPTIN or OPTOUT mode enabled")
	errCachingYes = errors.New("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
	errCachingNo  = errors.New("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
)

// Tracking runs CLIENT TRACKING for client id; args are the arguments after
// TRACKING: on|off [REDIRECT id] [PREFIX p]... [BCAST] [OPTIN] [OPTOUT]
// [NOLOOP]. exists reports whether a client id is connected (REDIRECT must
// name one); it is called without the table's locks. A non-nil error is the
// reply, worded and checked in the order Redis checks. Client ids are positive.
func (t *Table) Tracking(id int64, args [][]byte, exists func(id int64) bool) error {
	if len(args) == 0 {
		return errTrackingArity
	}
	var (
		redirect                     int64
		bcast, optin, optout, noloop bool
		prefixes                     []string
	)
	for j := 1; j < len(args); j++ {
		more := j < len(args)-1
		switch opt := args[j]; {
		case ascii.EqualFold(opt, "redirect") && more:
			j++
			if redirect != 0 {
				return errOneRedirect
			}
			n, ok := parseInt(args[j])
			if !ok {
				return errNotInteger
			}
			if n <= 0 || !exists(n) {
				return errNoRedirect
			}
			redirect = n
		case ascii.EqualFold(opt, "bcast"):
			bcast = true
		case ascii.EqualFold(opt, "optin"):
			optin = true
		case ascii.EqualFold(opt, "optout"):
			optout = true
		case ascii.EqualFold(opt, "noloop"):
			noloop = true
		case ascii.EqualFold(opt, "prefix") && more:
			j++
			prefixes = append(prefixes, string(args[j]))
		default:
			return errSyntax
		}
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case ascii.EqualFold(args[0], "off"):
		t.disable(id)
		return nil
	case !ascii.EqualFold(args[0], "on"):
		return errSyntax
	}

	c := t.client(id)
	var cur *mode
	if c != nil {
		cur = c.mode.Load()
	}
	switch {
	case !bcast && len(prefixes) > 0:
		return errPrefixNoBcast
	case cur != nil && cur.bcast != bcast:
		return errSwitchBcast
	case bcast && (optin || optout):
		return errOptBcast
	case optin && optout:
		return errOptinOptout
	case cur != nil && (optin && cur.optout || optout && cur.optin):
		return errSwitchOptin
	}
	var added []string
	if bcast {
		var existing []string
		if cur != nil {
			existing = cur.prefixes
		}
		// Redis 7.0 replies this error and then enables tracking all the same
		// when the overlap is not with the first prefix given; we refuse.
		if err := prefixCollision(prefixes, existing); err != nil {
			return err
		}
		if len(prefixes) == 0 {
			// BCAST alone is the empty prefix, which matches every key.
			prefixes = []string{""}
		}
		for _, p := range prefixes {
			if !slices.Contains(existing, p) {
				added = append(added, p)
			}
		}
	}

	if c == nil {
		c = &client{id: id}
		t.clients.Store(id, c)
		t.ntracking.Add(1)
	}
	m := &mode{bcast: bcast, optin: optin, optout: optout, noloop: noloop, redirect: redirect}
	if bcast {
		if cur != nil {
			m.prefixes = slices.Clone(cur.prefixes)
		}
		m.prefixes = append(m.prefixes, added...)
		slices.Sort(m.prefixes)
	}
	// Redis keeps CLIENT CACHING across a new CLIENT TRACKING on (the command
	// is a CLIENT one) and forgets a broken redirect.
	c.broken.Store(false)
	c.mode.Store(m)
	if len(added) > 0 {
		t.bcast.Store(t.bcast.Load().with(c, added))
	}
	return nil
}

// prefixCollision checks, in Redis's order, that no prefix given overlaps one
// the client has or another one given: two prefixes overlap when one starts
// with the other, since a key would then match both.
func prefixCollision(given, existing []string) error {
	overlap := func(a, b string) bool { return strings.HasPrefix(a, b) || strings.HasPrefix(b, a) }
	for i, p := range given {
		for _, e := range existing {
			if overlap(p, e) {
				return errors.New("ERR Prefix '" + cString(p) + "' overlaps with an existing prefix '" + cString(e) +
					"'. Prefixes for a single client must not overlap.")
			}
		}
		for _, q := range given[i+1:] {
			if overlap(p, q) {
				return errors.New("ERR Prefix '" + cString(p) + "' overlaps with another provided prefix '" + cString(q) +
					"'. Prefixes for a single client must not overlap.")
			}
		}
	}
	return nil
}

// cString is s as Redis's %s formats it into an error reply: cut at the first
// NUL, with CR and LF turned into spaces so that the reply stays one line.
func cString(s string) string {
	s, _, _ = strings.Cut(s, "\x00")
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

// Caching runs CLIENT CACHING for client id; args are the arguments after
// CACHING (yes|no). The flag it sets holds for the client's next command, or
// until EXEC: see CommandDone.
func (t *Table) Caching(id int64, args [][]byte) error {
	if len(args) != 1 {
		return errCachingArity
	}
	c := t.client(id)
	if c == nil {
		return errCachingOff
	}
	m := c.mode.Load()
	if m == nil {
		return errCachingOff
	}
	switch {
	case ascii.EqualFold(args[0], "yes"):
		if !m.optin {
			return errCachingYes
		}
	case ascii.EqualFold(args[0], "no"):
		if !m.optout {
			return errCachingNo
		}
	default:
		return errSyntax
	}
	c.caching.Store(true)
	return nil
}

// parseInt accepts what Redis's string2ll does: an optional minus, no plus,
// no spaces and no leading zero, within int64.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 1 && b[0] == '0' {
		return 0, true
	}
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var u uint64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		if u > (1<<64-1)/10 {
			return 0, false
		}
		u *= 10
		if u > 1<<64-1-uint64(d-'0') {
			return 0, false
		}
		u += uint64(d - '0')
	}
	switch {
	case neg && u <= 1<<63:
		return -int64(u), true
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}
