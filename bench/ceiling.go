package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"sync"

	"github.com/tidwall/redcon"
)

// ceilingName is the target the suite adds to the L1-hit scenarios: the
// smallest server on redcon, the proxy's RESP library, answering GET from a
// map. No proxy built on it answers a hit faster on the same machine, so it
// shows how much of a gap to direct Redis is the proxy's own work and how much
// is the cost of a Go server here.
const ceilingName = "go-ceiling"

// ceilingCmd serves GET, SET (its options ignored) and PING from memory on
// --listen until ctx ends.
func ceilingCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench ceiling", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("ceiling: %w", err)
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !isLoopback(host) {
		ln.Close()
		return fmt.Errorf("ceiling: %s is not a loopback address", host)
	}
	st := newCeilingStore()
	srv := redcon.NewServerNetwork("tcp", ln.Addr().String(), st.handle, nil, nil)
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err = srv.Serve(ln)
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

const ceilingShards = 64

// ceilingStore is a map split in shards, so that connections reading on
// different cores seldom share a lock.
type ceilingStore struct {
	seed   maphash.Seed
	shards [ceilingShards]struct {
		mu sync.RWMutex
		m  map[string][]byte // key to its whole bulk reply
	}
}

func newCeilingStore() *ceilingStore {
	s := &ceilingStore{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = make(map[string][]byte)
	}
	return s
}

func (s *ceilingStore) handle(conn redcon.Conn, cmd redcon.Command) {
	s.command(conn, cmd)
	for _, c := range conn.ReadPipeline() {
		s.command(conn, c)
	}
}

// The names it knows, compared without allocating: a ceiling that spent an
// allocation per command would understate what a Go server reaches.
var (
	nameGet  = []byte("get")
	nameSet  = []byte("set")
	namePing = []byte("ping")
)

func (s *ceilingStore) command(conn redcon.Conn, cmd redcon.Command) {
	name := cmd.Args[0]
	switch {
	case bytes.EqualFold(name, nameGet) && len(cmd.Args) == 2:
		sh := &s.shards[maphash.Bytes(s.seed, cmd.Args[1])%ceilingShards]
		sh.mu.RLock()
		reply, ok := sh.m[string(cmd.Args[1])]
		sh.mu.RUnlock()
		if !ok {
			conn.WriteNull()
			return
		}
		conn.WriteRaw(reply)
	case bytes.EqualFold(name, nameSet) && len(cmd.Args) >= 3:
		sh := &s.shards[maphash.Bytes(s.seed, cmd.Args[1])%ceilingShards]
		reply := redcon.AppendBulk(nil, cmd.Args[2])
		sh.mu.Lock()
		sh.m[string(cmd.Args[1])] = reply
		sh.mu.Unlock()
		conn.WriteString("OK")
	case bytes.EqualFold(name, namePing):
		conn.WriteString("PONG")
	default:
		conn.WriteError("ERR the ceiling server knows only GET, SET and PING")
	}
}
