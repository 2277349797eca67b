package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// Not parallel: the limit is the process's.
func TestLimitMemory(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	debug.SetMemoryLimit(math.MaxInt64)
	limit, fromEnv := limitMemory(256 << 20)
	if want := int64(256<<20 + 256<<20/5 + 48<<20); limit != want || fromEnv {
		t.Fatalf("limitMemory(256MiB) = %d, %v; want %d, false", limit, fromEnv, want)
	}
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Fatalf("runtime limit %d after limitMemory, want %d", got, limit)
	}

	// An operator's GOMEMLIMIT (which the runtime read at start) wins.
	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetMemoryLimit(1 << 30)
	if limit, fromEnv := limitMemory(256 << 20); limit != 1<<30 || !fromEnv {
		t.Fatalf("with GOMEMLIMIT set: limitMemory = %d, %v; want %d, true", limit, fromEnv, 1<<30)
	}
}
