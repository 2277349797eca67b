package cluster

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// Router sends batches to the cluster in one RESP version, as an
// upstream.Pool sends them to one Redis: the proxy cannot tell them apart.
type Router struct {
	c     *Cluster
	proto int // index into node.pools: 0 RESP2, 1 RESP3
}

// Router returns the router whose connections speak RESP protocol (2 or 3).
func (c *Cluster) Router(protocol int) *Router {
	if protocol == 3 {
		return &Router{c: c, proto: 1}
	}
	return &Router{c: c, proto: 0}
}

// Databases is 1: a cluster has database 0 alone.
func (r *Router) Databases() int { return 1 }

// errOnlyDB0 fails what asks the router for another database.
var errOnlyDB0 = errors.New("cluster: only database 0 exists in a cluster")

func (r *Router) pool(addr string) *upstream.Pool { return r.c.node(addr).pools[r.proto] }

// Replies the router gives itself, in Redis Cluster's words where it has them.
var (
	replyCrossSlot  = []byte("-CROSSSLOT Keys in request don't hash to the same slot\r\n")
	replyNotServed  = []byte("-CLUSTERDOWN Hash slot not served\r\n")
	replyNoCluster  = []byte("-ERR This instance has cluster support disabled\r\n")
	replyUnsettled  = []byte("-TRYAGAIN cacheproxy: the key's slot is moving between nodes; try again\r\n")
	replyBadCursor  = []byte("-ERR invalid cursor\r\n")
	replyMSetArity  = []byte("-ERR wrong number of arguments for 'mset' command\r\n")
	replyNoShutdown = []byte("-ERR cacheproxy: SHUTDOWN is not supported through the proxy in front of a Redis Cluster; shut the nodes down directly\r\n")
	cmdAsking       = []byte("*1\r\n$6\r\nASKING\r\n")
)

// Do sends b's requests to the masters their keys live on and waits for every
// reply. db must be 0. Requests to one node travel as one pipeline; the nodes
// are asked concurrently; replies come back in request order. A command that
// spans slots is split and its replies merged (see plan), or refused with
// CROSSSLOT as Redis Cluster refuses it. As with upstream.Pool, a failure
// stops the batch short: the replies before b.Answered() are valid.
func (r *Router) Do(ctx context.Context, db int, hint uint64, b *upstream.Batch) {
	if db != 0 {
		b.ResetReplies()
		b.Fail(errOnlyDB0)
		return
	}
	if b.Len() == 0 {
		return
	}
	w := r.work(ctx, hint)
	defer w.release()
	for i := 0; i < b.Len(); i++ {
		w.plan(b.Request(i))
	}
	if addr, ok := w.single(); ok {
		// One node serves the whole batch as it is: no copies.
		r.pool(addr).Do(ctx, 0, hint, b)
		if !w.adopt(b) {
			if b.Err() != nil {
				r.c.refreshSoon()
			}
			return
		}
	} else {
		w.run(w.allParts())
	}
	w.assemble(b)
}

// work is one Do's plan and state.
type work struct {
	r    *Router
	ctx  context.Context
	hint uint64
	top  *Topology

	calls []call
	parts []part
	pos   []int // key positions of split MGETs' parts (part.pos)
	arena []byte

	args    [][]byte
	keys    [][]byte
	slots   []int
	elems   [][]byte
	pending []int
	groups  []group
	batches []*upstream.Batch // every batch this Do used, for the next one to reuse
	used    int
}

// call is one of the client's requests.
type call struct {
	how   how
	merge merge
	first int // parts[first:first+n] answer it
	n     int
	local []byte // how == local: the reply
	keys  int    // merge == mergeArray: elements in the reply
	node  int    // how == scan: the master's index
}

type how uint8

const (
	one    how = iota // a single part, the request as it is
	split             // parts per slot, merged
	fanout            // a part per master, merged
	scan              // a part to one master, its cursor rewritten
	local             // answered by the router
)

type merge uint8

const (
	mergeArray  merge = iota // MGET: elements back in key order
	mergeSum                 // DEL, EXISTS...: integers added
	mergeOK                  // MSET, FLUSHALL, SCRIPT LOAD...: the first error, else the first reply
	mergeConcat              // KEYS: arrays joined
	mergeAnd                 // SCRIPT EXISTS: 1 where every master says 1
	mergeAnyOK               // SCRIPT KILL: OK if one master killed, else the first reply
	mergeNonNil              // RANDOMKEY: the first key found
)

// part is one request sent to one node.
type part struct {
	req    []byte
	addr   string
	slot   int // -1: keyless
	asking bool
	reply  []byte
	err    error
	tries  int
	pos    int // mergeArray: w.pos[pos:pos+npos] are its keys' positions
	npos   int
}

// group is the parts sent to one node in one round.
type group struct {
	addr  string
	b     *upstream.Batch
	parts []int // part index by request index in b, -1 for an ASKING
}

var works = sync.Pool{New: func() any { return new(work) }}

func (r *Router) work(ctx context.Context, hint uint64) *work {
	w := works.Get().(*work)
	w.r, w.ctx, w.hint, w.top = r, ctx, hint, r.c.Topology()
	return w
}

func (w *work) release() {
	clear(w.calls)
	w.calls = w.calls[:0]
	clear(w.parts)
	w.parts = w.parts[:0]
	w.pos = w.pos[:0]
	w.arena = w.arena[:0]
	clear(w.args)
	w.args = w.args[:0]
	clear(w.keys)
	w.keys = w.keys[:0]
	clear(w.elems)
	w.elems = w.elems[:0]
	for i := range w.groups {
		w.groups[i] = group{parts: w.groups[i].parts[:0]}
	}
	w.groups = w.groups[:0]
	for _, b := range w.batches[:w.used] {
		b.Reset()
	}
	w.used = 0
	w.r, w.ctx, w.top = nil, nil, nil
	if cap(w.arena) > 1<<20 {
		w.arena = nil
	}
	works.Put(w)
}

// anyNode is where a keyless command goes: a master picked by the client's
// hint, so that clients spread.
func (w *work) anyNode() string {
	return w.top.masters[w.hint%uint64(len(w.top.masters))]
}

// pubsubNode serves every client's classic pub/sub and PUBSUB's questions
// about it: the cluster carries messages between nodes, but each knows only
// its own subscribers.
func (t *Topology) pubsubNode() string { return t.masters[0] }

// plan works out where req goes.
func (w *work) plan(req []byte) {
	args, ok := resp.CommandArgs(req, w.args[:0])
	w.args = args[:0]
	if !ok {
		w.one(req, -1, w.anyNode())
		return
	}
	info := w.r.c.cfg.Commands.Lookup(args)
	if info == nil || !info.ArityOK(len(args)) {
		w.one(req, -1, w.anyNode()) // the node gives its own error
		return
	}
	switch info.Name {
	case "asking", "readonly", "readwrite":
		// The client sees a Redis without cluster support; on a shared
		// connection these would act on others' commands.
		w.local(replyNoCluster)
		return
	case "mget", "exists", "del", "unlink", "touch":
		if len(args) > 2 {
			w.split(req, args, args[1:], 1, mergeOf(info.Name))
			return
		}
	case "mset":
		if len(args)%2 == 0 {
			// Redis checks the pairs after its cluster checks; one Redis
			// would answer this, whatever slots the keys are in.
			w.local(replyMSetArity)
			return
		}
		if len(args) > 3 {
			w.split(req, args, args[1:], 2, mergeOK)
			return
		}
	case "dbsize", "flushdb", "flushall", "keys", "randomkey", "script|load", "script|flush", "script|exists",
		"function|load", "function|flush", "function|delete", "function|restore", "config|set", "config|resetstat",
		"client|pause", "client|unpause":
		w.fanout(req, mergeOf(info.Name))
		return
	case "scan":
		w.scan(args)
		return
	case "pubsub|channels", "pubsub|numsub", "pubsub|numpat", "publish":
		w.one(req, -1, w.top.pubsubNode())
		return
	case "shutdown":
		w.local(replyNoShutdown)
		return
	}
	keys, _ := info.Keys(args, w.keys[:0])
	w.keys = keys[:0]
	if len(keys) == 0 {
		w.one(req, -1, w.anyNode())
		return
	}
	slot := Slot(keys[0])
	for _, k := range keys[1:] {
		if Slot(k) != slot {
			w.local(replyCrossSlot)
			return
		}
	}
	w.routeSlot(req, slot)
}

func mergeOf(name string) merge {
	switch name {
	case "mget":
		return mergeArray
	case "exists", "del", "unlink", "touch", "dbsize":
		return mergeSum
	case "keys":
		return mergeConcat
	case "script|exists":
		return mergeAnd
	case "randomkey":
		return mergeNonNil
	}
	return mergeOK
}

// routeSlot sends req to the master of slot.
func (w *work) routeSlot(req []byte, slot int) {
	addr := w.top.Owner(slot)
	if addr == "" {
		w.local(replyNotServed)
		return
	}
	w.one(req, slot, addr)
}

func (w *work) one(req []byte, slot int, addr string) {
	w.calls = append(w.calls, call{how: one, first: len(w.parts), n: 1})
	w.parts = append(w.parts, part{req: req, addr: addr, slot: slot})
}

func (w *work) local(reply []byte) {
	w.calls = append(w.calls, call{how: local, local: reply})
}

// split sends a command over several slots as one command per slot, each
// with the elements (keys, or key-value pairs: stride 2) of its slot in their
// order. A command whose keys share a slot goes as it is.
func (w *work) split(req []byte, args, elems [][]byte, stride int, m merge) {
	n := len(elems) / stride
	w.slots = w.slots[:0]
	for i := 0; i < n; i++ {
		w.slots = append(w.slots, Slot(elems[i*stride]))
	}
	same := true
	for _, s := range w.slots[1:] {
		same = same && s == w.slots[0]
	}
	if same {
		w.routeSlot(req, w.slots[0])
		return
	}
	c := call{how: split, merge: m, first: len(w.parts), keys: n}
	done := make([]bool, n)
	for i := 0; i < n; i++ {
		if done[i] {
			continue
		}
		slot := w.slots[i]
		addr := w.top.Owner(slot)
		if addr == "" {
			w.parts = w.parts[:c.first]
			w.local(replyNotServed)
			return
		}
		count := 0
		for j := i; j < n; j++ {
			if w.slots[j] == slot {
				count++
			}
		}
		p := part{addr: addr, slot: slot, pos: len(w.pos), npos: count}
		start := len(w.arena)
		w.arena = redcon.AppendArray(w.arena, 1+count*stride)
		w.arena = redcon.AppendBulk(w.arena, args[0])
		for j := i; j < n; j++ {
			if w.slots[j] != slot {
				continue
			}
			done[j] = true
			w.pos = append(w.pos, j)
			for k := 0; k < stride; k++ {
				w.arena = redcon.AppendBulk(w.arena, elems[j*stride+k])
			}
		}
		p.req = w.arena[start:len(w.arena):len(w.arena)]
		w.parts = append(w.parts, p)
		c.n++
	}
	w.calls = append(w.calls, c)
}

// fanout sends req as it is to every master.
func (w *work) fanout(req []byte, m merge) {
	c := call{how: fanout, merge: m, first: len(w.parts), n: len(w.top.masters)}
	for _, addr := range w.top.masters {
		w.parts = append(w.parts, part{req: req, addr: addr, slot: -1})
	}
	w.calls = append(w.calls, c)
}

// single reports whether every request goes as it is to one node, and which.
func (w *work) single() (string, bool) {
	addr := ""
	for i := range w.calls {
		c := &w.calls[i]
		if c.how != one {
			return "", false
		}
		p := &w.parts[c.first]
		if addr == "" {
			addr = p.addr
		} else if p.addr != addr {
			return "", false
		}
	}
	return addr, addr != ""
}

func (w *work) allParts() []int {
	w.pending = w.pending[:0]
	for i := range w.parts {
		w.pending = append(w.pending, i)
	}
	return w.pending
}

// adopt takes the replies of a batch that went whole to one node as its
// parts' replies, if any of them must be sent again (a redirection), and
// finishes them. It reports false when the batch's replies stand as they are.
func (w *work) adopt(b *upstream.Batch) bool {
	redirected := false
	for i := 0; i < b.Answered(); i++ {
		if redirection(b.Reply(i)) != 0 {
			redirected = true
			break
		}
	}
	if !redirected {
		return false
	}
	// b's replies are about to be rebuilt: keep copies.
	for i := range w.parts {
		p := &w.parts[i]
		if i < b.Answered() {
			start := len(w.arena)
			w.arena = append(w.arena, b.Reply(i)...)
			p.reply = w.arena[start:len(w.arena):len(w.arena)]
		} else {
			p.err = b.Err()
		}
	}
	w.pending = w.pending[:0]
	w.redirect()
	w.run(w.pending)
	return true
}

// Kinds of refusal after which a node did not run the command.
const (
	redirMoved = iota + 1
	redirAsk
	redirRetry // TRYAGAIN, CLUSTERDOWN: the same node, or the owner, later
)

func redirection(reply []byte) int {
	if len(reply) < 4 || reply[0] != '-' {
		return 0
	}
	switch {
	case bytes.HasPrefix(reply, []byte("-MOVED ")):
		return redirMoved
	case bytes.HasPrefix(reply, []byte("-ASK ")):
		return redirAsk
	case bytes.HasPrefix(reply, []byte("-TRYAGAIN")), bytes.HasPrefix(reply, []byte("-CLUSTERDOWN")):
		return redirRetry
	}
	return 0
}

// Bounds on sending again: rounds of redirections per Do, and retries of
// TRYAGAIN and CLUSTERDOWN per part, retryPause apart (times the try).
const (
	maxRounds  = 8
	maxRetries = 6
	retryPause = 20 * time.Millisecond
)

// run sends the pending parts, and again those a node redirected, until none
// is left or the rounds run out.
func (w *work) run(pending []int) {
	for round := 0; len(pending) > 0; round++ {
		if round == maxRounds {
			for _, i := range pending {
				w.parts[i].reply = replyUnsettled
			}
			return
		}
		w.send(pending)
		w.pending = w.pending[:0]
		if w.redirect() {
			pause(w.ctx)
		}
		pending = w.pending
	}
}

// pause waits before a retry of TRYAGAIN or CLUSTERDOWN.
func pause(ctx context.Context) {
	t := time.NewTimer(retryPause)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// redirect reads the redirections among the parts' replies and queues the
// parts to send again in w.pending. It reports whether one must wait first.
func (w *work) redirect() (wait bool) {
	for i := range w.parts {
		p := &w.parts[i]
		if p.err != nil || p.reply == nil {
			continue
		}
		switch redirection(p.reply) {
		case redirMoved:
			addr, ok := target(p.reply, p.addr)
			if !ok {
				continue
			}
			w.r.c.redirects.Add(1)
			w.r.c.refreshSoon()
			p.addr, p.asking = addr, false
		case redirAsk:
			addr, ok := target(p.reply, p.addr)
			if !ok {
				continue
			}
			w.r.c.redirects.Add(1)
			p.addr, p.asking = addr, true
		case redirRetry:
			if p.tries++; p.tries > maxRetries {
				continue
			}
			wait = true
			p.asking = false
			if p.slot >= 0 {
				if addr := w.r.c.Topology().Owner(p.slot); addr != "" {
					p.addr = addr
				}
			}
		default:
			continue
		}
		p.reply = nil
		w.pending = append(w.pending, i)
	}
	return wait
}

// target reads the address of a MOVED or ASK reply ("-MOVED 3999
// 127.0.0.1:6381"). A node that does not know its own host names none: it is
// from's host.
func target(reply []byte, from string) (string, bool) {
	line := bytes.TrimRight(reply, "\r\n")
	f := bytes.Fields(line)
	if len(f) != 3 {
		return "", false
	}
	host, port, err := net.SplitHostPort(string(f[2]))
	if err != nil {
		return "", false
	}
	if host == "" {
		host, _, _ = net.SplitHostPort(from)
	}
	return net.JoinHostPort(host, port), true
}

// send sends the parts given, grouped by node, each group as one pipeline,
// the groups concurrently, and records their replies.
func (w *work) send(idx []int) {
	w.groups = w.groups[:0]
	for _, i := range idx {
		p := &w.parts[i]
		g := w.group(p.addr)
		if p.asking {
			g.b.Add(cmdAsking)
			g.parts = append(g.parts, -1)
		}
		g.b.Add(p.req)
		g.parts = append(g.parts, i)
	}
	var wg sync.WaitGroup
	for gi := 1; gi < len(w.groups); gi++ {
		g := &w.groups[gi]
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.r.pool(g.addr).Do(w.ctx, 0, w.hint, g.b)
		}()
	}
	g0 := &w.groups[0]
	w.r.pool(g0.addr).Do(w.ctx, 0, w.hint, g0.b)
	wg.Wait()
	for gi := range w.groups {
		g := &w.groups[gi]
		if g.b.Err() != nil {
			w.r.c.refreshSoon()
		}
		for j, i := range g.parts {
			if i < 0 {
				continue
			}
			p := &w.parts[i]
			if j < g.b.Answered() {
				p.reply = g.b.Reply(j)
			} else {
				p.err = g.b.Err()
			}
		}
	}
}

// group returns the group of this round for addr, with a fresh batch.
func (w *work) group(addr string) *group {
	for i := range w.groups {
		if w.groups[i].addr == addr {
			return &w.groups[i]
		}
	}
	if w.used == len(w.batches) {
		w.batches = append(w.batches, new(upstream.Batch))
	}
	b := w.batches[w.used]
	w.used++
	if len(w.groups) < cap(w.groups) {
		w.groups = w.groups[:len(w.groups)+1]
		g := &w.groups[len(w.groups)-1]
		g.addr, g.b, g.parts = addr, b, g.parts[:0]
		return g
	}
	w.groups = append(w.groups, group{addr: addr, b: b})
	return &w.groups[len(w.groups)-1]
}

// assemble writes every call's reply into b in order, stopping at the first
// call a failure left without one.
func (w *work) assemble(b *upstream.Batch) {
	b.ResetReplies()
	for ci := range w.calls {
		c := &w.calls[ci]
		for _, p := range w.parts[c.first : c.first+c.n] {
			if p.err != nil {
				b.Fail(p.err)
				return
			}
		}
		b.AppendReply(w.merged(c))
	}
}

// merged is a call's reply, from its parts' replies.
func (w *work) merged(c *call) []byte {
	parts := w.parts[c.first : c.first+c.n]
	switch c.how {
	case local:
		return c.local
	case one:
		return parts[0].reply
	case scan:
		return w.scanReply(c, parts[0].reply)
	}
	if c.merge == mergeAnyOK {
		for _, p := range parts {
			if string(p.reply) == "+OK\r\n" {
				return p.reply
			}
		}
		return parts[0].reply
	}
	for _, p := range parts {
		if len(p.reply) > 0 && p.reply[0] == '-' {
			return p.reply
		}
	}
	start := len(w.arena)
	switch c.merge {
	case mergeSum:
		var sum int64
		for _, p := range parts {
			n, ok := resp.Integer(p.reply)
			if !ok {
				return p.reply
			}
			sum += n
		}
		w.arena = redcon.AppendInt(w.arena, sum)
	case mergeArray:
		w.arena = redcon.AppendArray(w.arena, c.keys)
		w.elems = w.elems[:0]
		for range c.keys {
			w.elems = append(w.elems, nil)
		}
		for _, p := range parts {
			got, ok := resp.ArrayElems(p.reply, nil)
			if !ok || len(got) != p.npos {
				return p.reply
			}
			for j, e := range got {
				w.elems[w.pos[p.pos+j]] = e
			}
		}
		for _, e := range w.elems {
			w.arena = append(w.arena, e...)
		}
	case mergeConcat:
		total := 0
		for _, p := range parts {
			n, _, ok := resp.ArrayBody(p.reply)
			if !ok {
				return p.reply
			}
			total += n
		}
		w.arena = redcon.AppendArray(w.arena, total)
		for _, p := range parts {
			_, body, _ := resp.ArrayBody(p.reply)
			w.arena = append(w.arena, body...)
		}
	case mergeAnd:
		first, ok := resp.ArrayElems(parts[0].reply, nil)
		if !ok {
			return parts[0].reply
		}
		w.arena = redcon.AppendArray(w.arena, len(first))
		for i := range first {
			all := true
			for _, p := range parts {
				got, ok := resp.ArrayElems(p.reply, w.elems[:0])
				w.elems = got[:0]
				if !ok || len(got) != len(first) {
					return p.reply
				}
				all = all && string(got[i]) == ":1\r\n"
			}
			if all {
				w.arena = redcon.AppendInt(w.arena, 1)
			} else {
				w.arena = redcon.AppendInt(w.arena, 0)
			}
		}
	case mergeNonNil:
		for _, p := range parts {
			if !isNil(p.reply) {
				return p.reply
			}
		}
		return parts[0].reply
	default: // mergeOK: after a fan-out every master holds the same scripts and functions
		return parts[0].reply
	}
	return w.arena[start:len(w.arena):len(w.arena)]
}

func isNil(reply []byte) bool {
	return string(reply) == "$-1\r\n" || string(reply) == "_\r\n" || string(reply) == "*-1\r\n"
}
