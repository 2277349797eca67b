package upstream

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/resp"
	"github.com/redis/go-redis/v9"
)

var bg = context.Background()

func cmd(args ...string) []byte { return resp.AppendCommand(nil, args...) }

func newPool(t *testing.T, r *redistest.Server, conns int) *Pool {
	t.Helper()
	p, err := New(Config{Addr: r.Addr(), Conns: conns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestBatchRepliesInOrder(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 1)
	var b Batch
	for i := 0; i < 500; i++ {
		b.Add(cmd("INCR", "n"))
	}
	b.Add(cmd("GET", "missing"))
	b.Add(cmd("NOSUCH"))
	p.Do(bg, 0, 0, &b)
	if b.Err() != nil || b.Answered() != 502 {
		t.Fatalf("answered %d, err %v", b.Answered(), b.Err())
	}
	for i := 0; i < 500; i++ {
		if got, want := string(b.Reply(i)), fmt.Sprintf(":%d\r\n", i+1); got != want {
			t.Fatalf("reply %d = %q, want %q", i, got, want)
		}
	}
	if got := string(b.Reply(500)); got != "$-1\r\n" {
		t.Fatalf("nil reply = %q", got)
	}
	if got := string(b.Reply(501)); !strings.HasPrefix(got, "-ERR unknown command") {
		t.Fatalf("error reply = %q", got)
	}
}

// TestConcurrentBatchesShareConnections runs many clients' batches over two
// shared connections per database; each sees exactly its own replies.
func TestConcurrentBatchesShareConnections(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 2)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for c := 0; c < 40; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			var b Batch
			db := c % 3
			for round := 0; round < 50; round++ {
				b.Reset()
				key := fmt.Sprintf("c%d", c)
				b.Add(cmd("SET", key, fmt.Sprint(round)))
				b.Add(cmd("GET", key))
				p.Do(bg, db, uint64(c), &b)
				want := fmt.Sprintf("$%d\r\n%d\r\n", len(fmt.Sprint(round)), round)
				if b.Err() != nil || string(b.Reply(1)) != want {
					errs <- fmt.Errorf("client %d round %d: %q, %v", c, round, b.Reply(1), b.Err())
					return
				}
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Databases were kept apart by the connections' SELECT.
	if n := r.Client(1).Exists(bg, "c1").Val(); n != 1 {
		t.Fatalf("db 1 lacks c1")
	}
	if n := r.Client(0).Exists(bg, "c1").Val(); n != 0 {
		t.Fatalf("db 0 has c1")
	}
}

// TestBrokenConnectionFailsBatchesAndRedials: killing the upstream side fails
// the batch in flight (it is not retried: it may have run), and the next batch
// gets a fresh connection.
func TestBrokenConnectionFailsBatchesAndRedials(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 1)
	var b Batch
	b.Add(cmd("SET", "k", "v"))
	p.Do(bg, 0, 0, &b)
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	// The batch itself kills every cacheproxy connection, including its own.
	b.Reset()
	b.Add(cmd("INCR", "n"))
	b.Add(cmd("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"))
	b.Add(cmd("INCR", "n"))
	p.Do(bg, 0, 0, &b)
	// Redis answers the kill itself, then closes: the last INCR never runs.
	if b.Err() == nil || b.Answered() != 2 {
		t.Fatalf("after the kill: answered %d, err %v; want 2 answered and an error", b.Answered(), b.Err())
	}
	b.Reset()
	b.Add(cmd("GET", "n"))
	p.Do(bg, 0, 0, &b)
	if b.Err() != nil || string(b.Reply(0)) != "$1\r\n1\r\n" {
		t.Fatalf("after redial: %q, %v (INCR must have run exactly once)", b.Reply(0), b.Err())
	}
}

func TestUnreachableUpstream(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 1)
	r.Stop()
	var b Batch
	b.Add(cmd("PING"))
	p.Do(bg, 0, 0, &b)
	if b.Err() == nil || !strings.Contains(b.Err().Error(), r.Addr()) {
		t.Fatalf("err = %v, want one naming %s", b.Err(), r.Addr())
	}
	p.Do(bg, 99, 0, &b)
	if b.Err() == nil {
		t.Fatal("db 99 accepted")
	}
}

func TestDedicatedAndClose(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p, err := New(Config{Addr: r.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Dedicated(bg, 2)
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	b.Add(cmd("MULTI"))
	b.Add(cmd("SET", "d", "2"))
	b.Add(cmd("EXEC"))
	c.Do(&b)
	if b.Err() != nil || string(b.Reply(2)) != "*1\r\n+OK\r\n" {
		t.Fatalf("EXEC = %q, %v", b.Reply(2), b.Err())
	}
	if v := r.Client(2).Get(bg, "d").Val(); v != "2" {
		t.Fatalf("dedicated connection not in db 2: %q", v)
	}
	p.Close()
	b.Reset()
	b.Add(cmd("PING"))
	c.Do(&b)
	if b.Err() == nil {
		t.Fatal("a dedicated connection outlived Close")
	}
	if _, err := p.Dedicated(bg, 0); err != ErrClosed {
		t.Fatalf("Dedicated after Close: %v", err)
	}
}

// conn returns the shared connection of slot i of db 0, dialling it if needed.
func conn(t *testing.T, p *Pool, i int) *Conn {
	t.Helper()
	c, err := p.shared(bg, &p.slots[i], 0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// parked counts the batches whose owners sleep on c.
func parked(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, b := range append(c.inflight[c.ihead:len(c.inflight):len(c.inflight)], c.queue...) {
		if b.parked {
			n++
		}
	}
	return n
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// doAsync runs c.Do(b) in a goroutine and returns a channel closed when it
// returns.
func doAsync(c *Conn, b *Batch) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Do(b)
	}()
	return done
}

// TestManyClientsOneConnection: many goroutines share one connection with
// batches of varied length, some replies larger than the read buffer, so that
// the reader role changes hands mid-reply and one read serves several
// batches. Each goroutine gets exactly its own replies, in order.
func TestManyClientsOneConnection(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	big := strings.Repeat("x", 3*bufSize+17)
	r.Client(0).Set(bg, "big", big, 0)
	p := newPool(t, r, 1)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var b Batch
			for round := 0; round < 40; round++ {
				b.Reset()
				n := 1 + (g*7+round)%12
				for i := 0; i < n; i++ {
					b.Add(cmd("ECHO", fmt.Sprintf("%d.%d.%d", g, round, i)))
				}
				withBig := (g+round)%9 == 0
				if withBig {
					b.Add(cmd("GET", "big"))
				}
				p.Do(bg, 0, 0, &b)
				if b.Err() != nil || b.Answered() != b.Len() {
					errs <- fmt.Errorf("goroutine %d round %d: answered %d of %d, %v", g, round, b.Answered(), b.Len(), b.Err())
					return
				}
				for i := 0; i < n; i++ {
					v := fmt.Sprintf("%d.%d.%d", g, round, i)
					if got, want := string(b.Reply(i)), fmt.Sprintf("$%d\r\n%s\r\n", len(v), v); got != want {
						errs <- fmt.Errorf("goroutine %d round %d reply %d = %q, want %q", g, round, i, got, want)
						return
					}
				}
				if withBig && string(b.Reply(n)) != fmt.Sprintf("$%d\r\n%s\r\n", len(big), big) {
					errs <- fmt.Errorf("goroutine %d round %d: big reply mangled (%d bytes)", g, round, len(b.Reply(n)))
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestReaderHandsOver forces the reader role's holder to finish while others
// sleep waiting for replies not yet read: it must wake one of them to read
// on, or they wait forever.
func TestReaderHandsOver(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 1)
	c := conn(t, p, 0)
	rc := r.Client(0)

	// A blocks in BLPOP and, finding the connection idle, holds the reader role.
	var a, b, d Batch
	a.Add(cmd("BLPOP", "qa", "0"))
	aDone := doAsync(c, &a)
	waitFor(t, "A to block in Redis", func() bool { return rc.ClientList(bg).Val() != "" && blocked(t, rc) == 1 })
	// B and D queue behind it and sleep.
	b.Add(cmd("BLPOP", "qb", "0"))
	bDone := doAsync(c, &b)
	waitFor(t, "B to sleep", func() bool { return parked(c) == 1 })
	d.Add(cmd("PING"))
	dDone := doAsync(c, &d)
	waitFor(t, "D to sleep", func() bool { return parked(c) == 2 })

	// A's reply comes alone: B's cannot, as Redis holds everything behind
	// B's BLPOP. A returns; B must read on.
	rc.RPush(bg, "qa", "1")
	waitClosed(t, "A", aDone)
	select {
	case <-bDone:
		t.Fatal("B returned before its reply existed")
	case <-dDone:
		t.Fatal("D returned before its reply existed")
	default:
	}
	rc.RPush(bg, "qb", "2")
	waitClosed(t, "B", bDone)
	waitClosed(t, "D", dDone)
	for name, bt := range map[string]*Batch{"A": &a, "B": &b, "D": &d} {
		if bt.Err() != nil || bt.Answered() != 1 {
			t.Fatalf("%s: answered %d, %v", name, bt.Answered(), bt.Err())
		}
	}
	if got := string(b.Reply(0)); got != "*2\r\n$2\r\nqb\r\n$1\r\n2\r\n" {
		t.Fatalf("B = %q", got)
	}
	if got := string(d.Reply(0)); got != "+PONG\r\n" {
		t.Fatalf("D = %q", got)
	}
}

// blocked is the number of clients Redis holds in a blocking command.
func blocked(t *testing.T, rc interface {
	Info(context.Context, ...string) *redis.StringCmd
}) int {
	t.Helper()
	info := rc.Info(bg, "clients").Val()
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "blocked_clients:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("no blocked_clients in INFO: %q", info)
	return 0
}

func waitClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never returned", what)
	}
}

// TestKilledMidFlightNeverRetries kills the shared connections again and
// again while many goroutines append numbered entries to their own lists.
// Every batch either completes or fails; a failed one is never re-run, even
// in part: each list holds each number at most once, in order, and every
// acknowledged one.
func TestKilledMidFlightNeverRetries(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p := newPool(t, r, 2)
	const workers, rounds = 24, 60
	acked := make([][]int, workers)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var b Batch
			key := fmt.Sprintf("l%d", g)
			seq := 0
			for round := 0; round < rounds; round++ {
				b.Reset()
				first := seq
				for i := 0; i < 3; i++ {
					b.Add(cmd("RPUSH", key, strconv.Itoa(seq)))
					seq++
				}
				if g%8 == 0 && round%10 == 5 {
					b.Add(cmd("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"))
				}
				p.Do(bg, 0, uint64(g), &b)
				if b.Err() != nil {
					failed.Add(1)
				}
				for i := 0; i < b.Answered() && i < 3; i++ {
					acked[g] = append(acked[g], first+i)
				}
			}
		}(g)
	}
	wg.Wait()
	if failed.Load() == 0 {
		t.Fatal("no batch failed: the kills did not hit batches in flight")
	}
	// Both connections redial. A kill may have cut a redial's handshake, and
	// then dials are held back for at most maxBackoff: wait that out.
	for hint := uint64(0); hint < 2; hint++ {
		deadline := time.Now().Add(2 * maxBackoff)
		for {
			var b Batch
			b.Add(cmd("PING"))
			p.Do(bg, 0, hint, &b)
			if b.Err() == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the kills, connection %d: %v", hint, b.Err())
			}
			time.Sleep(minBackoff)
		}
	}
	rc := r.Client(0)
	for g := 0; g < workers; g++ {
		got := rc.LRange(bg, fmt.Sprintf("l%d", g), 0, -1).Val()
		prev := -1
		for _, s := range got {
			n, _ := strconv.Atoi(s)
			if n <= prev {
				t.Fatalf("list %d = %v: %d after %d (re-run or reordered)", g, got, n, prev)
			}
			prev = n
		}
		in := make(map[string]bool, len(got))
		for _, s := range got {
			in[s] = true
		}
		for _, n := range acked[g] {
			if !in[strconv.Itoa(n)] {
				t.Fatalf("list %d lacks acknowledged %d: %v", g, n, got)
			}
		}
	}
	t.Logf("%d of %d batches failed", failed.Load(), workers*rounds)
}

// TestLargePipelineIsReadWhileWritten: a lone client's pipeline far larger
// than any buffer has its replies read while it is still being written. The
// connection here stops taking requests while more than a window of replies
// goes unread, as a proxy in front of Redis may: if nobody read until the
// writing ended, neither would ever end.
func TestLargePipelineIsReadWhileWritten(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	nc, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	bp := &backpressured{Conn: nc, window: 1 << 20}
	bp.cond = sync.NewCond(&bp.mu)
	c := newConn(bp, 0)
	defer c.Close()
	v := strings.Repeat("v", 1000)
	var b Batch
	for i := 0; i < 20000; i++ { // 20 MB each way
		b.Add(cmd("ECHO", v))
	}
	done := doAsync(c, &b)
	// Stuck means no reply read for a long while; a loaded machine may be
	// slow, but it keeps reading.
	read, since := 0, time.Now()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(100 * time.Millisecond):
			bp.mu.Lock()
			n := bp.read
			bp.mu.Unlock()
			if n != read {
				read, since = n, time.Now()
			} else if time.Since(since) > 10*time.Second {
				c.Close()
				t.Fatalf("stuck after %d bytes: replies were not read while the pipeline was written", n)
			}
		}
	}
	if b.Err() != nil || b.Answered() != b.Len() {
		t.Fatalf("answered %d of %d, %v", b.Answered(), b.Len(), b.Err())
	}
	if got, want := string(b.Reply(19999)), "$1000\r\n"+v+"\r\n"; got != want {
		t.Fatalf("last reply = %q", got)
	}
}

// backpressured is a connection whose writes wait while more than window
// bytes written have not been matched by bytes read.
type backpressured struct {
	net.Conn
	window int

	mu            sync.Mutex
	cond          *sync.Cond
	written, read int
	closed        bool
}

func (bp *backpressured) Read(p []byte) (int, error) {
	n, err := bp.Conn.Read(p)
	bp.mu.Lock()
	bp.read += n
	bp.cond.Broadcast()
	bp.mu.Unlock()
	return n, err
}

func (bp *backpressured) Write(p []byte) (int, error) {
	bp.mu.Lock()
	for bp.written-bp.read > bp.window && !bp.closed {
		bp.cond.Wait()
	}
	closed := bp.closed
	bp.written += len(p)
	bp.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	return bp.Conn.Write(p)
}

func (bp *backpressured) Close() error {
	bp.mu.Lock()
	bp.closed = true
	bp.cond.Broadcast()
	bp.mu.Unlock()
	return bp.Conn.Close()
}

// TestCloseFailsEveryWaiter closes the pool while one batch blocks in Redis
// and others sleep behind it: Close returns only when all have finished, each
// failed.
func TestCloseFailsEveryWaiter(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	p, err := New(Config{Addr: r.Addr(), Conns: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := conn(t, p, 0)
	var a Batch
	a.Add(cmd("BLPOP", "never", "0"))
	dones := []<-chan struct{}{doAsync(c, &a)}
	waitFor(t, "A to block in Redis", func() bool { return blocked(t, r.Client(0)) == 1 })
	others := make([]Batch, 8)
	for i := range others {
		others[i].Add(cmd("PING"))
		dones = append(dones, doAsync(c, &others[i]))
	}
	waitFor(t, "the others to sleep", func() bool { return parked(c) == len(others) })
	p.Close()
	c.mu.Lock()
	for i, b := range append([]*Batch{&a}, pointers(others)...) {
		if !b.finished {
			t.Errorf("batch %d unfinished when Close returned", i)
		}
	}
	c.mu.Unlock()
	for i, done := range dones {
		waitClosed(t, fmt.Sprintf("batch %d", i), done)
	}
	for i, b := range append([]Batch{a}, others...) {
		if b.Err() == nil || b.Answered() != 0 {
			t.Fatalf("batch %d: answered %d, err %v; want a failure", i, b.Answered(), b.Err())
		}
	}
}

func pointers(bs []Batch) []*Batch {
	ps := make([]*Batch, len(bs))
	for i := range bs {
		ps[i] = &bs[i]
	}
	return ps
}
