package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/redcon"
)

// cachedValue stores a value of n bytes under key and waits until the proxy
// answers it from the L1.
func cachedValue(t *testing.T, e *env, key string, n int) {
	t.Helper()
	e.waitSubscribed()
	if err := e.direct.Set(bg, key, strings.Repeat("x", n), 0).Err(); err != nil {
		t.Fatal(err)
	}
	c := e.client(0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		hits := e.counter("cacheproxy_l1_hits_total", nil)
		if v, err := c.Get(bg, key).Result(); err != nil || len(v) != n {
			t.Fatalf("GET %s: %d bytes, %v", key, len(v), err)
		}
		if e.counter("cacheproxy_l1_hits_total", nil) > hits {
			return
		}
		e.cache.Wait()
		if time.Now().After(deadline) {
			t.Fatalf("%s never became an L1 hit", key)
		}
	}
}

// flood connects n clients that each pipeline count GETs of key and never
// read a reply. Closing the returned function hangs them all up.
func flood(t *testing.T, addr, key string, n, count int) (hangUp func()) {
	t.Helper()
	var req bytes.Buffer
	for range count {
		req.WriteString("*2\r\n$3\r\nGET\r\n$" + strconv.Itoa(len(key)) + "\r\n" + key + "\r\n")
	}
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// Little room in the flooder's socket: what the proxy writes stays
		// the proxy's to hold, whatever the system's buffer sizes.
		_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
		conns[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetWriteDeadline(time.Now().Add(15 * time.Second))
			_, _ = c.Write(req.Bytes()) // fails once the proxy drops the client
		}()
	}
	var once sync.Once
	hangUp = func() {
		once.Do(func() {
			for _, c := range conns {
				c.Close()
			}
			wg.Wait()
		})
	}
	t.Cleanup(hangUp)
	return hangUp
}

// memSample is the process's resident set and the Go heap in use.
type memSample struct{ rss, heap uint64 }

func sampleMem() memSample {
	var m memSample
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseUint(f[1], 10, 64)
			m.rss = pages * uint64(os.Getpagesize())
		}
	}
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	m.heap = s[0].Value.Uint64()
	return m
}

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pinger pings through the proxy in a loop until stop, and records each
// round trip. Every PING must be answered.
type pinger struct {
	mu   sync.Mutex
	rtts []time.Duration
	errs int
	stop chan struct{}
	done chan struct{}
}

func startPinger(e *env) *pinger {
	p := &pinger{stop: make(chan struct{}), done: make(chan struct{})}
	c := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 1, Protocol: 2, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	go func() {
		defer close(p.done)
		defer c.Close()
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			start := time.Now()
			err := c.Ping(bg).Err()
			p.mu.Lock()
			if err != nil {
				p.errs++
			} else {
				p.rtts = append(p.rtts, time.Since(start))
			}
			p.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return p
}

// end stops the pinger and returns its count, p50, p99 and max.
func (p *pinger) end() (n, errs int, p50, p99, worst time.Duration) {
	close(p.stop)
	<-p.done
	r := slices.Clone(p.rtts)
	slices.Sort(r)
	if len(r) == 0 {
		return 0, p.errs, 0, 0, 0
	}
	return len(r), p.errs, r[len(r)/2], r[len(r)*99/100], r[len(r)-1]
}

// TestOutputBufferFlood: eight clients pipeline 256 GETs each of a 256 KiB
// cached value (64 MiB of replies each) and never read. The proxy drops each
// of them at the normal class's hard limit while it builds their replies,
// instead of building them all, counts them, and keeps answering a
// bystander; once they hang up it goes back to idle. What is asserted is the
// mechanism, not how fast it is: every flooder is dropped over its output
// buffer, none over clients' memory (their hard limits keep them well under
// it; without the hard limit they would outgrow it), and the heap grows by
// no more than the limits allow.
func TestOutputBufferFlood(t *testing.T) {
	const (
		flooders = 8
		gets     = 256
		size     = 256 << 10
		hard     = 2 << 20
		clients  = 64 << 20
	)
	e := startEnv(t, envOptions{options: func(o *Options) {
		o.Clients = ClientLimits{Normal: OutputLimit{Hard: hard}, MaxMemory: clients}
	}})
	cachedValue(t, e, "big", size)

	runtime.GC()
	base := sampleMem()
	var peak memSample
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			m := sampleMem()
			peak.rss, peak.heap = max(peak.rss, m.rss), max(peak.heap, m.heap)
			select {
			case <-sampling:
				return
			case <-tick.C:
			}
		}
	}()

	ping := startPinger(e)
	start := time.Now()
	hangUp := flood(t, e.addr, "big", flooders, gets)
	drops := func() (out, mem float64) {
		return e.counter("cacheproxy_client_disconnects_total", map[string]string{"reason": "output_buffer"}),
			e.counter("cacheproxy_client_disconnects_total", map[string]string{"reason": "clients_memory"})
	}
	// Generous: the flooders' replies are built in well under a second
	// without the race detector, in a few seconds with it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, mem := drops()
		if out+mem >= flooders {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, %v of %d flooders dropped over their output buffer, %v over clients' memory", out, flooders, mem)
		}
		time.Sleep(10 * time.Millisecond)
	}
	dropped := time.Since(start)
	if out, mem := drops(); out != flooders || mem != 0 {
		t.Errorf("flooders dropped: %v over their output buffer, %v over clients' memory; want %d, 0", out, mem, flooders)
	}
	time.Sleep(200 * time.Millisecond) // the bystander keeps going after the flood
	n, errs, p50, p99, worst := ping.end()
	close(sampling)
	<-sampled

	t.Logf("flooders dropped after %v; RSS %d MiB -> peak %d MiB (+%d MiB), heap %d MiB -> peak %d MiB",
		dropped.Round(time.Millisecond), base.rss>>20, peak.rss>>20, (peak.rss-min(base.rss, peak.rss))>>20, base.heap>>20, peak.heap>>20)
	t.Logf("bystander: %d PINGs, %d errors, p50 %v, p99 %v, max %v", n, errs, p50, p99, worst)
	if errs > 0 || n == 0 {
		t.Errorf("bystander: %d PINGs answered, %d failed", n, errs)
	}
	// Each flooder holds at most its hard limit, a reply and an accounting
	// step more while it builds; a buffer that grows by appending leaves as
	// much again behind as garbage, and the garbage collector lets the heap
	// reach twice what is live. Unbounded, the flood takes 512 MiB.
	if growth := int64(peak.heap) - int64(base.heap); growth > 4*flooders*(hard+size+memStep)+32<<20 {
		t.Errorf("heap grew by %d MiB during the flood", growth>>20)
	}

	hangUp()
	cpu0, t0 := cpuTime(), time.Now()
	time.Sleep(time.Second)
	busy := float64(cpuTime()-cpu0) / float64(time.Since(t0))
	t.Logf("after the flooders hung up: %.1f%% of a CPU over 1s", busy*100)
	if got := e.counter("cacheproxy_connected_clients", nil); got > 2 {
		t.Errorf("%v clients still connected after the flooders hung up", got)
	}
}

// pipelineGets sends count GETs of key on a connection of its own and reads
// every reply, a bulk string of size bytes each, as fast as they come.
func pipelineGets(addr, key string, count, size int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var req bytes.Buffer
	for range count {
		req.WriteString("*2\r\n$3\r\nGET\r\n$" + strconv.Itoa(len(key)) + "\r\n" + key + "\r\n")
	}
	if _, err := c.Write(req.Bytes()); err != nil {
		return err
	}
	reply := "$" + strconv.Itoa(size) + "\r\n" + strings.Repeat("x", size) + "\r\n"
	want := bytes.Repeat([]byte(reply), count)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return errors.New("replies differ from the value")
	}
	return nil
}

// TestOutputBufferSoftLimit: a client whose replies stay above the soft limit
// for longer than its grace is dropped; one that reads them is not.
func TestOutputBufferSoftLimit(t *testing.T) {
	const (
		size  = 256 << 10
		count = 32 // 8 MiB of replies: far more than the soft limit and the flooder's socket hold
	)
	e := startEnv(t, envOptions{options: func(o *Options) {
		o.Clients = ClientLimits{Normal: OutputLimit{Soft: 1 << 20, SoftFor: 2 * time.Second}}
	}})
	cachedValue(t, e, "mid", size)
	hangUp := flood(t, e.addr, "mid", 1, count)
	defer hangUp()
	outputDrops := func() float64 {
		return e.counter("cacheproxy_client_disconnects_total", map[string]string{"reason": "output_buffer"})
	}
	deadline := time.Now().Add(10 * time.Second)
	for outputDrops() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("a client that never reads was not dropped at the soft limit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A client that reads gets every reply, past the soft limit or not: it
	// takes the 1 MiB above it well within the two seconds of grace, even on
	// a loaded machine.
	if err := pipelineGets(e.addr, "mid", 8, size); err != nil {
		t.Fatalf("a reading client: %v", err)
	}
	if n := outputDrops(); n != 1 {
		t.Errorf("output_buffer disconnects %v, want 1", n)
	}
}

// TestClientsMaxMemory: past the memory all clients may hold, the clients
// holding most are dropped until the rest fit. Four clients that never read
// are each answered 8 MiB, 32 MiB together against a bound of 12 MiB: three
// are dropped, whatever the order their replies are built in, and the last
// one, which fits alone, is not.
func TestClientsMaxMemory(t *testing.T) {
	e := startEnv(t, envOptions{options: func(o *Options) {
		o.Clients = ClientLimits{MaxMemory: 12 << 20}
	}})
	cachedValue(t, e, "big", 256<<10)
	flood(t, e.addr, "big", 4, 32)
	memDrops := func() float64 {
		return e.counter("cacheproxy_client_disconnects_total", map[string]string{"reason": "clients_memory"})
	}
	deadline := time.Now().Add(10 * time.Second)
	for memDrops() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("clients_memory disconnects %v, want 3", memDrops())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.client(0).Ping(bg).Err(); err != nil {
		t.Fatal(err)
	}
	if n := memDrops(); n != 3 {
		t.Errorf("clients_memory disconnects %v, want 3", n)
	}
	if n := e.counter("cacheproxy_client_disconnects_total", map[string]string{"reason": "output_buffer"}); n != 0 {
		t.Errorf("output_buffer disconnects %v, want 0", n)
	}
}

// TestBufferLen: the size of redcon's reply buffer is read without copying
// it; if redcon's Writer changes, measuring falls back to copying, which
// makes building a batch quadratic again, and this fails.
func TestBufferLen(t *testing.T) {
	if writerBuf < 0 {
		t.Fatal("redcon.Writer has no reply buffer field b: bufferLen copies the buffer")
	}
	w := redcon.NewWriter(io.Discard)
	for i := range 100 {
		w.WriteBulkString(strings.Repeat("v", i))
		if got, want := bufferLen(w), len(w.Buffer()); got != want {
			t.Fatalf("bufferLen %d, buffer holds %d", got, want)
		}
	}
	if err := w.Flush(); err != nil || bufferLen(w) != 0 {
		t.Fatalf("after Flush: bufferLen %d, %v", bufferLen(w), err)
	}
}

// TestIdleTimeout: an idle client is closed after limits.timeout; one blocked
// on a command is not.
func TestIdleTimeout(t *testing.T) {
	e := startEnv(t, envOptions{options: func(o *Options) {
		o.Clients = ClientLimits{Timeout: 300 * time.Millisecond, TCPKeepAlive: time.Minute}
	}})
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	blocked := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 1, Protocol: 2, ReadTimeout: 5 * time.Second})
	defer blocked.Close()
	res := make(chan error, 1)
	go func() { res <- blocked.BLPop(bg, time.Second, "nolist").Err() }()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("an idle client read a reply it never asked for")
	}
	// redcon closes the socket before it tells the proxy why: the client can
	// see the end of the stream before the disconnect is counted.
	deadline := time.Now().Add(5 * time.Second)
	for e.counter("cacheproxy_client_disconnects_total", map[string]string{"reason": "timeout"}) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the idle client's disconnect was not counted as a timeout")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-res; err != redis.Nil {
		t.Errorf("BLPOP blocked past the idle timeout: %v, want a nil reply", err)
	}
}
