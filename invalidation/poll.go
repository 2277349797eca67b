package invalidation

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// silentCommands change many keys at once and publish no per-key event in
// Redis 7.0 (flushdbCommand, flushallCommand and swapdbCommand in src/db.c
// publish nothing; DEBUG RELOAD and DEBUG LOADAOF replace the whole dataset).
// Their call counts in INFO commandstats move wherever they ran: directly, in
// MULTI, in a script or a function.
var silentCommands = [...]string{"flushdb", "flushall", "swapdb", "debug"}

// identity names the dataset a connection reaches. A restart changes run_id,
// a failover role and replication ID. A replica's link to its primary going
// down and up again may mean a full resynchronisation, which replaces the
// dataset silently even from the same primary.
type identity struct{ runID, role, replID, link string }

func (id identity) String() string {
	s := fmt.Sprintf("run_id %s, role %s, replid %s", id.runID, id.role, id.replID)
	if id.link != "" {
		s += ", master_link_status " + id.link
	}
	return s
}

// upstreamState is what the poller reads from INFO.
type upstreamState struct {
	id    identity
	calls [len(silentCommands)]int64
}

// poll reads the upstream's INFO every pollInterval through the reconnecting
// control client. Another server behind the address (a restart or failover
// that the subscription survived, or that the proxy's connections reach and
// the subscription does not) ends the session; a move of the silent commands'
// call counts flushes the L1.
func (ss *session) poll(base upstreamState) {
	s := ss.s
	t := time.NewTicker(s.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ss.stop:
			return
		case <-t.C:
		}
		cur, err := s.readUpstream(ss.ctx, ss.ctl)
		switch {
		case err != nil && (refused(err) || errors.Is(err, errNoIdentity)):
			s.warnPollRefused(err)
			return
		case err != nil:
			ss.lose(fmt.Errorf("polling INFO: %w", err))
			return
		case cur.id != base.id:
			ss.lose(fmt.Errorf("the upstream is another server now (%v; was %v)", cur.id, base.id))
			return
		case cur.calls != base.calls:
			// Any move, down too: CONFIG RESETSTAT may have hidden a flush.
			s.flushAll(fmt.Sprintf("call counts of %v went from %v to %v", silentCommands, base.calls, cur.calls))
			base = cur
		}
	}
}

// errNoIdentity: a server (or something Redis-like in front of it) whose INFO
// lacks run_id or role cannot be polled.
var errNoIdentity = errors.New("INFO reports no run_id or role")

// readUpstream reads the identity and silent-command counts in one round trip.
func (s *Subscriber) readUpstream(ctx context.Context, c *redis.Client) (upstreamState, error) {
	var st upstreamState
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Info(ctx, "server")
		p.Info(ctx, "replication")
		p.Info(ctx, "commandstats")
		return nil
	})
	if err != nil {
		return st, err
	}
	for _, cmd := range cmds {
		parseInfo(cmd.(*redis.StringCmd).Val(), &st)
	}
	if st.id.runID == "" || st.id.role == "" {
		return st, errNoIdentity
	}
	return st, nil
}

// parseInfo picks what upstreamState needs out of an INFO reply.
func parseInfo(info string, st *upstreamState) {
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSuffix(line, "\r")
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch name {
		case "run_id":
			st.id.runID = value
		case "role":
			st.id.role = value
		case "master_replid":
			st.id.replID = value
		case "master_link_status":
			st.id.link = value
		default:
			cmd, ok := strings.CutPrefix(name, "cmdstat_")
			if !ok {
				continue
			}
			for i, c := range silentCommands {
				if cmd == c {
					st.calls[i] = callsOf(value)
				}
			}
		}
	}
}

// callsOf reads calls=N out of "calls=N,usec=...".
func callsOf(stats string) int64 {
	v, _ := strings.CutPrefix(stats, "calls=")
	v, _, _ = strings.Cut(v, ",")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return -1 // unreadable: differs from any real count, so a change still shows
	}
	return n
}

func (s *Subscriber) warnPollRefused(err error) {
	if s.warnedPoll.CompareAndSwap(false, true) {
		s.log.Warn("cannot poll the upstream's INFO: FLUSHDB, FLUSHALL and SWAPDB sent to it directly, "+
			"and a server swapped behind its address, cannot be detected", "err", err)
	}
}
