package invalidation

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheproxy/cacheproxy/upstream/cluster"
)

// Group keeps one Target coherent with a Redis Cluster, whose masters each
// publish only their own keys' changes: it runs a Subscriber on every master
// the slot map names and follows the map as it changes.
//
// The Target is resumed only while every master's stream is trusted, each
// proven by its own canary, written to a slot that master serves; the loss of
// any one suspends it. The L1 is one cache for every slot, so a stream in
// doubt leaves every entry in doubt with it: suspending per slot would cost
// the hit path a slot computation and buy little, since a stream is
// re-established within a canary's round trip.
//
// Every change of the slot map that moves a slot or a master flushes the
// Target (and counts it: see GroupStats): a master that failed over took
// writes that nobody's stream reported between its promotion and the change
// being seen, and a slot that moved was written on a node whose events were
// awaited from another. A new master, one promoted by a failover included, starts
// unproven, so the Target stays suspended until its stream is trusted; a
// master that no longer serves slots loses its Subscriber.
//
// A node that serves no slot yet gets no stream: writes it takes through ASK
// while a slot is imported into it are unseen until the slot is its own and
// the change flushes the Target.
type Group struct {
	cfg      Config // every Subscriber's template; Options.Addr and CanaryHashTag set per master
	topology func() *cluster.Topology
	target   Target
	log      *slog.Logger

	running   atomic.Bool
	ready     chan struct{}
	readyOnce sync.Once

	changes, failovers, flushes atomic.Int64

	mu      sync.Mutex // guards the fields below; Target.Suspend and Resume run under it
	members map[string]*member
	order   []string  // the masters, as the current slot map orders them
	leaving []*member // members gone from the slot map whose Subscribers are stopping
	resumed bool
	retired State // counters of Subscribers that have stopped, so that totals never go back
	// offSince is when the Target was last suspended (zero while resumed);
	// off sums the suspensions that have ended.
	offSince time.Time
	off      time.Duration
}

// member is one master's Subscriber, and the Target it is given.
type member struct {
	g    *Group
	addr string
	sub  *Subscriber
	ctx  context.Context // sub runs until it is done
	stop context.CancelFunc
	done chan struct{} // closed when sub.Run has returned

	// Guarded by g.mu. live: the member counts towards the Group's trust
	// (false until it joins and once it leaves). resumed: its stream is
	// trusted.
	live, resumed bool
}

// NodeState is one master's stream.
type NodeState struct {
	Addr string
	State
}

// GroupStats count what topology changes did.
type GroupStats struct {
	// TopologyChanges counts slot maps that replaced another.
	TopologyChanges int64
	// Failovers counts masters that were their predecessor's replica in the
	// slot map they replaced.
	Failovers int64
	// TopologyFlushes counts whole-Target flushes for a topology change:
	// changes that moved a slot or a master (not those of replicas alone).
	TopologyFlushes int64
	// Suspended is how long the Target has been suspended in all, from
	// NewGroup on, whatever the cause.
	Suspended time.Duration
}

// NewGroup returns a Group that keeps t coherent with the cluster whose
// current slot map topology returns, and suspends t at once. cfg is every
// master's Subscriber configuration: its Options.Addr and CanaryHashTag are
// replaced per master, and its Options.Dialer is not used: each master is
// dialled at its own address (with Options.TLSConfig). It panics where New
// would.
func NewGroup(cfg Config, topology func() *cluster.Topology, t Target) *Group {
	cfg.mustCheck()
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg.Logger = log
	t.Suspend()
	return &Group{
		cfg:      cfg,
		topology: topology,
		target:   t,
		log:      log.With("component", "invalidation"),
		ready:    make(chan struct{}),
		members:  map[string]*member{},
		offSince: time.Now(),
	}
}

// Ready is closed when every master's stream is first trusted and the Target
// resumed.
func (g *Group) Ready() <-chan struct{} { return g.ready }

// Run follows the slot map until ctx is done, then returns nil with every
// Subscriber stopped and the Target suspended. It may be called once.
func (g *Group) Run(ctx context.Context) error {
	if !g.running.CompareAndSwap(false, true) {
		return errors.New("invalidation: Group.Run called twice")
	}
	var prev *cluster.Topology
	for {
		t := g.topology()
		g.follow(ctx, prev, t)
		prev = t
		select {
		case <-t.Changed():
		case <-ctx.Done():
			g.follow(ctx, prev, nil)
			return nil
		}
	}
}

// follow moves from slot map prev (nil at the start) to t (nil at the end):
// Subscribers start on new masters before those of departed ones stop, so
// that the Target, suspended by the newcomers, is never resumed in between.
func (g *Group) follow(ctx context.Context, prev, t *cluster.Topology) {
	var masters []string
	if t != nil {
		masters = t.Masters()
	}
	var joined []*member
	for _, addr := range masters {
		g.mu.Lock()
		known := g.members[addr] != nil
		g.mu.Unlock()
		if !known {
			joined = append(joined, g.newMember(ctx, addr))
		}
	}
	g.mu.Lock()
	var left []*member
	for _, m := range joined {
		m.live = true
		g.members[m.addr] = m
	}
	for addr, m := range g.members {
		if !slices.Contains(masters, addr) {
			m.live = false
			delete(g.members, addr)
			left = append(left, m)
			g.leaving = append(g.leaving, m)
		}
	}
	g.order = slices.Clone(masters)
	wasResumed := g.resumed
	g.update()
	suspended := wasResumed && !g.resumed
	g.mu.Unlock()

	if prev != nil && t != nil {
		g.changed(prev, t, joined, left, suspended)
	}
	for _, m := range joined {
		go func() {
			defer close(m.done)
			_ = m.sub.Run(m.ctx) // Run fails only when called twice
		}()
	}
	for _, m := range left {
		m.stop()
		<-m.done
		g.retire(m)
	}
}

// changed counts a change of slot map from prev to t, and flushes the
// Target unless only replicas changed. suspended says that the newcomers
// suspended the Target just now, which flushed it already.
func (g *Group) changed(prev, t *cluster.Topology, joined, left []*member, suspended bool) {
	g.changes.Add(1)
	failovers := 0
	for _, m := range joined {
		for _, old := range prev.Masters() {
			if slices.Contains(prev.Replicas(old), m.addr) {
				failovers++
			}
		}
	}
	g.failovers.Add(int64(failovers))
	moved := 0
	for slot := range cluster.Slots {
		if prev.Owner(slot) != t.Owner(slot) {
			moved++
		}
	}
	if moved == 0 && len(joined) == 0 && len(left) == 0 {
		g.log.Info("cluster topology changed: replicas only; L1 kept", "masters", t.Masters())
		return
	}
	g.flushes.Add(1)
	if !suspended {
		// A fill begun before the change, from a node that no longer
		// serves its key, must not be stored.
		g.target.FlushAll()
	}
	g.log.Warn("cluster topology changed: L1 flushed", "masters", t.Masters(),
		"joined", addrs(joined), "left", addrs(left), "slots_moved", moved, "failovers", failovers)
}

// newMember makes the Subscriber for the master at addr, not yet running nor
// counting towards trust.
func (g *Group) newMember(ctx context.Context, addr string) *member {
	cfg := g.cfg
	o := *cfg.Options
	o.Addr, o.Dialer = addr, nil
	cfg.Options = &o
	cfg.CanaryHashTag = func() string { return g.canaryTag(addr) }
	m := &member{g: g, addr: addr, done: make(chan struct{})}
	m.sub = New(cfg, m)
	m.ctx, m.stop = context.WithCancel(ctx)
	return m
}

// canaryTag is a hash tag of a slot the master at addr serves now, drawn at
// random so that a canary seldom lands in a slot being migrated (where a new
// key gets ASK), or "" if it serves none (its canary then fails and the
// session ends).
func (g *Group) canaryTag(addr string) string {
	t := g.topology()
	owned := 0
	for slot := range cluster.Slots {
		if t.Owner(slot) == addr {
			owned++
		}
	}
	if owned == 0 {
		return ""
	}
	n := rand.IntN(owned)
	for slot := range cluster.Slots {
		if t.Owner(slot) == addr {
			if n == 0 {
				return cluster.SlotTag(slot)
			}
			n--
		}
	}
	return ""
}

// update suspends or resumes the Target as the members' trust requires.
// g.mu must be held.
func (g *Group) update() {
	trusted := len(g.members) > 0
	for _, m := range g.members {
		if !m.resumed {
			trusted = false
			break
		}
	}
	if trusted == g.resumed {
		return
	}
	g.resumed = trusted
	if trusted {
		g.off += time.Since(g.offSince)
		g.offSince = time.Time{}
		g.target.Resume()
		g.readyOnce.Do(func() { close(g.ready) })
		g.log.Info("every master's invalidation stream trusted; L1 resumed", "masters", g.order)
		return
	}
	g.offSince = time.Now()
	g.target.Suspend()
}

// retire adds the counters of a member whose Subscriber has stopped to the
// Group's totals.
func (g *Group) retire(m *member) {
	st := m.sub.State()
	g.mu.Lock()
	defer g.mu.Unlock()
	addCounters(&g.retired, st)
	g.leaving = slices.DeleteFunc(g.leaving, func(l *member) bool { return l == m })
}

func addCounters(to *State, st State) {
	to.Reconnects += st.Reconnects
	to.Messages += st.Messages
	to.Malformed += st.Malformed
	to.Flushes += st.Flushes
	to.Canaries += st.Canaries
	if st.LastMessage.After(to.LastMessage) {
		to.LastMessage = st.LastMessage
	}
}

// State sums up the masters' streams: Subscribed while the Target is
// resumed, the first master's reason for CachingDisabled, counters summed
// (those of masters gone included), the latest LastMessage and the longest
// Lag.
func (g *Group) State() State {
	g.mu.Lock()
	st := g.retired
	st.Mode = g.cfg.Mode
	st.Subscribed = g.resumed
	nodes := g.nodes()
	var leaving []*Subscriber
	for _, m := range g.leaving {
		leaving = append(leaving, m.sub)
	}
	g.mu.Unlock()
	for _, s := range leaving {
		addCounters(&st, s.State())
	}
	for _, n := range nodes {
		ns := n.sub.State()
		addCounters(&st, ns)
		st.Lag = max(st.Lag, ns.Lag)
		if st.CachingDisabled == "" && ns.CachingDisabled != "" {
			st.CachingDisabled = n.addr + ": " + ns.CachingDisabled
		}
	}
	return st
}

// Nodes are the current masters' streams, in slot map order.
func (g *Group) Nodes() []NodeState {
	g.mu.Lock()
	nodes := g.nodes()
	g.mu.Unlock()
	out := make([]NodeState, len(nodes))
	for i, m := range nodes {
		out[i] = NodeState{Addr: m.addr, State: m.sub.State()}
	}
	return out
}

// nodes are the current members in slot map order. g.mu must be held.
func (g *Group) nodes() []*member {
	out := make([]*member, len(g.order))
	for i, addr := range g.order {
		out[i] = g.members[addr]
	}
	return out
}

// Stats returns the topology counters and the time suspended.
func (g *Group) Stats() GroupStats {
	g.mu.Lock()
	off := g.off
	if !g.offSince.IsZero() {
		off += time.Since(g.offSince)
	}
	g.mu.Unlock()
	return GroupStats{
		TopologyChanges: g.changes.Load(),
		Failovers:       g.failovers.Load(),
		TopologyFlushes: g.flushes.Load(),
		Suspended:       off,
	}
}

func addrs(ms []*member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.addr
	}
	return out
}

// The member's Target: keys and flushes go straight to the Group's Target;
// trust counts only while the member is live.

func (m *member) Invalidate(db int, key []byte) { m.g.target.Invalidate(db, key) }
func (m *member) InvalidateEveryDB(key []byte)  { m.g.target.InvalidateEveryDB(key) }
func (m *member) FlushAll()                     { m.g.target.FlushAll() }

func (m *member) Suspend() { m.setResumed(false) }
func (m *member) Resume()  { m.setResumed(true) }

func (m *member) setResumed(v bool) {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if !m.live {
		return
	}
	m.resumed = v
	g.update()
}

var _ Target = (*member)(nil)
