package loadgen

import (
	"math/rand/v2"
	"strconv"
)

// commander appends one connection's commands. It owns its scratch buffers and
// is not safe for concurrent use.
type commander struct {
	spec   Spec
	keys   *keyPicker
	rng    *rand.Rand
	values []byte // shared, read-only: a value of size n is values[:n]
	key    []byte // scratch for one key name
	field  []byte // scratch for one hash field name
	ttl    []byte // the session TTL, formatted once
}

func newCommander(s Spec, rng *rand.Rand, keys *keyPicker, values []byte) *commander {
	c := &commander{spec: s, keys: keys, rng: rng, values: values, key: make([]byte, 0, 64)}
	c.ttl = strconv.AppendInt(nil, int64(s.TTL), 10)
	return c
}

// appendCommand appends the workload's next command in RESP.
func (c *commander) appendCommand(b []byte) []byte {
	switch c.spec.Workload {
	case Get, HGetAll:
		name := "GET"
		if c.spec.Workload == HGetAll {
			name = "HGETALL"
		}
		b = appendArrayHeader(b, 2)
		b = appendBulkString(b, name)
		return c.appendKey(b)
	case HGet:
		b = appendArrayHeader(b, 3)
		b = appendBulkString(b, "HGET")
		b = c.appendKey(b)
		c.field = strconv.AppendInt(append(c.field[:0], 'f'), int64(c.rng.IntN(c.spec.HashFields)), 10)
		return appendBulk(b, c.field)
	case Set:
		return c.appendSet(b, false)
	case Incr:
		b = appendArrayHeader(b, 2)
		b = appendBulkString(b, "INCR")
		return c.appendKey(b)
	case MGet:
		b = appendArrayHeader(b, 1+c.spec.MGetKeys)
		b = appendBulkString(b, "MGET")
		for range c.spec.MGetKeys {
			b = c.appendKey(b)
		}
		return b
	default: // Mixed, Session
		if c.rng.Float64() < c.spec.ReadRatio {
			b = appendArrayHeader(b, 2)
			b = appendBulkString(b, "GET")
			return c.appendKey(b)
		}
		return c.appendSet(b, c.spec.Workload == Session)
	}
}

func (c *commander) appendSet(b []byte, ex bool) []byte {
	c.key = c.spec.appendKey(c.key[:0], c.keys.pick())
	return c.appendSetKey(b, c.key, ex)
}

func (c *commander) appendSetKey(b, key []byte, ex bool) []byte {
	if ex {
		b = appendArrayHeader(b, 5)
	} else {
		b = appendArrayHeader(b, 3)
	}
	b = appendBulkString(b, "SET")
	b = appendBulk(b, key)
	b = appendBulk(b, c.value())
	if ex {
		b = appendBulkString(b, "EX")
		b = appendBulk(b, c.ttl)
	}
	return b
}

func (c *commander) appendKey(b []byte) []byte {
	c.key = c.spec.appendKey(c.key[:0], c.keys.pick())
	return appendBulk(b, c.key)
}

func (c *commander) value() []byte {
	n := c.spec.ValueMin
	if c.spec.ValueMax > n {
		n += c.rng.IntN(c.spec.ValueMax - n + 1)
	}
	return c.values[:n]
}

func appendArrayHeader(b []byte, n int) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}

func appendBulk(b, p []byte) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(p)), 10)
	b = append(b, '\r', '\n')
	b = append(b, p...)
	return append(b, '\r', '\n')
}

func appendBulkString(b []byte, s string) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, '\r', '\n')
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// randomValue returns n printable bytes, so that values read back in redis-cli
// are legible.
func randomValue(rng *rand.Rand, n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	v := make([]byte, n)
	for i := range v {
		v[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return v
}
