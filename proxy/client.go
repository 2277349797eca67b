package proxy

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/acl"
	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/l1"
	"github.com/cacheproxy/cacheproxy/policy"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// client is one client connection's state. It is used only by the
// connection's redcon goroutine.
type client struct {
	s    *Server
	conn redcon.Conn
	wr   *redcon.Writer // conn's reply buffer, which building measures
	// built is the size of wr's buffer when building last looked (limits.go).
	built int64
	id    int64
	hint  uint64 // keeps this client's batches on one shared upstream connection
	// killed: a CLIENT KILL closed the client, which Redis frees at once, so
	// no later KILL finds it while its goroutine is still winding down.
	killed atomic.Bool
	db     int
	name   string
	// proto is the RESP version the client speaks, 2 or 3 (HELLO): it picks
	// the upstream pool and the L1 entries its replies come from.
	proto int
	// tracking: CLIENT TRACKING is on (tracking.go).
	tracking bool
	// perm is what the client's user may do (permissions.go); never nil.
	perm *acl.User

	counts commandCounts // commands by name since the last batch ended (metrics.go)

	// The current segment: commands whose replies wait on the upstream batch,
	// in client order. Replies are written once the batch returns.
	cmds   []redcon.Command
	slots  []slot
	batch  upstream.Batch
	arena  []byte // requests and replies built by the proxy for this segment
	elems  []elem // MGET elements of this segment
	keys   [][]byte
	writes bool      // a write is queued in this segment: later reads must not use the L1
	sent   time.Time // when the segment's batch left: upstream TTLs count from here

	// Fills this client led and resolved, to store once their replies are
	// written (resolve).
	resolved []resolvedFill

	// tx is non-nil while the client holds a dedicated upstream connection for
	// MULTI or WATCH.
	tx *txState

	clientExt // authentication, pub/sub, what CLIENT LIST shows (clients.go)
}

type slotKind uint8

const (
	slotData   slotKind = iota // data is the reply
	slotUp                     // batch reply idx is the reply
	slotFill                   // batch reply idx fills fill; reply aux is the key's PTTL
	slotFollow                 // fill (another client's or an earlier slot's) has the reply
	slotWrite                  // batch reply idx; invalidate what cmd wrote first
	slotMGet                   // elems[aux:aux+n] are the elements; idx is the upstream MGET of misses
	slotTx                     // batch reply idx answers MULTI/EXEC/DISCARD/SELECT on a dedicated connection
)

type slot struct {
	kind slotKind
	idx  int // batch index
	aux  int
	n    int
	data []byte
	fill *l1.Fill
	pol  *policy.Policy
	info *commands.Info
	args [][]byte
}

// elem is one key of an MGET.
type elem struct {
	data []byte   // the element, when known
	fill *l1.Fill // the fill that brings it, when not
	pos  int      // leader: position in the upstream MGET and its PTTL's batch index (pttl)
	pttl int
	pol  *policy.Policy
	lead bool
}

// run handles one pipelined batch of commands.
func (c *client) run() {
	for i := range c.cmds {
		c.command(c.cmds[i])
		if c.conn == nil {
			return
		}
		if c.building() {
			c.gone()
			return
		}
	}
	c.flush()
}

// emit answers a command with bytes that are ready now. They can go straight to
// the client only when nothing before them is still waiting on the upstream.
func (c *client) emit(b []byte) {
	if len(c.slots) == 0 {
		c.conn.WriteRaw(b)
		return
	}
	c.slots = append(c.slots, slot{kind: slotData, data: b})
}

// forward queues a command for the upstream as the client sent it.
func (c *client) forward(raw []byte) {
	c.slots = append(c.slots, slot{kind: slotUp, idx: c.batch.Add(raw)})
}

// command classifies one command and either answers it or queues it.
func (c *client) command(cmd redcon.Command) {
	args := cmd.Args
	rt := route(args[0])
	// The table lookup is made once, here, for the metric and the dispatch
	// below; routed commands (the hit path) need none.
	var info *commands.Info
	if rt.kind == routeOther {
		info = c.s.cmds.Lookup(args)
	}
	c.countCommand(rt, info)
	if !c.authed {
		c.unauthenticated(cmd)
		return
	}
	// Before the L1: a hit must not bypass a permission.
	if c.perm.Restricted && !c.permitted(rt, info, args) {
		return
	}
	if info != nil && info.Name == "debug" && c.proto == 3 && debugPush(args) {
		c.refuseDebugPush()
		return
	}
	if c.tracking {
		c.trackCommand(rt, info, args)
	}
	if c.tx != nil {
		c.txCommand(cmd)
		return
	}
	switch rt.kind {
	case routeRead:
		if len(args) >= rt.minArgs && (rt.maxArgs == 0 || len(args) <= rt.maxArgs) {
			c.read(rt, cmd)
			return
		}
	case routeMGet:
		if len(args) >= 2 {
			c.mget(cmd)
			return
		}
	case routeLocal:
		c.local(rt, cmd)
		return
	}
	if info == nil {
		info = c.s.cmds.Lookup(args) // a read or MGET of the wrong arity
	}
	switch {
	case info == nil:
		c.forward(cmd.Raw)
	case info.Name == "script|kill" || info.Name == "function|kill" || info.Name == "shutdown":
		c.urgent(cmd, info)
	case info.Flags.Has(commands.Blocking) || info.Name == "wait" || info.Name == "waitaof":
		c.flush()
		c.blocking(cmd, info, true)
	case scripted(info):
		c.flush()
		c.blocking(cmd, info, false)
	case writes(info):
		c.slots = append(c.slots, slot{kind: slotWrite, idx: c.batch.Add(cmd.Raw), info: info, args: args})
		c.writes = true
	default:
		c.forward(cmd.Raw)
	}
}

// writes reports whether a command may change keys. Scripts and functions
// (EVAL, EVALSHA, FCALL) are flagged neither write nor readonly: Redis 7.0 marks
// them only no_mandatory_keys, later versions may_replicate; their read-only
// forms (EVAL_RO, FCALL_RO) are readonly.
func writes(info *commands.Info) bool {
	return info.Flags.Has(commands.Write) || info.Flags.Has(commands.MayReplicate) ||
		info.Flags&(commands.NoMandatoryKeys|commands.ReadOnly) == commands.NoMandatoryKeys
}

// scripted reports scripts and functions. They run on a connection of their
// own, as blocking commands do: one that runs long makes Redis answer BUSY to
// everyone else, and commands pipelined behind it on a shared connection would
// not even be read until it ends, where on Redis they get their BUSY at once.
func scripted(info *commands.Info) bool {
	switch info.Name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
		return true
	}
	return false
}

// urgent sends a command that must reach Redis even while a script keeps it
// busy (SCRIPT KILL, FUNCTION KILL, SHUTDOWN NOSAVE) on a fresh connection:
// on any connection already in use it would wait behind whatever that carries.
func (c *client) urgent(cmd redcon.Command, info *commands.Info) {
	c.flush()
	var b upstream.Batch
	b.Add(cmd.Raw)
	c.pool().Urgent(c.s.ctx, &b)
	switch {
	case b.Answered() > 0:
		c.emit(b.Reply(0))
	case info.Name == "shutdown" && errors.Is(b.Err(), io.EOF):
		// Redis closes the connection of a SHUTDOWN that succeeded.
		c.conn.Close()
		c.conn = nil
	default:
		c.emitUpstreamError(b.Err())
	}
}

// read handles a cacheable read of one key.
func (c *client) read(rt *routeInfo, cmd redcon.Command) {
	args := cmd.Args
	key := args[1]
	ps := c.s.policies.Load()
	p := ps.set.Lookup(key)
	if !p.Cache || c.writes {
		c.forward(cmd.Raw)
		return
	}
	variant := c.variant(args, rt)
	if reply, ok := c.lookup(ps, p, key, variant, 0); ok {
		c.emitCached(reply)
		return
	}
	f, leader := c.begin(ps, p, key, variant)
	if !leader {
		c.slots = append(c.slots, slot{kind: slotFollow, fill: f})
		return
	}
	idx := c.batch.Add(cmd.Raw)
	pttl := c.batch.Add(c.appendCommand("PTTL", key))
	c.slots = append(c.slots, slot{kind: slotFill, idx: idx, aux: pttl, fill: f, pol: p})
}

// pool is the upstream that speaks the client's protocol.
func (c *client) pool() Upstream {
	if c.proto == 3 {
		return c.s.up3
	}
	return c.s.up
}

// variant encodes what, beside the key, selects a reply: the protocol (the
// same read answers a map in RESP3 and an array in RESP2), the command name
// and the arguments after the key, each length-prefixed so no two differ in
// bytes yet encode alike. It lives in the arena until the segment ends.
func (c *client) variant(args [][]byte, rt *routeInfo) []byte {
	start := len(c.arena)
	if c.proto == 3 {
		c.arena = append(c.arena, '3') // no command name starts with a digit
	}
	c.arena = append(c.arena, rt.name...)
	for _, a := range args[2:] {
		c.arena = append(c.arena, 0, byte(len(a)>>24), byte(len(a)>>16), byte(len(a)>>8), byte(len(a)))
		c.arena = append(c.arena, a...)
	}
	return c.arena[start:len(c.arena):len(c.arena)]
}

// appendCommand builds a command in the arena.
func (c *client) appendCommand(args ...any) []byte {
	start := len(c.arena)
	c.arena = redcon.AppendArray(c.arena, len(args))
	for _, a := range args {
		switch a := a.(type) {
		case string:
			c.arena = redcon.AppendBulkString(c.arena, a)
		case []byte:
			c.arena = redcon.AppendBulk(c.arena, a)
		}
	}
	return c.arena[start:len(c.arena):len(c.arena)]
}

// flush sends the segment's batch upstream, settles fills and invalidations,
// and writes every waiting reply in order.
func (c *client) flush() {
	if len(c.slots) == 0 {
		c.resetSegment()
		return
	}
	if c.batch.Len() > 0 {
		start := time.Now()
		c.sent = start
		if c.tx != nil {
			c.tx.conn.Do(&c.batch)
		} else {
			c.pool().Do(c.s.ctx, c.db, c.hint, &c.batch)
		}
		c.observeUpstream(start)
		if h := c.s.afterUpstream; h != nil {
			h()
		}
	}
	// Settle before replying: a write's keys leave the L1 before its reply
	// reaches the client, and fills complete before any follower waits.
	for i := range c.slots {
		c.settle(&c.slots[i])
	}
	for i := range c.slots {
		if c.building() {
			break // the client is gone: its replies are not built
		}
		c.reply(&c.slots[i])
	}
	c.resetSegment()
}

func (c *client) resetSegment() {
	clear(c.slots)
	c.slots = c.slots[:0]
	clear(c.elems)
	c.elems = c.elems[:0]
	c.batch.Reset()
	c.arena = c.arena[:0]
	c.writes = false
}

// upReply is batch reply i, or an error reply when the batch broke before it.
func (c *client) upReply(i int) []byte {
	if i < c.batch.Answered() {
		return c.batch.Reply(i)
	}
	return c.upstreamError()
}

func (c *client) upstreamError() []byte {
	return upstreamErrorReply(c.batch.Err())
}

// upstreamErrorReply is the reply to a command the upstream could not take.
// Where Redis itself refused the connection's set-up (BUSY running a script,
// LOADING), it is Redis's own error, as a client connected directly would
// have had it.
func upstreamErrorReply(err error) []byte {
	var re *upstream.ReplyError
	if errors.As(err, &re) {
		return re.Line
	}
	msg := "-ERR cacheproxy: upstream unavailable"
	if err != nil {
		msg += " (" + sanitize(err.Error()) + ")"
	}
	return []byte(msg + "\r\n")
}

// emitUpstreamError answers a command whose upstream connection could not be
// had.
func (c *client) emitUpstreamError(err error) {
	c.emit(upstreamErrorReply(err))
}

func (c *client) settle(s *slot) {
	switch s.kind {
	case slotFill:
		if s.idx >= c.batch.Answered() && s.pol.StaleIfError > 0 {
			if old, ok := c.staleIfError(s.fill, s.pol); ok {
				c.resolve(s.fill, old, 0, false)
				return
			}
		}
		reply := c.upReply(s.idx)
		ttl, store := fillTTL(s.pol, reply, c.upReply(s.aux), time.Since(c.sent))
		if store && s.pol.StaleIfError > 0 {
			s.fill.KeepLast()
		}
		c.resolve(s.fill, append([]byte(nil), reply...), ttl, store)
	case slotWrite:
		c.invalidateWrite(c.db, s.info, s.args)
	case slotMGet:
		c.settleMGet(s)
	case slotTx:
		c.settleTx(s)
	}
}

// resolve hands reply to the followers of f, a fill this client leads, and
// leaves its store in the L1 to storeFills, once the client has its replies: a
// store costs a lone client's miss several microseconds, most of them in waking
// ristretto's goroutine.
func (c *client) resolve(f *l1.Fill, reply []byte, ttl time.Duration, store bool) {
	f.Cache().Resolve(f, reply, ttl, store)
	c.resolved = append(c.resolved, resolvedFill{f, ttl})
}

type resolvedFill struct {
	f   *l1.Fill
	ttl time.Duration // for the debug log's FILL line
}

// storeFills stores the fills that resolve left. clientConn.Write calls it
// after each write of replies, and Server.forget for a connection that ended
// before its replies were written.
func (c *client) storeFills() {
	for _, r := range c.resolved {
		c.s.cache.store(r.f, r.ttl)
	}
	clear(c.resolved)
	c.resolved = c.resolved[:0]
}

func (c *client) reply(s *slot) {
	switch s.kind {
	case slotData:
		c.conn.WriteRaw(s.data)
	case slotUp, slotWrite, slotTx:
		c.conn.WriteRaw(c.upReply(s.idx))
	case slotFill, slotFollow:
		c.writeShared(s.fill.Wait())
	case slotMGet:
		c.replyMGet(s)
	}
}

// fillTTL decides whether and for how long a fill is kept: the policy's TTL,
// capped by the key's remaining upstream TTL so that no entry outlives the key.
// The PTTL was measured somewhere in the elapsed time since the batch was
// sent, so elapsed is taken off it: the entry may die early, never late.
func fillTTL(p *policy.Policy, reply, pttl []byte, elapsed time.Duration) (time.Duration, bool) {
	if len(reply) == 0 || reply[0] == '-' {
		return 0, false // errors are never cached
	}
	if !p.CacheNil && isNil(reply) {
		return 0, false
	}
	ms, ok := parseInteger(pttl)
	if !ok {
		return 0, false
	}
	ttl := p.TTL
	switch {
	case ms == -1 || ms == -2: // no expiry, or no key (a nil reply)
	case ms <= 0:
		return 0, false
	case time.Duration(ms)*time.Millisecond-elapsed < ttl:
		ttl = time.Duration(ms)*time.Millisecond - elapsed
	}
	return ttl, ttl > 0
}

func isNil(reply []byte) bool {
	return len(reply) >= 3 && (reply[0] == '$' || reply[0] == '*') && reply[1] == '-' && reply[2] == '1' ||
		len(reply) == 3 && reply[0] == '_'
}

// parseInteger reads a RESP integer reply (":123\r\n").
func parseInteger(b []byte) (int64, bool) {
	if len(b) < 4 || b[0] != ':' {
		return 0, false
	}
	b = b[1 : len(b)-2]
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		n = n*10 + int64(ch-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// release frees what the client holds upstream when its connection ends.
func (c *client) release() {
	if c.tx != nil {
		c.tx.conn.Close()
		c.tx = nil
	}
}

func sanitize(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch == '\r' || ch == '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}
