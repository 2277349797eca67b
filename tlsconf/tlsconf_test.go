package tlsconf

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
	"github.com/cacheproxy/cacheproxy/internal/tlstest"
)

func TestNewServerErrorsNameFieldAndFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	good := ca.Write(t, dir, "good", ca.Leaf(t, "server", 2))
	other := ca.Write(t, dir, "other", ca.Leaf(t, "other", 3))
	garbage := filepath.Join(dir, "garbage.pem")
	tlstest.WriteFile(t, garbage, []byte("not a certificate\n"))
	missing := filepath.Join(dir, "missing.pem")

	for _, tt := range []struct {
		name string
		cfg  ServerConfig
		want string
	}{
		{"missing cert", ServerConfig{CertFile: missing, KeyFile: good.Key}, `cert_file "` + missing + `": cannot be read: no such file or directory`},
		{"missing key", ServerConfig{CertFile: good.Cert, KeyFile: missing}, `key_file "` + missing + `": cannot be read`},
		{"garbage cert", ServerConfig{CertFile: garbage, KeyFile: good.Key}, `cert_file "` + garbage + `": holds no PEM certificate`},
		{"garbage key", ServerConfig{CertFile: good.Cert, KeyFile: garbage}, `key_file "` + garbage + `": holds no PEM private key`},
		{"key of another cert", ServerConfig{CertFile: good.Cert, KeyFile: other.Key}, `key_file "` + other.Key + `": does not match the certificate of cert_file "` + good.Cert + `"`},
		{"garbage client CA", ServerConfig{CertFile: good.Cert, KeyFile: good.Key, ClientCAFile: garbage}, `client_ca_file "` + garbage + `": holds no PEM certificate`},
		{"missing client CA", ServerConfig{CertFile: good.Cert, KeyFile: good.Key, ClientCAFile: missing}, `client_ca_file "` + missing + `": cannot be read`},
	} {
		_, err := NewServer(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewServer: %v, want %q", tt.name, err, tt.want)
		}
	}
	for _, tt := range []struct {
		name string
		cfg  ClientConfig
		want string
	}{
		{"garbage CA", ClientConfig{ServerName: "x", CAFile: garbage}, `ca_file "` + garbage + `": holds no PEM certificate`},
		{"missing CA", ClientConfig{ServerName: "x", CAFile: missing}, `ca_file "` + missing + `": cannot be read`},
		{"garbage cert", ClientConfig{ServerName: "x", CertFile: garbage, KeyFile: good.Key}, `cert_file "` + garbage + `": holds no PEM certificate`},
	} {
		_, err := NewClient(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewClient: %v, want %q", tt.name, err, tt.want)
		}
	}
}

// echo serves ln: each connection gets back every line it sends.
func echo(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != line+"\n" {
		t.Fatalf("echo of %q: %q, %v", line, got, err)
	}
}

// TestServerRotation: new files serve new connections; established ones go on;
// files that do not load leave the running certificate; mutual TLS follows the
// client CA file.
func TestServerRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	files := ca.Write(t, dir, "server", ca.Leaf(t, "server", 10))
	clientCert := ca.Leaf(t, "client", 20).TLSCert(t)
	s, err := NewServer(ServerConfig{Label: "tls", CertFile: files.Cert, KeyFile: files.Key, ClientCAFile: files.CA, RequireClientCert: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, tls.NewListener(ln, s.Config()))

	dial := func(withCert bool) (*tls.Conn, error) {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
		if withCert {
			cfg.Certificates = []tls.Certificate{clientCert}
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return nil, err
		}
		// TLS 1.3 reports a refused client certificate on the first read.
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "hello\n"); err == nil {
			_, err = bufio.NewReader(c).ReadString('\n')
			if err != nil {
				c.Close()
				return nil, err
			}
		}
		return c, nil
	}
	serial := func(c *tls.Conn) int64 { return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64() }

	old, err := dial(true)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldR := bufio.NewReader(old)
	if got := serial(old); got != 10 {
		t.Fatalf("serial %d, want 10", got)
	}
	if _, err := dial(false); err == nil {
		t.Fatal("a client without a certificate was let in")
	}

	ca.Write(t, dir, "server", ca.Leaf(t, "server", 11))
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("Reload after rotation: %v, %v", changed, err)
	}
	if changed, err := s.Reload(); changed || err != nil {
		t.Fatalf("Reload of unchanged files: %v, %v", changed, err)
	}
	roundTrip(t, old, oldR, "still there")
	c, err := dial(true)
	if err != nil {
		t.Fatal(err)
	}
	if got := serial(c); got != 11 {
		t.Fatalf("after rotation: serial %d, want 11", got)
	}
	c.Close()

	tlstest.WriteFile(t, files.Cert, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"))
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), "cert_file") {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	c, err = dial(true)
	if err != nil {
		t.Fatal(err)
	}
	if got := serial(c); got != 11 {
		t.Fatalf("after a broken file: serial %d, want 11", got)
	}
	c.Close()
	roundTrip(t, old, oldR, "still there after a broken file")
}

func TestWatchPollsAndLogs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	files := ca.Write(t, dir, "server", ca.Leaf(t, "server", 30))
	s, err := NewServer(ServerConfig{Label: "tls", CertFile: files.Cert, KeyFile: files.Key})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	hup := make(chan os.Signal, 1)
	go func() {
		defer close(done)
		Watch(ctx, 10*time.Millisecond, hup, slog.New(slog.NewTextHandler(logs, nil)), s)
	}()
	defer func() { cancel(); <-done }()

	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s; log:\n%s", what, logs)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	ca.Write(t, dir, "server", ca.Leaf(t, "server", 31))
	wait("poll picks up serial 31", func() bool { return s.Current().SerialNumber.Int64() == 31 })
	wait("reload logged", func() bool { return strings.Contains(logs.String(), "TLS certificate reloaded") })

	tlstest.WriteFile(t, files.Key, []byte("garbage"))
	wait("broken key logged", func() bool { return strings.Contains(logs.String(), "holds no PEM private key") })
	time.Sleep(50 * time.Millisecond) // several polls
	if n := strings.Count(logs.String(), "holds no PEM private key"); n != 1 {
		t.Errorf("polling logged the same error %d times, want once; log:\n%s", n, logs)
	}
	hup <- os.Interrupt
	wait("SIGHUP logs it again", func() bool { return strings.Count(logs.String(), "holds no PEM private key") == 2 })
	if got := s.Current().SerialNumber.Int64(); got != 31 {
		t.Errorf("serial %d after a broken key, want 31", got)
	}
}
