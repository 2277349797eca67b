package resp

import (
	"errors"
	"fmt"
	"math"
)

// Limits bound what one client may send. A zero field means its default.
type Limits struct {
	// MaxBulkLen is the longest argument in bytes, like Redis's
	// proto-max-bulk-len: a longer one is refused with "Protocol error: invalid
	// bulk length". Default 512 MiB; from 1 MiB up to MaxQueryBuffer.
	MaxBulkLen int64
	// MaxQueryBuffer bounds the bytes of one command, like Redis's
	// client-query-buffer-limit: a command that cannot fit is refused and the
	// connection closed without a reply, as Redis does. Default 1 GiB; from
	// 1 MiB up to 1 TiB.
	MaxQueryBuffer int64
	// MaxArgs is the most arguments one command may have; more are refused
	// with "Protocol error: invalid multibulk length". Redis allows up to
	// 2^31-1, but every argument costs the proxy's parser about 40 bytes on top
	// of its own, so the default is 1 Mi (2^20); from 1024 up to 2^31-1.
	MaxArgs int64
}

// Defaults of Limits.
const (
	defaultMaxBulkLen     = 512 << 20
	defaultMaxQueryBuffer = 1 << 30
	defaultMaxArgs        = 1 << 20
)

// DefaultLimits returns the limits a Redis 7.0 server has out of the box, plus
// the proxy's own MaxArgs.
func DefaultLimits() Limits {
	return Limits{
		MaxBulkLen:     defaultMaxBulkLen,
		MaxQueryBuffer: defaultMaxQueryBuffer,
		MaxArgs:        defaultMaxArgs,
	}
}

// withDefaults fills zero fields with their defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBulkLen == 0 {
		l.MaxBulkLen = d.MaxBulkLen
	}
	if l.MaxQueryBuffer == 0 {
		l.MaxQueryBuffer = d.MaxQueryBuffer
	}
	if l.MaxArgs == 0 {
		l.MaxArgs = d.MaxArgs
	}
	return l
}

// Validate reports the first field out of range, after zero fields have taken
// their defaults. Call it when loading configuration: Guard panics on limits
// that fail it.
func (l Limits) Validate() error {
	l = l.withDefaults()
	const mib = 1 << 20
	switch {
	case l.MaxQueryBuffer < mib || l.MaxQueryBuffer > 1<<40:
		return fmt.Errorf("resp: MaxQueryBuffer %d is out of range [1 MiB, 1 TiB]", l.MaxQueryBuffer)
	case l.MaxBulkLen < mib || l.MaxBulkLen > l.MaxQueryBuffer:
		return fmt.Errorf("resp: MaxBulkLen %d is out of range [1 MiB, MaxQueryBuffer=%d]: a longer argument could never fit in a command",
			l.MaxBulkLen, l.MaxQueryBuffer)
	case l.MaxArgs < 1024 || l.MaxArgs > math.MaxInt32:
		return fmt.Errorf("resp: MaxArgs %d is out of range [1024, %d]", l.MaxArgs, math.MaxInt32)
	}
	return nil
}

// ErrRefused is wrapped by the error a guarded connection's Read returns once
// it has refused the client's input. The connection must then be closed; the
// error's text says why, for the log.
var ErrRefused = errors.New("resp: client input refused")

// ErrQueryBuffer is wrapped, beside ErrRefused, by the error of a connection
// refused because its input outgrew MaxQueryBuffer, as Redis closes a client
// over its client-query-buffer-limit.
var ErrQueryBuffer = errors.New("resp: client query buffer limit")
