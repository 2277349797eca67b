package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// echoServer writes back whatever it reads, and closes once its client has
// closed its write side.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// startRelay runs a relay to target until the test ends, and returns its
// address.
func startRelay(t *testing.T, target string, latency time.Duration) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the latency relay runs on Linux only")
	}
	r, err := newRelay("127.0.0.1:0", target, latency)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	return r.addr()
}

func dialT(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A round trip through the relay takes both directions' latency, never less,
// and, at the median, no more than that plus a bound generous enough for a
// loaded machine, yet below what timers of a millisecond's resolution give.
func TestRelayLatencyIsAccurate(t *testing.T) {
	t.Parallel()
	const oneWay = 100 * time.Microsecond
	c := dialT(t, startRelay(t, echoServer(t), oneWay))
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	rtts := make([]time.Duration, 0, 300)
	msg, got := []byte("ping"), make([]byte, 4)
	for range cap(rtts) {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		rtts = append(rtts, time.Since(start))
	}
	slices.Sort(rtts)
	if rtts[0] < 2*oneWay {
		t.Fatalf("fastest round trip %v, below the latency of %v each way", rtts[0], oneWay)
	}
	if med := rtts[len(rtts)/2]; med > 2*oneWay+time.Millisecond {
		t.Fatalf("median round trip %v with %v each way (fastest %v)", med, oneWay, rtts[0])
	}
}

// Each chunk waits its latency from the moment it was read, not one after
// another: a stream of chunks comes back in order one round trip after it was
// sent, not one latency per chunk.
func TestRelayKeepsThroughputAndOrder(t *testing.T) {
	t.Parallel()
	const oneWay, chunks = 20 * time.Millisecond, 50
	c := dialT(t, startRelay(t, echoServer(t), oneWay))
	var sent bytes.Buffer
	start := time.Now()
	for i := range chunks {
		msg := fmt.Appendf(nil, "<%03d>", i)
		sent.Write(msg)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // a chunk of its own for the relay
	}
	writing := time.Since(start)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, sent.Len())
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !bytes.Equal(got, sent.Bytes()) {
		t.Fatalf("echoed %q, want %q", got, sent.Bytes())
	}
	// Delays one after another would take chunks × 2 × oneWay = 2 s.
	if limit := writing + 2*oneWay + 500*time.Millisecond; took < 2*oneWay || took > limit {
		t.Fatalf("%d chunks written over %v came back after %v, want within [%v, %v]", chunks, writing, took, 2*oneWay, limit)
	}
}

// Megabytes each way at once fill the sockets' buffers, so the relay holds
// what a socket will not take; everything arrives, in order, and the end of
// the stream follows it through.
func TestRelayBulkBothWaysAndEndOfStream(t *testing.T) {
	t.Parallel()
	c := dialT(t, startRelay(t, echoServer(t), time.Millisecond)).(*net.TCPConn)
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	want := make([]byte, 8<<20)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c) // to the end of stream the echo server's close sends
	if err != nil {
		t.Fatalf("read %d bytes, then %v", len(got), err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echoed %d bytes, want the %d sent, in order", len(got), len(want))
	}
}

func TestRelayClosesWhatTheTargetRefuses(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nothing := ln.Addr().String()
	ln.Close()
	c := dialT(t, startRelay(t, nothing, 0))
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
	}
}

func TestRelayStopsWithItsContext(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the latency relay runs on Linux only")
	}
	r, err := newRelay("127.0.0.1:0", echoServer(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	c := dialT(t, r.addr())
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a stopped relay", n)
	}
	if c2, err := net.Dial("tcp", r.addr()); err == nil {
		c2.Close()
		t.Fatal("a stopped relay still accepts connections")
	}
}

func TestRelayAddrs(t *testing.T) {
	t.Parallel()
	for _, bad := range []struct{ listen, target string }{
		{"10.0.0.1:1", "127.0.0.1:6379"},
		{"127.0.0.1:0", "192.168.1.1:6379"},
		{"127.0.0.1:0", "[::1]:6379"},
		{"127.0.0.1:0", "127.0.0.1:0"},
		{"localhost:0", "127.0.0.1:6379"},
	} {
		if _, _, err := relayAddrs(bad.listen, bad.target, time.Millisecond); err == nil {
			t.Errorf("relayAddrs(%q, %q) = nil error", bad.listen, bad.target)
		}
	}
	for _, d := range []time.Duration{-time.Microsecond, 2 * time.Second} {
		if _, _, err := relayAddrs("127.0.0.1:0", "127.0.0.1:6379", d); err == nil {
			t.Errorf("latency %v accepted", d)
		}
	}
	if _, _, err := relayAddrs("127.0.0.1:0", "127.0.0.1:6379", 500*time.Microsecond); err != nil {
		t.Error(err)
	}
}
