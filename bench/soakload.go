package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheproxy/cacheproxy/resp"
)

// The soak's load: clients through the proxy, each with keys and a counter of
// its own and reads of the keys written directly on Redis, and the direct
// writer.

const (
	soakKeysPerClient = 16
	soakDirectKeys    = 8
	soakReplyTimeout  = 5 * time.Second
	soakMaxLine       = 1 << 20
)

// rconn is a minimal RESP2 client connection.
type rconn struct {
	c  net.Conn
	br *bufio.Reader
	wb []byte
}

func dialR(ctx context.Context, addr string) (*rconn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rconn{c: c, br: bufio.NewReaderSize(c, 32<<10)}, nil
}

// do writes the commands at once (a pipeline when more than one) and reads
// their replies into got, stopping at the first connection error.
func (r *rconn) do(cmds [][]string, got []value) (int, error) {
	_ = r.c.SetDeadline(time.Now().Add(soakReplyTimeout))
	r.wb = r.wb[:0]
	for _, args := range cmds {
		r.wb = resp.AppendCommand(r.wb, args...)
	}
	if _, err := r.c.Write(r.wb); err != nil {
		return 0, err
	}
	for i := range cmds {
		v, err := readValue(r.br, 0)
		if err != nil {
			return i, err
		}
		got[i] = v
	}
	return len(cmds), nil
}

var errSoakProtocol = errors.New("RESP protocol error")

// readValue reads one RESP2 reply.
func readValue(br *bufio.Reader, depth int) (value, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return value{}, fmt.Errorf("%w: line too long", errSoakProtocol)
		}
		return value{}, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return value{}, fmt.Errorf("%w: bad line %q", errSoakProtocol, line)
	}
	kind, body := line[0], string(line[1:len(line)-2])
	v := value{kind: kind}
	switch kind {
	case '+', '-':
		v.str = body
	case ':':
		if v.n, err = strconv.ParseInt(body, 10, 64); err != nil {
			return v, fmt.Errorf("%w: bad integer %q", errSoakProtocol, body)
		}
	case '$', '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > soakMaxLine {
			return v, fmt.Errorf("%w: bad length %q", errSoakProtocol, body)
		}
		if n == -1 {
			v.null = true
			return v, nil
		}
		if kind == '$' {
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(br, buf); err != nil {
				return v, err
			}
			if buf[n] != '\r' || buf[n+1] != '\n' {
				return v, fmt.Errorf("%w: bulk string not terminated by CRLF", errSoakProtocol)
			}
			v.str = string(buf[:n])
			return v, nil
		}
		if depth > 4 {
			return v, fmt.Errorf("%w: nested too deep", errSoakProtocol)
		}
		v.arr = make([]value, n)
		for i := range v.arr {
			if v.arr[i], err = readValue(br, depth+1); err != nil {
				return v, err
			}
		}
	default:
		return v, fmt.Errorf("%w: unexpected reply type %q", errSoakProtocol, kind)
	}
	return v, nil
}

// soakStats are the soak's running totals, safe for concurrent use.
type soakStats struct {
	ops         atomic.Int64 // replies checked
	faultErrors atomic.Int64 // error replies and connection failures while a fault was in force or settling
	calmErrors  atomic.Int64 // the same outside fault windows
	wrong       atomic.Int64 // wrong replies
	reconnects  atomic.Int64
	directOps   atomic.Int64

	mu        sync.Mutex
	wrongSeen []string // the first wrong replies, described
	calmSeen  []string // the first errors outside fault windows
}

func (s *soakStats) addWrong(at time.Duration, desc string) {
	s.wrong.Add(1)
	s.mu.Lock()
	if len(s.wrongSeen) < 50 {
		s.wrongSeen = append(s.wrongSeen, fmt.Sprintf("%s: %s", at.Round(time.Millisecond), desc))
	}
	s.mu.Unlock()
}

func (s *soakStats) addError(faulty bool, at time.Duration, desc string) {
	if faulty {
		s.faultErrors.Add(1)
		return
	}
	s.calmErrors.Add(1)
	s.mu.Lock()
	if len(s.calmSeen) < 20 {
		s.calmSeen = append(s.calmSeen, fmt.Sprintf("%s: %s", at.Round(time.Millisecond), desc))
	}
	s.mu.Unlock()
}

// soakEnv is what the load's goroutines share.
type soakEnv struct {
	proxy  string
	began  time.Time
	stats  *soakStats
	direct *directModel
	faulty func(time.Time) bool // whether errors at this time are a fault's
}

func (e *soakEnv) since(t time.Time) time.Duration { return t.Sub(e.began) }

func directKeyName(i int) string { return "soak:direct:" + strconv.Itoa(i) }

// op is one command of a client and what checking its reply needs.
type op struct {
	kind string // get, set, incr, mget, dget
	args []string
	keys []int  // own key indexes (get, set, mget's first elements)
	dkey string // a direct key (dget, mget's last element)
	val  string // set's value
}

// soakClient is one connection's load and its model of its own keys.
type soakClient struct {
	id      int
	env     *soakEnv
	rng     *rand.Rand
	keys    []*keyModel
	counter counterModel
	seq     int64
	conn    *rconn
}

func newSoakClient(id int, env *soakEnv) *soakClient {
	c := &soakClient{id: id, env: env, rng: rand.New(rand.NewPCG(uint64(id), 42))}
	for range soakKeysPerClient {
		c.keys = append(c.keys, newKeyModel())
	}
	return c
}

func (c *soakClient) keyName(i int) string { return fmt.Sprintf("soak:c%d:k%d", c.id, i) }
func (c *soakClient) counterName() string  { return fmt.Sprintf("soak:c%d:counter", c.id) }

func (c *soakClient) next() op {
	k := c.rng.IntN(soakKeysPerClient)
	switch p := c.rng.IntN(100); {
	case p < 40:
		return op{kind: "get", args: []string{"GET", c.keyName(k)}, keys: []int{k}}
	case p < 55:
		c.seq++
		v := fmt.Sprintf("c%d:k%d:%d:%s", c.id, k, c.seq, padding[:c.rng.IntN(len(padding))])
		return op{kind: "set", args: []string{"SET", c.keyName(k), v}, keys: []int{k}, val: v}
	case p < 67:
		return op{kind: "incr", args: []string{"INCR", c.counterName()}}
	case p < 82:
		o := op{kind: "mget", args: []string{"MGET"}}
		for range 4 {
			k := c.rng.IntN(soakKeysPerClient)
			o.keys = append(o.keys, k)
			o.args = append(o.args, c.keyName(k))
		}
		o.dkey = directKeyName(c.rng.IntN(soakDirectKeys))
		o.args = append(o.args, o.dkey)
		return o
	default:
		d := directKeyName(c.rng.IntN(soakDirectKeys))
		return op{kind: "dget", args: []string{"GET", d}, dkey: d}
	}
}

const padding = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

// batch is the next request: one command, or one time in ten a pipeline of
// 8 to 24.
func (c *soakClient) batch() []op {
	n := 1
	if c.rng.IntN(10) == 0 {
		n = 8 + c.rng.IntN(17)
	}
	ops := make([]op, n)
	for i := range ops {
		ops[i] = c.next()
	}
	return ops
}

// run drives the client until ctx ends or deadline passes.
func (c *soakClient) run(ctx context.Context, deadline time.Time) {
	defer func() {
		if c.conn != nil {
			c.conn.c.Close()
		}
	}()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if c.conn == nil {
			conn, err := dialR(ctx, c.env.proxy)
			if err != nil {
				now := time.Now()
				c.env.stats.addError(c.env.faulty(now), c.env.since(now), "connect: "+err.Error())
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			c.conn, backoff = conn, 50*time.Millisecond
		}
		ops := c.batch()
		cmds := make([][]string, len(ops))
		for i, o := range ops {
			cmds[i] = o.args
		}
		got := make([]value, len(ops))
		started := time.Now()
		n, err := c.conn.do(cmds, got)
		now := time.Now()
		errReplies := false
		for i := 0; i < n; i++ {
			c.check(ops[i], got[i], started, now)
			errReplies = errReplies || got[i].kind == '-'
		}
		if errReplies {
			// As a client would, back off a little rather than spin on errors.
			sleepUntil(ctx, time.Now().Add(10*time.Millisecond))
		}
		if err != nil {
			// The commands without a reply may or may not have run.
			for _, o := range ops[n:] {
				c.lost(o, now)
			}
			desc := fmt.Sprintf("client %d: %d of %d replies, then %v", c.id, n, len(ops), err)
			if errors.Is(err, errSoakProtocol) {
				c.env.stats.addWrong(c.env.since(now), desc)
			} else {
				c.env.stats.addError(c.env.faulty(now), c.env.since(now), desc)
			}
			c.conn.c.Close()
			c.conn = nil
			c.env.stats.reconnects.Add(1)
		}
	}
}

// lost records a command whose outcome is unknown.
func (c *soakClient) lost(o op, now time.Time) {
	switch o.kind {
	case "set":
		c.keys[o.keys[0]].setUnknown(o.val, now)
	case "incr":
		c.counter.incrUnknown()
	}
}

func (c *soakClient) check(o op, v value, started, now time.Time) {
	st := c.env.stats
	st.ops.Add(1)
	if v.kind == '-' {
		if errorIsWrong(v.str) {
			st.addWrong(c.env.since(now), fmt.Sprintf("client %d: %q answered %s", c.id, o.args, v))
			return
		}
		c.lost(o, now)
		st.addError(c.env.faulty(now), c.env.since(now), fmt.Sprintf("client %d: %s: %s", c.id, o.args[0], v.str))
		return
	}
	var err error
	switch o.kind {
	case "get":
		err = c.keys[o.keys[0]].check(v, now)
	case "set":
		if v.kind == '+' && v.str == "OK" {
			c.keys[o.keys[0]].setAcked(o.val)
		} else {
			err = fmt.Errorf("SET answered %s, want +OK", v)
			c.keys[o.keys[0]].setUnknown(o.val, now)
		}
	case "incr":
		err = c.counter.check(v)
	case "dget":
		err = c.env.direct.check(o.dkey, v, started)
	case "mget":
		if v.kind != '*' || v.null || len(v.arr) != len(o.keys)+1 {
			err = fmt.Errorf("MGET of %d keys answered %s", len(o.keys)+1, v)
			break
		}
		for i, k := range o.keys {
			if err = c.keys[k].check(v.arr[i], now); err != nil {
				err = fmt.Errorf("MGET element %d: %w", i, err)
				break
			}
		}
		if err == nil {
			if err = c.env.direct.check(o.dkey, v.arr[len(o.keys)], started); err != nil {
				err = fmt.Errorf("MGET element %d: %w", len(o.keys), err)
			}
		}
	}
	if err != nil {
		st.addWrong(c.env.since(now), fmt.Sprintf("client %d: %q: %v", c.id, o.args[:min(2, len(o.args))], err))
	}
}

// directWriter writes the direct keys on Redis itself, round robin, every
// interval, until ctx ends, deadline passes or it has made count writes
// (count < 0: no limit).
func directWriter(ctx context.Context, env *soakEnv, redisAddr string, interval time.Duration, deadline time.Time, count int) error {
	var conn *rconn
	defer func() {
		if conn != nil {
			conn.c.Close()
		}
	}()
	got := make([]value, 1)
	for i := 0; ctx.Err() == nil && time.Now().Before(deadline) && (count < 0 || i < count); i++ {
		if conn == nil {
			var err error
			if conn, err = dialR(ctx, redisAddr); err != nil {
				return fmt.Errorf("direct writer: %w", err)
			}
		}
		k := directKeyName(i % soakDirectKeys)
		n, val := env.direct.issue(k)
		if _, err := conn.do([][]string{{"SET", k, val}}, got); err != nil {
			// Redis itself is not behind the faults: this is unexpected, but
			// not the proxy's doing. The value may have landed; reads
			// allow it (issued), and no read is held to it.
			conn.c.Close()
			conn = nil
		} else if got[0].kind == '+' {
			env.direct.acked(k, n, time.Now())
			env.stats.directOps.Add(1)
		}
		if interval > 0 {
			sleepUntil(ctx, time.Now().Add(interval))
		}
	}
	return nil
}
