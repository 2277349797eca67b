package proxy

import (
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// failingListener fails its first accepts as a process out of file
// descriptors does.
type failingListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestServeRidesOutFailedAccepts: accepts that fail (EMFILE) pause the
// listener, they do not end it.
func TestServeRidesOutFailedAccepts(t *testing.T) {
	t.Parallel()
	e := startEnv(t, envOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: ln}
	fl.fails.Store(3)
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(fl) }()
	c := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(bg).Err(); err != nil {
		t.Fatalf("PING after failed accepts: %v", err)
	}
	fl.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
}
