package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Topology is the slot map at one moment: which master serves each slot, and
// which replicas follow each master. It never changes; a newer map is a new
// Topology, and the one it replaces has its Changed channel closed.
type Topology struct {
	masters  []string // host:port, ordered by first slot
	replicas map[string][]string
	owner    [Slots]uint16 // index into masters; noOwner for a slot nobody serves
	changed  chan struct{}
}

const noOwner = 0xffff

// Masters are the addresses (host:port) of the masters that serve slots,
// ordered by the first slot each serves. The slice is shared: do not modify it.
func (t *Topology) Masters() []string { return t.masters }

// Replicas are the addresses of the replicas following master, as the slot map
// lists them.
func (t *Topology) Replicas(master string) []string { return t.replicas[master] }

// Owner is the address of the master serving slot, or "" if none does.
func (t *Topology) Owner(slot int) string {
	i := t.owner[slot]
	if i == noOwner {
		return ""
	}
	return t.masters[i]
}

// Ranges are the slot ranges (inclusive, ascending) master serves.
func (t *Topology) Ranges(master string) [][2]int {
	var out [][2]int
	for slot := 0; slot < Slots; slot++ {
		if t.Owner(slot) != master {
			continue
		}
		if n := len(out); n > 0 && out[n-1][1] == slot-1 {
			out[n-1][1] = slot
		} else {
			out = append(out, [2]int{slot, slot})
		}
	}
	return out
}

// Changed is closed once a different slot map replaces this one: a master
// failed over, a slot moved, a node came or went. Watch with a loop:
//
//	for t := c.Topology(); ; t = c.Topology() {
//		use(t.Masters())
//		select {
//		case <-t.Changed():
//		case <-ctx.Done():
//			return
//		}
//	}
func (t *Topology) Changed() <-chan struct{} { return t.changed }

// same reports whether u maps every slot to the same master and lists the
// same replicas.
func (t *Topology) same(u *Topology) bool {
	if !slices.Equal(t.masters, u.masters) || t.owner != u.owner || len(t.replicas) != len(u.replicas) {
		return false
	}
	for m, r := range t.replicas {
		if !slices.Equal(r, u.replicas[m]) {
			return false
		}
	}
	return true
}

// shard is one master's part of a slot map as a node reports it.
type shard struct {
	master   string
	replicas []string
	ranges   [][2]int
}

// build makes a Topology from shards.
func build(shards []shard) (*Topology, error) {
	t := &Topology{replicas: map[string][]string{}, changed: make(chan struct{})}
	for i := range t.owner {
		t.owner[i] = noOwner
	}
	byMaster := map[string]*shard{}
	var order []*shard
	for i := range shards {
		s := &shards[i]
		if len(s.ranges) == 0 {
			continue
		}
		if prev := byMaster[s.master]; prev != nil {
			// CLUSTER SLOTS lists a master once per range.
			prev.ranges = append(prev.ranges, s.ranges...)
			continue
		}
		byMaster[s.master] = s
		order = append(order, s)
	}
	for _, s := range order {
		sort.Slice(s.ranges, func(i, j int) bool { return s.ranges[i][0] < s.ranges[j][0] })
	}
	sort.Slice(order, func(i, j int) bool { return order[i].ranges[0][0] < order[j].ranges[0][0] })
	if len(order) == 0 {
		return nil, errors.New("the node serves no slots: is the cluster created?")
	}
	for i, s := range order {
		t.masters = append(t.masters, s.master)
		if len(s.replicas) > 0 {
			r := slices.Clone(s.replicas)
			sort.Strings(r)
			t.replicas[s.master] = r
		}
		for _, r := range s.ranges {
			if r[0] < 0 || r[1] >= Slots || r[0] > r[1] {
				return nil, fmt.Errorf("slot range %d-%d of %s out of bounds", r[0], r[1], s.master)
			}
			for slot := r[0]; slot <= r[1]; slot++ {
				t.owner[slot] = uint16(i)
			}
		}
	}
	return t, nil
}

// fetch reads the slot map from one node: CLUSTER SHARDS (Redis 7.0 on),
// else CLUSTER SLOTS. tls says which of a node's ports to use when it
// announces both.
func fetch(ctx context.Context, c *redis.Client, tls bool) (*Topology, error) {
	shards, err := c.ClusterShards(ctx).Result()
	if err == nil {
		return build(fromShards(shards, tls))
	}
	if ctx.Err() != nil || !isReplyError(err) {
		return nil, fmt.Errorf("CLUSTER SHARDS: %w", err)
	}
	// An error reply: a Redis before 7.0, which knows only CLUSTER SLOTS.
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	return build(fromSlots(slots))
}

func isReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

func fromShards(in []redis.ClusterShard, tls bool) []shard {
	out := make([]shard, 0, len(in))
	for _, s := range in {
		var sh shard
		for _, n := range s.Nodes {
			// "loading" is also what Redis 7.0 says of a replica that has
			// replicated nothing yet: only "fail" rules a node out.
			if n.Health == "fail" {
				continue
			}
			port := n.Port
			if tls && n.TLSPort != 0 || port == 0 {
				port = n.TLSPort
			}
			host := n.Endpoint
			if host == "" || host == "?" {
				host = n.IP
			}
			addr := net.JoinHostPort(host, strconv.FormatInt(port, 10))
			if n.Role == "master" {
				sh.master = addr
			} else {
				sh.replicas = append(sh.replicas, addr)
			}
		}
		if sh.master == "" {
			continue
		}
		for _, r := range s.Slots {
			sh.ranges = append(sh.ranges, [2]int{int(r.Start), int(r.End)})
		}
		out = append(out, sh)
	}
	return out
}

func fromSlots(in []redis.ClusterSlot) []shard {
	out := make([]shard, 0, len(in))
	for _, s := range in {
		if len(s.Nodes) == 0 {
			continue
		}
		sh := shard{master: s.Nodes[0].Addr, ranges: [][2]int{{s.Start, s.End}}}
		for _, n := range s.Nodes[1:] {
			sh.replicas = append(sh.replicas, n.Addr)
		}
		out = append(out, sh)
	}
	return out
}
