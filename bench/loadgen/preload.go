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
func Preload(ctx context.Context, addr string, s Spec) error { return touchAll(ctx, addr, s, false) }

// Warm reads every key the workload can touch once, with the command the
// workload reads it with (GET, MGET of the one key, HGETALL, or HGET of each
// field), pipelined, so
// that a cache at addr holds them before a measurement of its hits. (A cache
// may keep a key's MGET element apart from its GET reply.)
func Warm(ctx context.Context, addr string, s Spec) error { return touchAll(ctx, addr, s, true) }

// touchAll writes, or reads, every key of s at addr.
func touchAll(ctx context.Context, addr string, s Spec, read bool) error {
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
			err := touchRange(ctx, addr, s, values, c*per, min(n, (c+1)*per), c, read)
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
			if read {
				return fmt.Errorf("warm %s: %w", addr, err)
			}
			return fmt.Errorf("preload %s: %w", addr, err)
		}
	}
	return ctx.Err()
}

// PreloadKey names what Preload writes for s: specs with the same key write
// the same keys, of the same types and value sizes, so a server preloaded for
// one is for the other.
func PreloadKey(s Spec) string {
	ttl := 0
	if s.Workload == Session {
		ttl = s.TTL
	}
	fields := 0
	if s.Workload == HGetAll || s.Workload == HGet {
		fields = s.HashFields
	}
	return fmt.Sprintf("%q for N < %d, values %d-%d B, ttl %d, fields %d", s.Prefix+s.tag()+"N", s.Keys, s.ValueMin, s.ValueMax, ttl, fields)
}

func touchRange(ctx context.Context, addr string, s Spec, values []byte, from, to, seed uint64, read bool) error {
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
		replies := 0 // commands in the batch
		for batch := 0; batch < preloadBatch && i < to; batch, i = batch+1, i+1 {
			key = s.appendKey(key[:0], i)
			replies++
			switch {
			case read:
				switch s.Workload {
				case HGet:
					replies += s.HashFields - 1 // a HGET per field
					for f := range s.HashFields {
						field = strconv.AppendInt(append(field[:0], 'f'), int64(f), 10)
						b = appendArrayHeader(b, 3)
						b = appendBulkString(b, "HGET")
						b = appendBulk(b, key)
						b = appendBulk(b, field)
					}
				case HGetAll:
					b = appendArrayHeader(b, 2)
					b = appendBulkString(b, "HGETALL")
					b = appendBulk(b, key)
				case MGet:
					b = appendArrayHeader(b, 2)
					b = appendBulkString(b, "MGET")
					b = appendBulk(b, key)
				default:
					b = appendArrayHeader(b, 2)
					b = appendBulkString(b, "GET")
					b = appendBulk(b, key)
				}
			case s.Workload == Incr:
				b = appendArrayHeader(b, 3)
				b = appendBulkString(b, "SET")
				b = appendBulk(b, key)
				b = appendBulkString(b, "0")
			case s.Workload == HGetAll || s.Workload == HGet:
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
		for range replies {
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
