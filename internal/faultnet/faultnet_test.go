package faultnet

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// echo starts a server that writes back whatever it reads.
func echo(t *testing.T) string {
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

func start(t *testing.T) *Bridge {
	t.Helper()
	b, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func dial(t *testing.T, b *Bridge) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and reads it back, within limit.
func roundTrip(t *testing.T, c net.Conn, msg []byte, limit time.Duration) ([]byte, error) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(limit))
	got := make([]byte, len(msg))
	n, err := io.ReadFull(c, got)
	return got[:n], err
}

func TestRelay(t *testing.T) {
	b := start(t)
	c := dial(t, b)
	msg := bytes.Repeat([]byte("0123456789"), 10000)
	got, err := roundTrip(t, c, msg, 5*time.Second)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	if b.Conns() != 1 || b.Accepted() != 1 {
		t.Fatalf("conns %d accepted %d", b.Conns(), b.Accepted())
	}
}

func TestLatency(t *testing.T) {
	b := start(t)
	c := dial(t, b)
	b.SetLatency(30*time.Millisecond, 50*time.Millisecond)
	start := time.Now()
	if _, err := roundTrip(t, c, []byte("ping"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Fatalf("round trip took %v, want at least 80ms", d)
	}
	b.Heal()
	start = time.Now()
	if _, err := roundTrip(t, c, []byte("ping"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("healed round trip took %v", d)
	}
}

func TestBlackholeHoldsThenDelivers(t *testing.T) {
	b := start(t)
	c := dial(t, b)
	b.Blackhole()
	if got, err := roundTrip(t, c, []byte("held"), 200*time.Millisecond); err == nil {
		t.Fatalf("blackholed round trip answered %q", got)
	}
	// A new connection is accepted but gets nothing either.
	c2 := dial(t, b)
	if got, err := roundTrip(t, c2, []byte("new"), 100*time.Millisecond); err == nil {
		t.Fatalf("new connection answered %q", got)
	}
	b.Heal()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after heal: %q, %v", got, err)
	}
}

func TestCut(t *testing.T) {
	for _, rst := range []bool{true, false} {
		b := start(t)
		c := dial(t, b)
		if _, err := roundTrip(t, c, []byte("a"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if n := b.Cut(rst); n != 1 {
			t.Fatalf("Cut closed %d connections", n)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("rst=%v: read after cut succeeded", rst)
		}
		// Refused until healed.
		if c2, err := net.Dial("tcp", b.Addr()); err == nil {
			if _, err := roundTrip(t, c2, []byte("x"), time.Second); err == nil {
				t.Fatalf("rst=%v: connection after cut relayed", rst)
			}
			c2.Close()
		}
		b.Heal()
		c3 := dial(t, b)
		if _, err := roundTrip(t, c3, []byte("y"), 5*time.Second); err != nil {
			t.Fatalf("rst=%v: after heal: %v", rst, err)
		}
	}
}

func TestCutAfter(t *testing.T) {
	b := start(t)
	c := dial(t, b)
	// A round trip first: the bridge has the connection once it relayed it.
	if _, err := roundTrip(t, c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	b.CutAfter(5)
	later := dial(t, b)
	if _, err := c.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if string(got) != "01234" || err == nil && len(got) == 10 {
		t.Fatalf("got %q, %v; want the first 5 bytes, then the end", got, err)
	}
	// A connection opened after CutAfter is unaffected.
	if got, err := roundTrip(t, later, []byte("0123456789"), 5*time.Second); err != nil {
		t.Fatalf("later connection: %q, %v", got, err)
	}
}

func TestSlice(t *testing.T) {
	b := start(t)
	c := dial(t, b)
	b.SliceWrites(3, 100*time.Microsecond)
	msg := bytes.Repeat([]byte("abcdefgh"), 100)
	got, err := roundTrip(t, c, msg, 10*time.Second)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("sliced: %d bytes, %v", len(got), err)
	}
}

func TestRate(t *testing.T) {
	b := start(t)
	c := dial(t, b)
	b.LimitRate(100 << 10) // 100 KiB/s each way
	msg := bytes.Repeat([]byte("x"), 20<<10)
	start := time.Now()
	got, err := roundTrip(t, c, msg, 10*time.Second)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("limited: %d bytes, %v", len(got), err)
	}
	// 20 KiB at 100 KiB/s is 200ms per direction; the directions overlap.
	if d := time.Since(start); d < 180*time.Millisecond {
		t.Fatalf("20KiB took %v at 100KiB/s", d)
	}
}
