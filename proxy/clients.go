package proxy

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/tracking"
)

// clientExt is a client's state beyond the data path: what CLIENT LIST and
// CLIENT KILL on other connections may read of it, its authentication, and the
// pub/sub session it moves to once it subscribes. Fields without a guard are
// used only by the client's own goroutine.
type clientExt struct {
	cc      *clientConn
	addr    string
	created time.Time
	authed  bool   // false while the proxy requires AUTH and the client has not given it
	user    string // who it authenticated as

	// flags (clientMulti...) and the subscription counts are written by the
	// client's goroutines and read by others; multi counts queued commands.
	flags           atomic.Uint32
	multi           atomic.Int32
	sub, psub, ssub atomic.Int32

	mu  sync.Mutex // guards pub
	pub published

	// ps is non-nil while the client may be subscribed. Once it has
	// subscribed, the client runs detached from redcon (pubsub.go), on dconn,
	// starting with rest: what it pipelined after the command that detached
	// it. wmu serialises writes to dconn: the pump's and the client's own.
	ps    *pubsub
	mon   *monitorSession // non-nil in monitor mode (monitor.go), detached too
	dconn redcon.DetachedConn
	rest  []redcon.Command
	wmu   sync.Mutex
}

// published is what other connections see of a client's mutable state.
type published struct {
	name, user string
	db, proto  int
}

const (
	clientMulti uint32 = 1 << iota
	clientBlocked
	clientPubSub
	clientNoEvict
	clientMonitor
)

// publish makes the client's name, user and db visible to CLIENT LIST.
func (c *client) publish() {
	c.mu.Lock()
	c.pub = published{name: c.name, user: c.user, db: c.db, proto: c.proto}
	c.mu.Unlock()
}

// published returns what other goroutines may know of the client's state.
func (c *client) published() published {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pub
}

func (c *client) setFlag(f uint32, on bool) {
	for {
		old := c.flags.Load()
		nw := old &^ f
		if on {
			nw |= f
		}
		if c.flags.CompareAndSwap(old, nw) {
			return
		}
	}
}

// registry knows every client connection, for CLIENT LIST and KILL, and for
// Close to end the ones redcon no longer owns.
type registry struct {
	mu       sync.Mutex // guards clients, closing
	clients  map[int64]*client
	closing  bool
	sessions sync.WaitGroup // detached clients' goroutines
}

func (r *registry) add(c *client) {
	r.mu.Lock()
	if r.clients == nil {
		r.clients = make(map[int64]*client)
	}
	r.clients[c.id] = c
	r.mu.Unlock()
}

// get returns the client with id, or nil.
func (r *registry) get(id int64) *client {
	r.mu.Lock()
	c := r.clients[id]
	r.mu.Unlock()
	return c
}

func (r *registry) remove(c *client) {
	r.mu.Lock()
	delete(r.clients, c.id)
	r.mu.Unlock()
}

// snapshot returns the clients sorted by id.
func (r *registry) snapshot() []*client {
	r.mu.Lock()
	out := make([]*client, 0, len(r.clients))
	for _, c := range r.clients {
		out = append(out, c)
	}
	r.mu.Unlock()
	sortClients(out)
	return out
}

func sortClients(cs []*client) {
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].id < cs[j-1].id; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}

// closeAll closes every client's socket and waits for detached clients'
// goroutines; redcon waits for nothing of its own.
func (r *registry) closeAll() {
	r.mu.Lock()
	r.closing = true
	for _, c := range r.clients {
		c.cc.Close()
	}
	r.mu.Unlock()
	r.sessions.Wait()
}

// goSession runs f as a detached client's goroutine unless the server is
// closing.
func (r *registry) goSession(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.sessions.Add(1)
	go func() {
		defer r.sessions.Done()
		f()
	}()
	return true
}

// clientLine formats c as a line of CLIENT LIST, with the fields of Redis's
// that mean something for a proxy's client.
func clientLine(b []byte, c *client, now time.Time) []byte {
	p := c.published()
	tr := c.s.track.Info(c.id)
	b = append(b, "id="...)
	b = strconv.AppendInt(b, c.id, 10)
	b = append(b, " addr="...)
	b = append(b, c.addr...)
	b = append(b, " laddr="...)
	b = append(b, c.cc.LocalAddr().String()...)
	b = append(b, " name="...)
	b = append(b, p.name...)
	b = append(b, " age="...)
	b = strconv.AppendInt(b, int64(now.Sub(c.created)/time.Second), 10)
	b = append(b, " flags="...)
	b = append(b, flagLetters(c.flags.Load(), tr)...)
	b = append(b, " db="...)
	b = strconv.AppendInt(b, int64(p.db), 10)
	b = append(b, " sub="...)
	b = strconv.AppendInt(b, int64(c.sub.Load()), 10)
	b = append(b, " psub="...)
	b = strconv.AppendInt(b, int64(c.psub.Load()), 10)
	b = append(b, " ssub="...)
	b = strconv.AppendInt(b, int64(c.ssub.Load()), 10)
	b = append(b, " multi="...)
	b = strconv.AppendInt(b, int64(c.multi.Load()), 10)
	b = append(b, " user="...)
	b = append(b, p.user...)
	b = append(b, " redir="...)
	b = strconv.AppendInt(b, tr.Redirect, 10)
	b = append(b, " resp="...)
	b = strconv.AppendInt(b, int64(p.proto), 10)
	b = append(b, '\n')
	return b
}

// flagLetters spells flags as Redis does, in Redis's order.
func flagLetters(f uint32, tr tracking.Info) string {
	s := ""
	if f&clientMonitor != 0 {
		s += "O"
	}
	if f&clientPubSub != 0 {
		s += "P"
	}
	if f&clientMulti != 0 {
		s += "x"
	}
	if f&clientBlocked != 0 {
		s += "b"
	}
	if tr.On {
		s += "t"
	}
	if tr.BrokenRedirect {
		s += "R"
	}
	if tr.BCAST {
		s += "B"
	}
	if f&clientNoEvict != 0 {
		s += "e"
	}
	if s == "" {
		s = "N"
	}
	return s
}

// clientType is CLIENT LIST/KILL's TYPE of a proxy client.
func clientType(c *client) string {
	if c.flags.Load()&clientPubSub != 0 {
		return "pubsub"
	}
	return "normal"
}

// validClientType checks a TYPE argument; master and replica are valid but
// match no client of the proxy.
func validClientType(t string) bool {
	switch t {
	case "normal", "master", "slave", "replica", "pubsub":
		return true
	}
	return false
}

// clientList answers CLIENT LIST [TYPE t] [ID id...] about the proxy's clients.
func (c *client) clientList(args [][]byte) {
	typ := ""
	var ids map[int64]bool
	switch {
	case len(args) == 2:
	case len(args) == 4 && strings.EqualFold(string(args[2]), "type"):
		typ = strings.ToLower(string(args[3]))
		if !validClientType(typ) {
			c.emitError("ERR Unknown client type '" + string(args[3]) + "'")
			return
		}
	case len(args) > 3 && strings.EqualFold(string(args[2]), "id"):
		ids = map[int64]bool{}
		for _, a := range args[3:] {
			id, err := strconv.ParseInt(string(a), 10, 64)
			if err != nil || id <= 0 {
				c.emitError("ERR Invalid client ID")
				return
			}
			ids[id] = true
		}
	default:
		c.emitError("ERR syntax error")
		return
	}
	now := time.Now()
	var b []byte
	for _, o := range c.s.reg.snapshot() {
		if (typ != "" && clientType(o) != typ) || (ids != nil && !ids[o.id]) {
			continue
		}
		b = clientLine(b, o, now)
	}
	c.emit(c.appendVerbatim(b))
}

// clientKill answers CLIENT KILL about the proxy's clients: the old form
// (an address; +OK or an error) and the filter form (a count).
func (c *client) clientKill(args [][]byte) {
	if len(args) == 3 {
		addr := string(args[2])
		victims := c.s.reg.filter(func(o *client) bool { return o.addr == addr })
		if len(victims) == 0 {
			c.emitError("ERR No such client")
			return
		}
		c.emit(replyOK)
		c.kill(victims)
		return
	}
	if len(args)%2 != 0 {
		c.emitError("ERR syntax error")
		return
	}
	var (
		id                      int64
		typ, addr, laddr, user  string
		hasAddr, hasLaddr, hasU bool
		skipMe                  = true
	)
	for i := 2; i < len(args); i += 2 {
		val := args[i+1]
		switch strings.ToLower(string(args[i])) {
		case "id":
			n, err := strconv.ParseInt(string(val), 10, 64)
			if err != nil || n <= 0 {
				c.emitError("ERR client-id should be greater than 0")
				return
			}
			id = n
		case "type":
			typ = strings.ToLower(string(val))
			if !validClientType(typ) {
				c.emitError("ERR Unknown client type '" + string(val) + "'")
				return
			}
		case "addr":
			addr, hasAddr = string(val), true
		case "laddr":
			laddr, hasLaddr = string(val), true
		case "user":
			user, hasU = string(val), true
			if !c.s.auth.knownUser(user) {
				c.emitError("ERR No such user '" + user + "'")
				return
			}
		case "skipme":
			switch strings.ToLower(string(val)) {
			case "yes":
				skipMe = true
			case "no":
				skipMe = false
			default:
				c.emitError("ERR syntax error")
				return
			}
		default:
			c.emitError("ERR syntax error")
			return
		}
	}
	victims := c.s.reg.filter(func(o *client) bool {
		o.mu.Lock()
		u := o.pub.user
		o.mu.Unlock()
		return (id == 0 || o.id == id) &&
			(typ == "" || clientType(o) == typ) &&
			(!hasAddr || o.addr == addr) &&
			(!hasLaddr || o.cc.LocalAddr().String() == laddr) &&
			(!hasU || u == user) &&
			!(skipMe && o == c)
	})
	start := len(c.arena)
	c.arena = redcon.AppendInt(c.arena, int64(len(victims)))
	c.emit(c.arena[start:len(c.arena):len(c.arena)])
	c.kill(victims)
}

func (r *registry) filter(keep func(*client) bool) []*client {
	var out []*client
	for _, o := range r.snapshot() {
		if !o.killed.Load() && keep(o) {
			out = append(out, o)
		}
	}
	return out
}

// kill closes other clients' sockets now, which ends whatever they wait on,
// and this client's own once its reply has been written, as Redis does.
func (c *client) kill(victims []*client) {
	for _, o := range victims {
		o.killed.Store(true)
		if o == c {
			c.closeAfterReply()
			continue
		}
		o.cc.Close()
	}
}

// closeAfterReply writes every reply so far and closes the connection; the
// rest of the client's pipeline is dropped, as after QUIT.
func (c *client) closeAfterReply() {
	c.flush()
	c.conn.Close()
	c.conn = nil
}
