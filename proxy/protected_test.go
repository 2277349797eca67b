package proxy

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// dialFrom connects to addr from the loopback source address src, and
// returns all the proxy sends in reply to PING before it closes, or within
// two seconds.
func dialFrom(t *testing.T, src, addr string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = c.Write([]byte("PING\r\n"))
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestProtectedMode: with no password, a client from 127.0.0.2 (loopback,
// but not what Redis calls local) gets DENIED and is disconnected; one from
// 127.0.0.1 is served. A password, or protected mode off, lets both in.
func TestProtectedMode(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		options   func(*Options)
		denied    bool
		refusedBy float64
	}{
		{"on", func(o *Options) { o.ProtectedMode = true }, true, 1},
		{"off", func(o *Options) {}, false, 0},
		{"password", func(o *Options) { o.ProtectedMode, o.RequirePass = true, "pw" }, false, 0},
		{"users", func(o *Options) { o.ProtectedMode, o.Users = true, []User{{Name: "a", Password: "pw"}} }, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := startEnv(t, envOptions{options: c.options})
			got := dialFrom(t, "127.0.0.2", e.addr)
			switch {
			case c.denied && got != "-"+errDenied+"\r\n":
				t.Errorf("from 127.0.0.2: %q, want DENIED and a close", got)
			case !c.denied && !(got == "+PONG\r\n" || strings.HasPrefix(got, "-NOAUTH")):
				t.Errorf("from 127.0.0.2: %q", got)
			}
			if got := dialFrom(t, "127.0.0.1", e.addr); got != "+PONG\r\n" && !strings.HasPrefix(got, "-NOAUTH") {
				t.Errorf("from 127.0.0.1: %q", got)
			}
			if n := e.counter("cacheproxy_client_connections_refused_total", map[string]string{"reason": "protected_mode"}); n != c.refusedBy {
				t.Errorf("refused by protected mode: %v, want %v", n, c.refusedBy)
			}
		})
	}
}

func TestLocalPeer(t *testing.T) {
	t.Parallel()
	for addr, want := range map[net.Addr]bool{
		&net.TCPAddr{IP: net.ParseIP("127.0.0.1")}:        true,
		&net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1")}: true,
		&net.TCPAddr{IP: net.ParseIP("::1")}:              true,
		&net.TCPAddr{IP: net.ParseIP("127.0.0.2")}:        false,
		&net.TCPAddr{IP: net.ParseIP("10.0.0.1")}:         false,
		&net.TCPAddr{IP: net.ParseIP("::")}:               false,
		&net.UnixAddr{Name: "/tmp/s", Net: "unix"}:        true,
	} {
		if got := localPeer(addr); got != want {
			t.Errorf("%v: %v", addr, got)
		}
	}
}
