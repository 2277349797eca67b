package main

import (
	"os"
	"runtime/debug"
)

// limitMemory sets the Go runtime's soft memory limit from the L1's budget,
// unless GOMEMLIMIT already set one, and returns the limit in force.
//
// Without a limit the collector lets the heap grow to twice what is live, so a
// full L1 whose entries are being replaced (every fill and eviction leaves the
// old entry as garbage) would hold about twice its budget. The limit is the
// budget, a fifth more for garbage not yet collected, and 48MiB for the rest
// of the process (connection buffers, the runtime). It is soft: a proxy with
// more live memory than that (many clients with large commands) keeps running,
// with the collector working harder, up to the runtime's cap on its share of
// CPU.
//
// Only main calls it: the limit belongs to the process, and tests run several
// proxies in one.
func limitMemory(budget int64) (limit int64, fromEnv bool) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1), true
	}
	limit = budget + budget/5 + 48<<20
	debug.SetMemoryLimit(limit)
	return limit, false
}
