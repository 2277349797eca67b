package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// redisLogger carries go-redis's own log lines (a dial that failed after its
// retries, a connection closed with an error) to the proxy's logger at warn
// level, so that every line on stderr has the configured format. Without it
// go-redis prints plain lines of its own ("redis: 2006/01/02 ... pool.go:770:
// ..."), which break log.format: json.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	l.log.WarnContext(ctx, strings.TrimPrefix(msg, "redis: "))
}
