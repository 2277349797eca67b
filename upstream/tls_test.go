package upstream

import (
	"bufio"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/tlstest"
)

func tlsPool(t *testing.T, r *tlstest.Redis, proto int, cfg *tls.Config) *Pool {
	t.Helper()
	p, err := New(Config{Addr: r.Addr, Conns: 1, Protocol: proto, TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func clientTLS(t *testing.T, r *tlstest.Redis) *tls.Config {
	pair, err := tls.LoadX509KeyPair(r.ClientFiles.Cert, r.ClientFiles.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: r.CA.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}}
}

// TestTLSConnections: shared, dedicated, urgent and raw connections all speak
// TLS, in both protocols and any database, and an idle connection the server
// closed is noticed before a batch is sent on it.
func TestTLSConnections(t *testing.T) {
	t.Parallel()
	r := tlstest.StartRedis(t)
	for _, proto := range []int{2, 3} {
		p := tlsPool(t, r, proto, clientTLS(t, r))
		var b Batch
		b.Add(cmd("SET", "k", "v"))
		b.Add(cmd("GET", "k"))
		p.Do(bg, 3, 0, &b)
		if b.Err() != nil || string(b.Reply(1)) != "$1\r\nv\r\n" {
			t.Fatalf("RESP%d shared: %q, %v", proto, b.Reply(1), b.Err())
		}
		if got := r.Client(t, 3).Get(bg, "k").Val(); got != "v" {
			t.Fatalf("RESP%d: db 3 holds %q", proto, got)
		}

		d, err := p.Dedicated(bg, 3)
		if err != nil {
			t.Fatal(err)
		}
		b.Reset()
		b.Add(cmd("GET", "k"))
		d.Do(&b)
		if b.Err() != nil || string(b.Reply(0)) != "$1\r\nv\r\n" {
			t.Fatalf("RESP%d dedicated: %q, %v", proto, b.Reply(0), b.Err())
		}
		d.Close()

		b.Reset()
		b.Add(cmd("PING"))
		p.Urgent(bg, &b)
		if b.Err() != nil {
			t.Fatalf("RESP%d urgent: %v", proto, b.Err())
		}

		raw, err := p.Raw(bg, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = raw.Write(cmd("SUBSCRIBE", "ch"))
		_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(raw)
		line, err := br.ReadString('\n')
		if err != nil || (line != "*3\r\n" && line != ">3\r\n") {
			t.Fatalf("RESP%d raw SUBSCRIBE: %q, %v", proto, line, err)
		}
		raw.Close()
	}

	// The server closes the idle shared connection: the next batch redials.
	p := tlsPool(t, r, 2, clientTLS(t, r))
	var b Batch
	b.Add(cmd("PING"))
	p.Do(bg, 0, 0, &b)
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	if err := r.Client(t, 0).Do(bg, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	b.Reset()
	b.Add(cmd("PING"))
	p.Do(bg, 0, 0, &b)
	if b.Err() != nil {
		t.Fatalf("after the server closed the idle connection: %v", b.Err())
	}
}

// TestTLSHandshakeFailures: a failed handshake names the server and why.
func TestTLSHandshakeFailures(t *testing.T) {
	t.Parallel()
	r := tlstest.StartRedis(t)
	stranger := tlstest.NewCA(t, "another CA")

	wrongCA := clientTLS(t, r)
	wrongCA.RootCAs = stranger.Pool()
	wrongName := clientTLS(t, r)
	wrongName.ServerName = "redis.example.com"
	noCert := clientTLS(t, r)
	noCert.Certificates = nil
	for _, tt := range []struct {
		name string
		cfg  *tls.Config
		want []string
	}{
		{"unknown CA", wrongCA, []string{"TLS handshake with " + r.Addr, "certificate signed by unknown authority"}},
		{"wrong name", wrongName, []string{"TLS handshake with " + r.Addr, "redis.example.com"}},
		// TLS 1.3 learns of the refusal after its handshake: on the first
		// read, or as a reset when the write comes after the server closed.
		{"no client certificate", noCert, []string{r.Addr, "certificate required|connection reset"}},
	} {
		p := tlsPool(t, r, 2, tt.cfg)
		var b Batch
		b.Add(cmd("PING"))
		p.Do(bg, 0, 0, &b)
		for _, w := range tt.want {
			if b.Err() == nil || !containsAny(b.Err().Error(), strings.Split(w, "|")) {
				t.Errorf("%s: %v, want an error with %q", tt.name, b.Err(), w)
			}
		}
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
