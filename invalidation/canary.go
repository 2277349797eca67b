package invalidation

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// canary writes a key of its own, waits for the stream to notify it, pauses,
// and starts again, until the session ends. Its first notification is what
// resumes the Target. A write that is not notified within canaryTimeout
// means the stream delivers nothing, whatever the connections look like: the
// session ends (and the next one re-checks the server's configuration).
//
// Each write is a new key, so a late notification of an earlier one (its
// expiry, say) can never pass for the one awaited.
func (ss *session) canary() {
	s := ss.s
	// The key must outlive the wait for its notification, and no more.
	px := max(s.canaryTimeout, time.Second)
	for {
		sent := time.Now()
		key, err := ss.writeCanary(sent, px)
		if key == "" {
			return
		}
		if err != nil {
			if refused(err) && !redirected(err) {
				ss.canaryRefused(key, err)
			} else {
				ss.lose(fmt.Errorf("canary write: %w", err))
			}
			return
		}
		t := time.NewTimer(s.canaryTimeout - time.Since(sent))
		select {
		case <-ss.arrived:
			t.Stop()
		case <-ss.stop:
			t.Stop()
			return
		case <-t.C:
			ss.canaryLate(key)
			return
		}
		if !ss.pause(s.canaryInterval) {
			return
		}
	}
}

// redirectPause spaces a canary's writes to a Redis Cluster node that
// answers that it cannot take the key now.
const redirectPause = 10 * time.Millisecond

// writeCanary writes a new canary key with expiry px and returns it, or ""
// if the session ended. A node of a Redis Cluster that answers MOVED or ASK
// (the key's slot is moving away) or TRYAGAIN or CLUSTERDOWN says nothing of
// the stream: another key, in another slot, is written instead, until
// canaryTimeout after sent.
func (ss *session) writeCanary(sent time.Time, px time.Duration) (string, error) {
	s := ss.s
	for {
		key := s.canaryKeys + strconv.FormatInt(s.canarySeq.Add(1), 10)
		if s.canaryTag != nil {
			key += s.canaryTag()
		}
		if !ss.expectCanary(key, sent) {
			return "", nil
		}
		err := ss.ctl.Set(ss.ctx, key, "", px).Err()
		if err == nil || !redirected(err) || time.Since(sent) > s.canaryTimeout {
			return key, err
		}
		if !ss.pause(redirectPause) {
			return "", nil
		}
	}
}

// expectCanary records the canary about to be written, before the write: its
// notification may arrive before the write's reply.
func (ss *session) expectCanary(key string, sent time.Time) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return false
	}
	ss.canaryKey, ss.canarySent = key, sent
	ss.s.canarySent.Store(sent.UnixNano())
	return true
}

// canaryNotified reports whether key is one of this subscriber's canaries,
// which are consumed here and never reach the Target, and records the
// arrival of the one awaited.
func (ss *session) canaryNotified(key string) bool {
	s := ss.s
	if !strings.HasPrefix(key, s.canaryKeys) {
		return false
	}
	ss.mu.Lock()
	awaited := key == ss.canaryKey
	if awaited {
		s.lag.Store(int64(time.Since(ss.canarySent)))
		s.canarySent.Store(0)
		s.canaries.Add(1)
		ss.canaryKey = ""
		select {
		case ss.arrived <- struct{}{}:
		default:
		}
	}
	ss.mu.Unlock()
	if awaited {
		ss.resume("canary notified")
	}
	return true
}

// canaryRefused handles a server that will not take the canary's write (an
// ACL, a read-only replica, maxmemory with noeviction): without it a silent
// stream goes unnoticed, so the stream is trusted only if the server's
// configuration vouches for it.
func (ss *session) canaryRefused(key string, err error) {
	s := ss.s
	ss.mu.Lock()
	ss.canaryKey = ""
	s.canarySent.Store(0)
	ss.mu.Unlock()
	if s.warnedCanary.CompareAndSwap(false, true) {
		s.log.Warn("the upstream refused the canary's write: a stream that silently delivers nothing "+
			"cannot be detected; allow SET on "+CanaryPrefix+"* for the proxy's user", "key", key, "err", err)
	}
	if ss.verified {
		ss.resume("configuration (canary refused)")
		return
	}
	ss.lose(&disabledError{fmt.Sprintf("%s, and the canary's write was refused (%v); "+
		"enable keyspace notifications (%q) on the server", ss.unverified, err, "KA")})
}

// canaryLate ends a session whose canary was not notified in time. When only
// the canary could vouch for the stream and none ever came back, nothing
// will until an operator acts.
func (ss *session) canaryLate(key string) {
	s := ss.s
	ss.mu.Lock()
	never := !ss.resumed
	ss.mu.Unlock()
	if !ss.verified && never {
		ss.lose(&disabledError{fmt.Sprintf("%s, and no notification of the canary's write arrived within %v; "+
			"enable keyspace notifications (%q) on the server", ss.unverified, s.canaryTimeout, "KA")})
		return
	}
	ss.lose(fmt.Errorf("canary %q not notified within %v: the stream delivers nothing", key, s.canaryTimeout))
}

// redirected tells a Redis Cluster node's refusal of a key it does not serve
// (MOVED, ASK) or cannot serve now (TRYAGAIN, CLUSTERDOWN) from a refusal of
// the write itself.
func redirected(err error) bool {
	for _, p := range [...]string{"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}
