package cluster

import (
	"context"
	"sync"

	"github.com/cacheproxy/cacheproxy/commands"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// Dedicated opens a session for one client alone (transactions, blocking
// commands, scripts). Its connection goes to the master of the first key it
// sees; until then, and for keyless commands, to any master. A session that
// holds no state (no MULTI with keys queued, no WATCH) follows each command's
// keys to their master. Under WATCH alone, a command on another master's keys
// takes the shared path; inside MULTI it is answered CROSSSLOT, and EXEC then
// EXECABORT, as Redis Cluster ends a transaction whose keys span slots.
// Nothing is dialled until the first batch.
func (r *Router) Dedicated(ctx context.Context, db int) (upstream.Session, error) {
	if db != 0 {
		return nil, errOnlyDB0
	}
	return &session{r: r, ctx: ctx}, nil
}

// session is a client's dedicated connection to whichever master its
// commands lead to. Only its client's goroutine calls Do; Close may come from
// another (a blocked client that leaves).
type session struct {
	r   *Router
	ctx context.Context

	mu     sync.Mutex // guards conn and closed against Close
	conn   upstream.Session
	closed bool

	addr     string // conn's node
	multi    bool   // inside MULTI
	keyed    bool   // a command with keys is queued in the MULTI
	watching bool
	aborted  bool     // the proxy refused a command inside MULTI: EXEC must fail
	replay   [][]byte // MULTI and the keyless commands queued after it, to queue again on another node

	seg   upstream.Batch
	segAt []int // request index in the client's batch of each request of seg
	args  [][]byte
	keys  [][]byte
}

var (
	cmdDiscard     = []byte("*1\r\n$7\r\nDISCARD\r\n")
	replyExecAbort = []byte("-EXECABORT Transaction discarded because of previous errors.\r\n")
)

// pinned reports whether the session holds state on its node that a move
// would lose.
func (s *session) pinned() bool { return s.watching || s.multi && s.keyed }

func (s *session) Do(b *upstream.Batch) {
	b.ResetReplies()
	s.seg.Reset()
	s.segAt = s.segAt[:0]
	top := s.r.c.Topology()
	for i := 0; i < b.Len(); i++ {
		req := b.Request(i)
		info, slot, cross := s.classify(req)
		name := ""
		if info != nil {
			name = info.Name
		}
		switch {
		case cross:
			if !s.flush(b) {
				return
			}
			s.refuse(b, replyCrossSlot)
			continue
		case name == "exec" && s.multi && s.aborted:
			if !s.flush(b) {
				return
			}
			s.seg.Add(cmdDiscard)
			s.send()
			s.seg.Reset()
			s.endTx()
			b.AppendReply(replyExecAbort)
			continue
		}
		if slot >= 0 {
			owner := top.Owner(slot)
			switch {
			case owner == "":
				if !s.flush(b) {
					return
				}
				s.refuse(b, replyNotServed)
				continue
			case owner != s.addr && s.conn != nil && s.watching && !s.multi && sharable(info):
				// Under WATCH alone, commands are not part of the
				// transaction: one on another master's keys takes the
				// shared path.
				if !s.flush(b) || !s.shared(b, req) {
					return
				}
				continue
			case owner != s.addr && s.conn != nil && s.pinned():
				if !s.flush(b) {
					return
				}
				s.refuse(b, replyCrossSlot)
				continue
			case owner != s.addr:
				if !s.flush(b) || !s.move(b, owner) {
					return
				}
			}
		} else if s.conn == nil {
			if !s.move(b, top.masters[0]) {
				return
			}
		}
		s.seg.Add(req)
		s.segAt = append(s.segAt, i)
		s.track(name, slot, req)
	}
	s.flush(b)
}

// shared sends req through the router's shared connections and appends its
// reply to b. It reports false when b failed.
func (s *session) shared(b *upstream.Batch, req []byte) bool {
	var one upstream.Batch
	one.Add(req)
	s.r.Do(s.ctx, 0, 0, &one)
	if one.Answered() == 0 {
		b.Fail(one.Err())
		return false
	}
	b.AppendReply(one.Reply(0))
	return true
}

// refuse answers a command with reply without sending it; inside MULTI the
// transaction then fails at EXEC.
func (s *session) refuse(b *upstream.Batch, reply []byte) {
	if s.multi {
		s.aborted = true
	}
	b.AppendReply(reply)
}

// track follows the connection's transaction state through the commands
// sent.
func (s *session) track(name string, slot int, req []byte) {
	switch name {
	case "multi":
		if !s.multi {
			s.multi, s.keyed, s.aborted = true, false, false
			s.replay = append(s.replay[:0], append([]byte(nil), req...))
		}
		return
	case "exec", "discard":
		s.endTx()
		return
	case "reset":
		s.endTx()
		return
	case "watch":
		s.watching = true
	case "unwatch":
		if !s.multi {
			s.watching = false
		}
	}
	if s.multi {
		if slot >= 0 {
			s.keyed = true
			s.replay = s.replay[:0]
		} else if !s.keyed {
			s.replay = append(s.replay, append([]byte(nil), req...))
		}
	}
}

func (s *session) endTx() {
	s.multi, s.keyed, s.watching, s.aborted = false, false, false, false
	s.replay = s.replay[:0]
}

// sharable reports whether a command may leave the session for the shared
// connections: a plain read or write, which neither blocks, nor runs a
// script that could keep a shared connection busy, nor leaves state.
func sharable(info *commands.Info) bool {
	switch info.Name {
	case "watch", "eval_ro", "evalsha_ro", "fcall_ro":
		return false
	}
	return (info.Flags.Has(commands.ReadOnly) || info.Flags.Has(commands.Write)) && !info.Flags.Has(commands.Blocking)
}

// classify finds a request's command (nil if unknown, or of the wrong arity)
// and the slot of its keys (-1 for none); cross reports keys in several slots.
func (s *session) classify(req []byte) (info *commands.Info, slot int, cross bool) {
	args, ok := resp.CommandArgs(req, s.args[:0])
	s.args = args[:0]
	if !ok {
		return nil, -1, false
	}
	info = s.r.c.cfg.Commands.Lookup(args)
	if info == nil || !info.ArityOK(len(args)) {
		return nil, -1, false // any node gives the error
	}
	keys, _ := info.Keys(args, s.keys[:0])
	s.keys = keys[:0]
	if len(keys) == 0 {
		return info, -1, false
	}
	slot = Slot(keys[0])
	for _, k := range keys[1:] {
		if Slot(k) != slot {
			return info, slot, true
		}
	}
	return info, slot, false
}

// move puts the session on a connection to addr. Inside a MULTI that has
// queued no keys yet, the MULTI and what was queued are queued again there:
// queued commands have not run, so nothing runs twice.
func (s *session) move(b *upstream.Batch, addr string) bool {
	conn, err := s.r.pool(addr).Dedicated(s.ctx, 0)
	if err != nil {
		s.r.c.refreshSoon()
		b.Fail(err)
		return false
	}
	s.mu.Lock()
	old, closed := s.conn, s.closed
	if !closed {
		s.conn = conn
	}
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	if closed {
		conn.Close()
		b.Fail(upstream.ErrClosed)
		return false
	}
	s.addr = addr
	if s.multi && len(s.replay) > 0 {
		var rb upstream.Batch
		for _, r := range s.replay {
			rb.Add(r)
		}
		conn.Do(&rb)
		if rb.Err() != nil {
			b.Fail(rb.Err())
			return false
		}
	}
	return true
}

// send sends seg on the connection.
func (s *session) send() {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	conn.Do(&s.seg)
}

// flush sends what is queued in seg and appends its replies to b. A
// redirection of a session that holds no state is followed (the command did
// not run); one inside a transaction or under WATCH becomes an error, since
// the state cannot follow it. It reports false when b failed.
func (s *session) flush(b *upstream.Batch) bool {
	if s.seg.Len() == 0 {
		return true
	}
	defer func() {
		s.seg.Reset()
		s.segAt = s.segAt[:0]
	}()
	s.send()
	for j := 0; j < s.seg.Len(); j++ {
		if j >= s.seg.Answered() {
			s.r.c.refreshSoon()
			b.Fail(s.seg.Err())
			return false
		}
		reply := s.seg.Reply(j)
		if redirection(reply) != 0 {
			if s.pinned() || s.multi {
				s.r.c.refreshSoon() // so that the client's next try meets the new map
				reply = replyUnsettled
			} else {
				reply = s.follow(s.seg.Request(j), reply)
				if reply == nil {
					b.Fail(s.seg.Err())
					return false
				}
			}
		}
		b.AppendReply(reply)
	}
	return true
}

// follow sends req, refused with a redirection, where the redirection says,
// a few times at most. It returns the final reply, or nil after a failure.
func (s *session) follow(req, reply []byte) []byte {
	for try := 0; try < maxRetries; try++ {
		kind := redirection(reply)
		if kind == 0 {
			return reply
		}
		addr := s.addr
		if kind != redirRetry {
			var ok bool
			if addr, ok = target(reply, s.addr); !ok {
				return reply
			}
			s.r.c.redirects.Add(1)
			s.r.c.refreshSoon()
		} else {
			pause(s.ctx)
		}
		var rb upstream.Batch
		if addr != s.addr {
			if !s.move(&rb, addr) {
				s.seg.Fail(rb.Err())
				return nil
			}
		}
		if kind == redirAsk {
			rb.Add(cmdAsking)
		}
		rb.Add(req)
		s.mu.Lock()
		conn := s.conn
		s.mu.Unlock()
		conn.Do(&rb)
		if rb.Answered() < rb.Len() {
			s.seg.Fail(rb.Err())
			return nil
		}
		reply = append([]byte(nil), rb.Reply(rb.Len()-1)...)
	}
	if redirection(reply) != 0 {
		return replyUnsettled
	}
	return reply
}

func (s *session) Usable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && (s.conn == nil || s.conn.Usable())
}

func (s *session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return upstream.ErrClosed
	}
	if s.conn != nil {
		return s.conn.Err()
	}
	return nil
}

func (s *session) Close() {
	s.mu.Lock()
	conn := s.conn
	s.closed = true
	s.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// Urgent sends SCRIPT KILL and FUNCTION KILL to every master, each on a
// connection of its own (see upstream.Pool.Urgent): the script may run on any
// of them. SHUTDOWN is refused: the proxy will not stop one node of many.
func (r *Router) Urgent(ctx context.Context, b *upstream.Batch) {
	w := r.work(ctx, 0)
	defer w.release()
	for i := 0; i < b.Len(); i++ {
		args, ok := resp.CommandArgs(b.Request(i), w.args[:0])
		w.args = args[:0]
		var info string
		if ok {
			if in := r.c.cfg.Commands.Lookup(args); in != nil {
				info = in.Name
			}
		}
		switch info {
		case "script|kill", "function|kill":
			w.fanout(b.Request(i), mergeAnyOK)
		case "shutdown":
			w.local(replyNoShutdown)
		default:
			w.one(b.Request(i), -1, w.anyNode())
		}
	}
	var wg sync.WaitGroup
	subs := make([]upstream.Batch, len(w.parts))
	for i := range w.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &w.parts[i]
			subs[i].Add(p.req)
			r.pool(p.addr).Urgent(ctx, &subs[i])
			if subs[i].Answered() > 0 {
				p.reply = subs[i].Reply(0)
			} else {
				p.err = subs[i].Err()
			}
		}()
	}
	wg.Wait()
	w.assemble(b)
}
