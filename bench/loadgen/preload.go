package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"
)

const (
	preloadConns = 4
	preloadBatch = 256
	// preloadBatchTimeout bounds one pipelined batch, not the whole preload.
	preloadBatchTimeout = 30 * time.Second
)

// Preload writes every key the workload can touch: strings of the spec's value
// sizes (with EX TTL for sessions), hashes of HashFields fields, or counters
// set to 0. Run it against the server itself rather than through a cache, so
// that the first reads through a cache are misses.
func Preload(ctx context.Context, addr string, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	values := randomValue(rand.New(rand.NewPCG(1, 2)), s.ValueMax)
	n := uint64(s.Keys)
	per := (n + preloadConns - 1) / preloadConns
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, preloadConns)
	var wg sync.WaitGroup
	for c := uint64(0); c < preloadConns && c*per < n; c++ {
		wg.Go(func() {
			err := preloadRange(ctx, addr, s, values, c*per, min(n, (c+1)*per), c)
			if err != nil {
				cancel()
			}
			errc <- err
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return fmt.Errorf("preload %s: %w", addr, err)
		}
	}
	return ctx.Err()
}

func preloadRange(ctx context.Context, addr string, s Spec, values []byte, from, to, seed uint64) error {
	conn, err := (&net.Dialer{Timeout: dialTimeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	rng := rand.New(rand.NewPCG(seed, 3))
	c := newCommander(s, rng, nil, values)
	rd := newReplyReader(conn)
	var b, key, field []byte
	for i := from; i < to; {
		if err := conn.SetDeadline(time.Now().Add(preloadBatchTimeout)); err != nil {
			return err
		}
		b = b[:0]
		batch := 0
		for ; batch < preloadBatch && i < to; batch, i = batch+1, i+1 {
			key = s.appendKey(key[:0], i)
			switch s.Workload {
			case Incr:
				b = appendArrayHeader(b, 3)
				b = appendBulkString(b, "SET")
				b = appendBulk(b, key)
				b = appendBulkString(b, "0")
			case HGetAll, HGet:
				b = appendArrayHeader(b, 2+2*s.HashFields)
				b = appendBulkString(b, "HSET")
				b = appendBulk(b, key)
				for f := range s.HashFields {
					field = strconv.AppendInt(append(field[:0], 'f'), int64(f), 10)
					b = appendBulk(b, field)
					b = appendBulk(b, c.value())
				}
			default:
				b = c.appendSetKey(b, key, s.Workload == Session)
			}
		}
		if _, err := conn.Write(b); err != nil {
			return err
		}
		for range batch {
			kind, err := rd.next()
			if err != nil {
				return err
			}
			if kind == replyError {
				return fmt.Errorf("server replied %q", rd.errLine)
			}
		}
	}
	return nil
}
