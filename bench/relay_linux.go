package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// relay is a TCP relay that adds a fixed latency in each direction, as a link
// between two machines would: a chunk read at t is written at t+latency, in
// the order read. Chunks wait side by side, not one after another, so the
// latency adds to every round trip without limiting any flow's throughput.
//
// It is one goroutine running an event loop on epoll, edge-triggered, with a
// timerfd set for the next chunk due. Two things rule out the simpler relay of
// a goroutine per socket and direction sleeping on the runtime's timers (the
// tests' fault bridge): those timers wake up to a millisecond late when the
// process is otherwise idle, which would swamp a latency of 100 µs; and the
// goroutines' wake-ups would cost more CPU than the relaying itself, CPU the
// measured servers share on a small machine.
type relay struct {
	latency time.Duration
	target  unix.SockaddrInet4
	bound   string // the listening address, its port resolved

	ep, ln, timer, wake int // epoll, listening socket, timerfd, eventfd that ends run

	epoch time.Time     // now() counts from here, on the monotonic clock
	sides map[int]*side // open sockets by descriptor
	line  []delivery    // chunks waiting for their time; due times ascend
	next  int           // line[next] is the first still waiting
	armed time.Duration
	ids   int32          // the last side's id  // the due time the timer is set for
	buf   [64 << 10]byte // what one read takes in
}

// side is one socket of a relayed connection: the client's, or the relay's own
// to the target.
type side struct {
	fd         int
	id         int32 // tells it from an earlier socket of the same descriptor
	peer       *side
	connecting bool   // the target's socket, until its connect completes
	reading    bool   // until its end of stream
	out        []byte // due bytes it has not taken yet
	finDue     bool   // its peer's end of stream is due: shut its write side once out is written
	finSent    bool
	closed     bool
}

// delivery is a chunk read from one side, due to be written to the other.
type delivery struct {
	due  time.Duration
	to   *side
	data []byte // nil: the end of the stream
}

// newRelay listens on listen (an IPv4 loopback host:port; port 0 picks one)
// for connections to relay to target. run serves them.
func newRelay(listen, to string, latency time.Duration) (*relay, error) {
	lap, tap, err := relayAddrs(listen, to, latency)
	if err != nil {
		return nil, err
	}
	r := &relay{latency: latency, target: unix.SockaddrInet4{Port: int(tap.Port()), Addr: tap.Addr().As4()},
		ep: -1, ln: -1, timer: -1, wake: -1, epoch: time.Now(), sides: make(map[int]*side)}
	if err := r.open(lap); err != nil {
		r.closeAll()
		return nil, fmt.Errorf("relay: %w", err)
	}
	return r, nil
}

func (r *relay) open(listen netip.AddrPort) error {
	var err error
	if r.ep, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	if r.timer, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		return fmt.Errorf("timerfd: %w", err)
	}
	if r.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	if r.ln, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(r.ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if err := unix.Bind(r.ln, &unix.SockaddrInet4{Port: int(listen.Port()), Addr: listen.Addr().As4()}); err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	if err := unix.Listen(r.ln, 4096); err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	sa, err := unix.Getsockname(r.ln)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return fmt.Errorf("listen on %s: bound to %v", listen, sa)
	}
	r.bound = netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)).String()
	// Level-triggered: each of these is drained where it is handled.
	for _, fd := range []int{r.ln, r.timer, r.wake} {
		if err := unix.EpollCtl(r.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	return nil
}

// addr is where the relay listens.
func (r *relay) addr() string { return r.bound }

// run relays until ctx ends, then closes every socket it opened.
func (r *relay) run(ctx context.Context) error {
	var mu sync.Mutex // keeps the wake-up's write off a closed descriptor
	closed := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			_, _ = unix.Write(r.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}
	})
	defer func() {
		stop()
		mu.Lock()
		closed = true
		mu.Unlock()
		r.closeAll()
	}()
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(r.ep, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("relay: epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			switch fd := int(ev.Fd); fd {
			case r.wake:
				return nil
			case r.ln:
				r.accept()
			case r.timer:
				var ticks [8]byte
				_, _ = unix.Read(r.timer, ticks[:])
				r.armed = 0
			default:
				// An event of a socket closed earlier in this batch may
				// name a descriptor accepted since: the id tells.
				if s := r.sides[fd]; s != nil && s.id == ev.Pad {
					r.handle(s, ev.Events)
				}
			}
		}
		r.deliverDue()
	}
}

func (r *relay) now() time.Duration { return time.Since(r.epoch) }

// accept takes every pending connection and opens its socket to the target.
func (r *relay) accept() {
	for {
		cfd, _, err := unix.Accept4(r.ln, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED):
			continue
		case err != nil: // EAGAIN: no more; anything else (EMFILE): try at the next event
			return
		}
		tfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			unix.Close(cfd)
			continue
		}
		// Without it small writes would wait for acknowledgements.
		_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		_ = unix.SetsockoptInt(tfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		err = unix.Connect(tfd, &r.target)
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			unix.Close(cfd)
			unix.Close(tfd)
			continue
		}
		r.ids += 2
		c := &side{fd: cfd, id: r.ids - 1, reading: true}
		t := &side{fd: tfd, id: r.ids, reading: true, connecting: err != nil}
		c.peer, t.peer = t, c
		r.sides[cfd], r.sides[tfd] = c, t
		for _, s := range []*side{c, t} {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s.fd), Pad: s.id}
			if err := unix.EpollCtl(r.ep, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
				r.closePair(c)
				break
			}
		}
	}
}

// handle acts on one socket's events: a completed connect, room to write,
// bytes or an end of stream to read.
func (r *relay) handle(s *side, events uint32) {
	if s.connecting && events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		r.closePair(s) // the target refused
		return
	}
	if events&unix.EPOLLOUT != 0 {
		if s.connecting {
			if errno, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
				r.closePair(s)
				return
			}
			s.connecting = false
		}
		if !r.flush(s) {
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && s.reading && !s.connecting {
		r.read(s, events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
	}
}

// read takes in what s has to give, each read a chunk due at the peer one
// latency from now. Edge-triggered: it reads until the socket is drained, which
// a short read shows unless the stream is ending.
func (r *relay) read(s *side, ending bool) {
	for {
		n, err := unix.Read(s.fd, r.buf[:])
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return
		case err != nil:
			r.closePair(s)
			return
		case n == 0:
			s.reading = false
			r.line = append(r.line, delivery{due: r.now() + r.latency, to: s.peer})
			return
		}
		r.line = append(r.line, delivery{due: r.now() + r.latency, to: s.peer, data: append([]byte(nil), r.buf[:n]...)})
		if n < len(r.buf) && !ending {
			return
		}
	}
}

// deliverDue writes every chunk whose time has come and sets the timer for the
// next one.
func (r *relay) deliverDue() {
	now := r.now()
	for r.next < len(r.line) && r.line[r.next].due <= now {
		d := r.line[r.next]
		r.line[r.next] = delivery{}
		r.next++
		to := d.to
		if to.closed {
			continue
		}
		switch {
		case d.data == nil:
			to.finDue = true
		case len(to.out) == 0:
			to.out = d.data
		default:
			to.out = append(to.out, d.data...)
		}
		if !to.connecting {
			r.flush(to)
		}
	}
	if r.next == len(r.line) {
		r.line, r.next = r.line[:0], 0
		return
	}
	if r.next > 1024 && 2*r.next > len(r.line) {
		r.line = r.line[:copy(r.line, r.line[r.next:])]
		r.next = 0
	}
	if due := r.line[r.next].due; due != r.armed {
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(max(due-r.now(), 1)))}
		if err := unix.TimerfdSettime(r.timer, 0, &spec, nil); err == nil {
			r.armed = due
		}
	}
}

// flush writes what s has due; false if that closed the connection. Bytes the
// socket will not take now wait for its next EPOLLOUT.
func (r *relay) flush(s *side) bool {
	for len(s.out) > 0 {
		n, err := unix.Write(s.fd, s.out)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return true
		case err != nil:
			r.closePair(s)
			return false
		}
		s.out = s.out[n:]
	}
	s.out = nil
	if s.finDue && !s.finSent {
		s.finSent = true
		_ = unix.Shutdown(s.fd, unix.SHUT_WR)
		if !s.reading && s.peer.finSent && !s.peer.reading {
			r.closePair(s) // both streams have ended, both ways
			return false
		}
	}
	return true
}

// closePair closes both sockets of a connection at once, dropping what is due
// to them: a reset or an error on one side ends the connection.
func (r *relay) closePair(s *side) {
	for _, x := range []*side{s, s.peer} {
		if !x.closed {
			x.closed = true
			delete(r.sides, x.fd)
			unix.Close(x.fd)
		}
	}
}

func (r *relay) closeAll() {
	for _, s := range r.sides {
		r.closePair(s)
	}
	for _, fd := range []int{r.ln, r.timer, r.wake, r.ep} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
