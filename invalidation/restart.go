package invalidation

import "errors"

// Restart ends the current stream as if it were lost, for an upstream that
// is known to have changed (a failover): the Target is suspended, which
// drops everything and spoils fills in flight, before Restart returns, and
// stays suspended until a new stream, dialled from scratch, is trusted. A
// session still being set up is abandoned and never trusted. Between
// sessions the Target is suspended already and Restart does nothing. Dial
// the new upstream (the Options' Dialer) before calling it, so that the next
// session reaches it. Safe from any goroutine.
func (s *Subscriber) Restart(why string) {
	s.curMu.Lock()
	ss := s.cur
	s.curMu.Unlock()
	if ss != nil {
		ss.lose(errors.New(why))
	}
}

func (s *Subscriber) setCurrent(ss *session) {
	s.curMu.Lock()
	s.cur = ss
	s.curMu.Unlock()
}
