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
// smallest server on redcon, the RESP library the proxy's replies are built
// with, answering GET, HGET and MGET from a map. No proxy built on it answers a hit faster on the same machine, so it
// shows how much of a gap to direct Redis is the proxy's own work and how much
// is the cost of a Go server here.
const ceilingName = "go-ceiling"

// ceilingCmd serves GET, MGET, SET (its options ignored), HGET, HSET and PING from memory on
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
		m  map[string][]byte            // key to its whole bulk reply
		h  map[string]map[string][]byte // hash key to field to its whole bulk reply
	}
}

func newCeilingStore() *ceilingStore {
	s := &ceilingStore{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = make(map[string][]byte)
		s.shards[i].h = make(map[string]map[string][]byte)
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
	nameMGet = []byte("mget")
	nameSet  = []byte("set")
	nameHGet = []byte("hget")
	nameHSet = []byte("hset")
	namePing = []byte("ping")
)

func (s *ceilingStore) command(conn redcon.Conn, cmd redcon.Command) {
	name := cmd.Args[0]
	switch {
	case bytes.EqualFold(name, nameGet) && len(cmd.Args) == 2:
		s.get(conn, cmd.Args[1])
	case bytes.EqualFold(name, nameMGet) && len(cmd.Args) >= 2:
		conn.WriteArray(len(cmd.Args) - 1)
		for _, k := range cmd.Args[1:] {
			s.get(conn, k)
		}
	case bytes.EqualFold(name, nameHGet) && len(cmd.Args) == 3:
		sh := &s.shards[maphash.Bytes(s.seed, cmd.Args[1])%ceilingShards]
		sh.mu.RLock()
		reply, ok := sh.h[string(cmd.Args[1])][string(cmd.Args[2])]
		sh.mu.RUnlock()
		if !ok {
			conn.WriteNull()
			return
		}
		conn.WriteRaw(reply)
	case bytes.EqualFold(name, nameHSet) && len(cmd.Args) >= 4 && len(cmd.Args)%2 == 0:
		sh := &s.shards[maphash.Bytes(s.seed, cmd.Args[1])%ceilingShards]
		sh.mu.Lock()
		fields := sh.h[string(cmd.Args[1])]
		if fields == nil {
			fields = make(map[string][]byte)
			sh.h[string(cmd.Args[1])] = fields
		}
		for i := 2; i < len(cmd.Args); i += 2 {
			fields[string(cmd.Args[i])] = redcon.AppendBulk(nil, cmd.Args[i+1])
		}
		sh.mu.Unlock()
		conn.WriteInt(len(cmd.Args)/2 - 1)
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
		conn.WriteError("ERR the ceiling server knows only GET, MGET, SET, HGET, HSET and PING")
	}
}

func (s *ceilingStore) get(conn redcon.Conn, key []byte) {
	sh := &s.shards[maphash.Bytes(s.seed, key)%ceilingShards]
	sh.mu.RLock()
	reply, ok := sh.m[string(key)]
	sh.mu.RUnlock()
	if !ok {
		conn.WriteNull()
		return
	}
	conn.WriteRaw(reply)
}
