package redistest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterOptions tune StartCluster.
type ClusterOptions struct {
	// NotifyKeyspaceEvents is every node's notify-keyspace-events, as in
	// Options: empty means "KEA".
	NotifyKeyspaceEvents string
	// Args are extra redis-server arguments for every node.
	Args []string
}

// Cluster is a running Redis Cluster of three masters, each followed by one
// replica, all on loopback ports. Its topology changes only through its
// methods (Failover, Reshard, MigrateSlot), each of which returns once every
// node agrees on the outcome.
//
// A test that shares a cluster started by another (a parent test) calls For
// first, so that a failure ends the test that met it.
type Cluster struct {
	t testing.TB // failed when a helper fails
	*nodeSet
}

// ClusterTest is a test that runs on a cluster shared with others (see
// RunClusterTests).
type ClusterTest struct {
	Name string
	F    func(t *testing.T, rc *Cluster)
}

// RunClusterTests starts one cluster for a package's tests, since starting
// one costs seconds, and runs on it first the steady tests, which leave its
// topology alone, side by side (each keeps to keys of its own), then, one at a
// time, the moving ones, which flush it or move slots and masters.
func RunClusterTests(t *testing.T, steady, moving []ClusterTest) {
	rc := StartCluster(t, ClusterOptions{})
	t.Run("steady", func(t *testing.T) {
		for _, tc := range steady {
			t.Run(tc.Name, func(t *testing.T) {
				t.Parallel()
				tc.F(t, rc.For(t))
			})
		}
	})
	for _, tc := range moving {
		t.Run(tc.Name, func(t *testing.T) { tc.F(t, rc.For(t)) })
	}
}

// nodeSet is what every view of a cluster (see For) shares.
type nodeSet struct {
	nodes []*Server
	ids   map[string]string // node id by address

	mu     sync.Mutex // guards client, direct
	client *redis.ClusterClient
	direct map[string]*redis.Client // to each node alone, by address
}

// For returns the cluster as seen by test t: its helpers fail t. The nodes
// still stop when the test that started them ends.
func (c *Cluster) For(t testing.TB) *Cluster { return &Cluster{t: t, nodeSet: c.nodeSet} }

// Shard is one master, the slots it serves and its replicas, as the cluster
// sees them now.
type Shard struct {
	Master   string   // host:port
	Replicas []string // host:port each
	Slots    [][2]int // inclusive ranges, ascending
}

// settleWait bounds every wait for the cluster to agree on its topology: on a
// loaded machine gossip can take seconds.
const settleWait = 60 * time.Second

// StartCluster starts six cluster-enabled redis-servers, joins them with
// `redis-cli --cluster create --cluster-replicas 1` and waits until every node
// reports cluster_state:ok, agrees with the others on who serves which slot,
// and every replica is in sync with its master. Every node stops when the test
// ends.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli is not installed (apt-get install -y redis-tools): %v", err)
	}
	c := &Cluster{t: t, nodeSet: &nodeSet{ids: map[string]string{}, direct: map[string]*redis.Client{}}}
	args := []string{"--cluster", "create"}
	for i := 0; i < 6; i++ {
		n := Start(t, Options{NotifyKeyspaceEvents: opts.NotifyKeyspaceEvents, Args: opts.Args, Cluster: true})
		c.nodes = append(c.nodes, n)
		args = append(args, n.Addr())
		id, err := c.NodeClient(n.Addr()).Do(context.Background(), "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatalf("CLUSTER MYID on %s: %v", n.Addr(), err)
		}
		c.ids[n.Addr()] = id
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	c.redisCLI(args...)
	c.WaitSettled()
	return c
}

// redisCLI runs redis-cli with args and fails the test if it fails.
func (c *Cluster) redisCLI(args ...string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*settleWait)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Seeds are the addresses of every node, masters and replicas, in start order.
func (c *Cluster) Seeds() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// Node returns the node at addr, or nil.
func (c *Cluster) Node(addr string) *Server {
	for _, n := range c.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// ID is the cluster node id of the node at addr.
func (c *Cluster) ID(addr string) string { return c.ids[addr] }

// NodeClient is a go-redis client (RESP2) to the node at addr alone, closed
// when the test ends.
func (c *Cluster) NodeClient(addr string) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.direct[addr] == nil {
		c.direct[addr] = c.Node(addr).Client(0)
	}
	return c.direct[addr]
}

// Client is a go-redis ClusterClient (RESP2) to the cluster, closed when the
// test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Seeds(), Protocol: 2})
		c.client = cc
		c.nodes[0].t.Cleanup(func() { cc.Close() })
	}
	return c.client
}

// Shards is the topology as the first node sees it now, masters ordered by
// their first slot.
func (c *Cluster) Shards() []Shard {
	c.t.Helper()
	view, err := c.view(c.nodes[0])
	if err != nil {
		c.t.Fatalf("cluster topology: %v", err)
	}
	return view.shards()
}

// Owner is the address of the master serving slot now.
func (c *Cluster) Owner(slot int) string {
	c.t.Helper()
	for _, s := range c.Shards() {
		for _, r := range s.Slots {
			if r[0] <= slot && slot <= r[1] {
				return s.Master
			}
		}
	}
	c.t.Fatalf("no master serves slot %d", slot)
	return ""
}

// Slot asks a node for key's hash slot (CLUSTER KEYSLOT).
func (c *Cluster) Slot(key string) int {
	c.t.Helper()
	n, err := c.NodeClient(c.nodes[0].Addr()).ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		c.t.Fatalf("CLUSTER KEYSLOT %q: %v", key, err)
	}
	return int(n)
}

// Failover runs CLUSTER FAILOVER on replica, once it is in sync with its
// master, and waits until it is a master that every node agrees on.
func (c *Cluster) Failover(replica string) {
	c.t.Helper()
	ctx := context.Background()
	rc := c.NodeClient(replica)
	deadline := time.Now().Add(settleWait)
	for {
		role, err := rc.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			break
		}
		// A manual failover that could not complete (the replica was not
		// caught up in time) ends without effect: ask again.
		err = rc.Do(ctx, "CLUSTER", "FAILOVER").Err()
		if time.Now().After(deadline) {
			c.t.Fatalf("CLUSTER FAILOVER on %s: still not a master after %v (last error: %v)", replica, settleWait, err)
		}
		_ = poll(5*time.Second, func() error {
			role, err := rc.Do(ctx, "ROLE").Slice()
			if err != nil || len(role) == 0 || role[0] != "master" {
				return fmt.Errorf("role %v, %v", role, err)
			}
			return nil
		})
	}
	c.WaitSettled()
}

// Reshard moves n slots from master from to master to with `redis-cli --cluster
// reshard`, keys included, and waits until every node agrees.
func (c *Cluster) Reshard(from, to string, n int) {
	c.t.Helper()
	c.redisCLI("--cluster", "reshard", from,
		"--cluster-from", c.ids[from], "--cluster-to", c.ids[to],
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes")
	c.WaitSettled()
}

// Migration is one slot on its way from one master to another, moved by hand
// as redis-cli does it: while it lasts, the source answers ASK for the slot's
// keys it no longer holds, and the target serves them only after ASKING.
type Migration struct {
	c        *Cluster
	slot     int
	from, to string
}

// MigrateSlot marks slot as importing on master to and migrating on its
// current owner. Keys stay where they are until Move.
func (c *Cluster) MigrateSlot(slot int, to string) *Migration {
	c.t.Helper()
	m := &Migration{c: c, slot: slot, from: c.Owner(slot), to: to}
	if m.from == to {
		c.t.Fatalf("slot %d is already served by %s", slot, to)
	}
	ctx := context.Background()
	s := strconv.Itoa(slot)
	if err := c.NodeClient(to).Do(ctx, "CLUSTER", "SETSLOT", s, "IMPORTING", c.ids[m.from]).Err(); err != nil {
		c.t.Fatalf("CLUSTER SETSLOT %d IMPORTING: %v", slot, err)
	}
	if err := c.NodeClient(m.from).Do(ctx, "CLUSTER", "SETSLOT", s, "MIGRATING", c.ids[to]).Err(); err != nil {
		c.t.Fatalf("CLUSTER SETSLOT %d MIGRATING: %v", slot, err)
	}
	return m
}

// Move migrates keys of the slot to the target now (MIGRATE ... KEYS).
func (m *Migration) Move(keys ...string) {
	m.c.t.Helper()
	if len(keys) == 0 {
		return
	}
	host, port, _ := net.SplitHostPort(m.to)
	args := []any{"MIGRATE", host, port, "", 0, 10000, "REPLACE", "KEYS"}
	for _, k := range keys {
		args = append(args, k)
	}
	if err := m.c.NodeClient(m.from).Do(context.Background(), args...).Err(); err != nil && err != redis.Nil {
		m.c.t.Fatalf("MIGRATE %v: %v", keys, err)
	}
}

// Finish moves the slot's remaining keys, hands the slot to the target on
// every master and waits until every node agrees.
func (m *Migration) Finish() {
	m.c.t.Helper()
	ctx := context.Background()
	src := m.c.NodeClient(m.from)
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, m.slot, 100).Result()
		if err != nil {
			m.c.t.Fatalf("CLUSTER GETKEYSINSLOT %d: %v", m.slot, err)
		}
		if len(keys) == 0 {
			break
		}
		m.Move(keys...)
	}
	s := strconv.Itoa(m.slot)
	// The target first, then the source, as redis-cli does: the slot is
	// never served by nobody.
	order := []string{m.to, m.from}
	for _, sh := range m.c.Shards() {
		if sh.Master != m.to && sh.Master != m.from {
			order = append(order, sh.Master)
		}
	}
	for _, addr := range order {
		if err := m.c.NodeClient(addr).Do(ctx, "CLUSTER", "SETSLOT", s, "NODE", m.c.ids[m.to]).Err(); err != nil {
			m.c.t.Fatalf("CLUSTER SETSLOT %d NODE on %s: %v", m.slot, addr, err)
		}
	}
	m.c.WaitSettled()
}

// WaitSettled waits until every node reports cluster_state:ok, knows of no
// failing node or slot in migration, agrees with every other on the masters,
// their slots and their replicas, and every replica is in sync.
func (c *Cluster) WaitSettled() {
	c.t.Helper()
	c.waitFor(settleWait, c.settled)
}

func (c *Cluster) settled() error {
	ctx := context.Background()
	var first string
	for _, n := range c.nodes {
		info, err := c.NodeClient(n.Addr()).ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state not ok", n.Addr())
		}
		v, err := c.view(n)
		if err != nil {
			return err
		}
		if v.unsettled != "" {
			return fmt.Errorf("%s: %s", n.Addr(), v.unsettled)
		}
		sig := v.signature()
		if first == "" {
			first = sig
		} else if sig != first {
			return fmt.Errorf("%s disagrees with %s on the topology", n.Addr(), c.nodes[0].Addr())
		}
		repl, err := c.NodeClient(n.Addr()).Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica not in sync", n.Addr())
		}
	}
	return nil
}

// waitFor polls cond until it returns nil, failing the test after limit.
func (c *Cluster) waitFor(limit time.Duration, cond func() error) {
	c.t.Helper()
	if err := poll(limit, cond); err != nil {
		c.t.Fatalf("cluster not settled after %v: %v", limit, err)
	}
}

// poll calls cond until it returns nil or limit passes, and returns its last
// error.
func poll(limit time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nodesView is one node's CLUSTER NODES, parsed.
type nodesView struct {
	masters   map[string][][2]int // slots by master id
	replicas  map[string]string   // master id by replica id
	addrs     map[string]string   // address by id
	unsettled string              // why the view shows a cluster in motion, if it does
}

func (c *Cluster) view(n *Server) (*nodesView, error) {
	text, err := c.NodeClient(n.Addr()).ClusterNodes(context.Background()).Result()
	if err != nil {
		return nil, err
	}
	v := &nodesView{masters: map[string][][2]int{}, replicas: map[string]string{}, addrs: map[string]string{}}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES line %q", line)
		}
		id, addr, flags, master := f[0], f[1], f[2], f[3]
		if i := strings.IndexByte(addr, '@'); i >= 0 {
			addr = addr[:i]
		}
		v.addrs[id] = addr
		if strings.Contains(flags, "fail") || strings.Contains(flags, "handshake") || strings.Contains(flags, "noaddr") {
			v.unsettled = fmt.Sprintf("node %s is %s", addr, flags)
		}
		if strings.Contains(flags, "master") {
			var ranges [][2]int
			for _, s := range f[8:] {
				if strings.HasPrefix(s, "[") {
					v.unsettled = fmt.Sprintf("slot migration %s", s)
					continue
				}
				lo, hi, _ := strings.Cut(s, "-")
				a, _ := strconv.Atoi(lo)
				b := a
				if hi != "" {
					b, _ = strconv.Atoi(hi)
				}
				ranges = append(ranges, [2]int{a, b})
			}
			sort.Slice(ranges, func(i, j int) bool { return ranges[i][0] < ranges[j][0] })
			if len(ranges) > 0 {
				v.masters[id] = ranges
			}
		} else {
			v.replicas[id] = master
		}
	}
	return v, nil
}

// signature is the view's masters, slots and replicas in a canonical form.
func (v *nodesView) signature() string {
	var parts []string
	for id, r := range v.masters {
		parts = append(parts, fmt.Sprintf("M %s %v", id, r))
	}
	for id, m := range v.replicas {
		parts = append(parts, fmt.Sprintf("R %s %s", id, m))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

func (v *nodesView) shards() []Shard {
	var out []Shard
	for id, r := range v.masters {
		s := Shard{Master: v.addrs[id], Slots: r}
		for rid, m := range v.replicas {
			if m == id {
				s.Replicas = append(s.Replicas, v.addrs[rid])
			}
		}
		sort.Strings(s.Replicas)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Slots[0][0] < out[j].Slots[0][0] })
	return out
}
