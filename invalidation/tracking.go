package invalidation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// trackingChannel is where Redis sends the invalidations of a tracking
// client that redirects them to a RESP2 connection.
const trackingChannel = "__redis__:invalidate"

// startTracking opens the connection that holds CLIENT TRACKING, in broadcast
// mode for the tracked prefixes, redirected to the subscription whose client
// ID is redirect. Tracking lives as long as that connection: it is dialled
// once, and its loss ends the session (see watch).
//
// No NOLOOP: it would hide only this connection's own writes, and the canary
// written elsewhere does not need it.
func (s *Subscriber) startTracking(ctx context.Context, redirect int64) (*redis.Client, error) {
	if redirect == 0 {
		return nil, errors.New("tracking: the subscription's client ID is unknown")
	}
	args := []any{"CLIENT", "TRACKING", "on", "REDIRECT", redirect, "BCAST"}
	for _, p := range s.tracked {
		args = append(args, "PREFIX", p)
	}
	o := s.opts
	o.Dialer = dialOnce(s.opts.Dialer)
	c := redis.NewClient(&o)
	if err := c.Do(ctx, args...).Err(); err != nil {
		c.Close()
		if refused(err) {
			return nil, &disabledError{fmt.Sprintf("CLIENT TRACKING refused (%v); allow it for the proxy's user, "+
				"or use keyspace notifications (invalidation mode keyspace)", err)}
		}
		return nil, fmt.Errorf("client tracking: %w", err)
	}
	return c, nil
}

// trackedPrefixes is the PREFIX list of CLIENT TRACKING BCAST that covers the
// cached prefixes and the canary's: nil, meaning every key, when cached is nil
// or holds "". Redis refuses overlapping prefixes, and a prefix covers every
// longer one it starts, so only the shortest of each family is kept.
func trackedPrefixes(cached []string, canary string) []string {
	if cached == nil || slices.Contains(cached, "") {
		return nil
	}
	all := append(slices.Clone(cached), canary)
	slices.Sort(all)
	// Sorted, the strings a prefix starts follow it at once.
	out := all[:0]
	for _, p := range all {
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// handleTracking drops the keys of one invalidation message in every
// database: tracking does not say which.
func (ss *session) handleTracking(m *redis.Message) {
	s := ss.s
	if m.Channel != trackingChannel || m.PayloadSlice == nil {
		// A client PUBLISHed a plain string to the channel: not from Redis.
		s.malformed.Add(1)
		s.log.Debug("ignoring a tracking message without keys", "channel", m.Channel)
		return
	}
	for _, key := range m.PayloadSlice {
		if ss.canaryNotified(key) {
			continue
		}
		s.keyBuf = append(s.keyBuf[:0], key...)
		s.target.InvalidateEveryDB(s.keyBuf)
	}
}

// isFlushMessage recognises the nil invalidation message, Redis's "flush
// everything" (sent on FLUSHDB and FLUSHALL), which go-redis's PubSub cannot
// represent and returns as this error after reading it whole, with the
// connection still in step. Should a later go-redis word it differently, the
// message ends the session instead, which also drops everything.
func isFlushMessage(err error) bool {
	return strings.HasSuffix(err.Error(), "unsupported pubsub message payload: <nil>")
}
