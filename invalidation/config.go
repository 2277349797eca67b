package invalidation

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// neededClasses are the event classes that report writes: every class of the
// "A" alias that Redis 6 and later understand. K selects the keyspace channels
// we listen to. Classes not listed here (E, m, n, d) are kept as found.
const neededClasses = "g$lshzxet"

// disabledError means notifications cannot be relied on until an operator
// acts; the Run loop re-checks at recheckInterval rather than backing off.
type disabledError struct{ reason string }

func (e *disabledError) Error() string { return e.reason }

// checkConfig makes sure notify-keyspace-events publishes every write on the
// keyspace channels, setting it when allowed. It is run before each
// subscription because a runtime CONFIG SET does not survive an upstream
// restart or failover.
func (s *Subscriber) checkConfig(ctx context.Context, ctl *redis.Client) error {
	res, err := ctl.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		if refused(err) {
			return &disabledError{fmt.Sprintf(
				"CONFIG GET notify-keyspace-events refused (%v); enable keyspace notifications (%q) on the server", err, "KA")}
		}
		return fmt.Errorf("config get notify-keyspace-events: %w", err)
	}
	cur, ok := res["notify-keyspace-events"]
	if !ok {
		return &disabledError{"server does not report notify-keyspace-events; keyspace notifications unavailable"}
	}
	want, missing := eventFlags(cur)
	if !missing {
		return nil
	}
	if !s.allowConfigSet {
		return &disabledError{fmt.Sprintf(
			"notify-keyspace-events is %q, keyspace notifications of every write class are off; "+
				"set it to %q on the server (or allow the proxy to CONFIG SET it)", cur, want)}
	}
	if err := ctl.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		if refused(err) {
			return &disabledError{fmt.Sprintf(
				"notify-keyspace-events is %q and CONFIG SET to %q was refused (%v); set it on the server", cur, want, err)}
		}
		return fmt.Errorf("config set notify-keyspace-events %q: %w", want, err)
	}
	s.log.Warn("enabled keyspace notifications on the upstream with CONFIG SET; "+
		"make it permanent in the server's configuration", "was", cur, "now", want)
	return nil
}

// eventFlags reports whether flags (a notify-keyspace-events value) lacks K
// or any needed class, and the value to set: flags plus what is missing, so
// that classes the operator chose stay on. Missing classes are added as "A",
// which also covers classes of newer servers (d, module key types).
func eventFlags(flags string) (want string, missing bool) {
	hasAll := strings.ContainsRune(flags, 'A')
	classesOK := hasAll
	if !hasAll {
		classesOK = true
		for _, c := range neededClasses {
			if !strings.ContainsRune(flags, c) {
				classesOK = false
				break
			}
		}
	}
	want = flags
	if !strings.ContainsRune(flags, 'K') {
		want += "K"
	}
	if !classesOK {
		want += "A"
	}
	return want, want != flags
}

// refused tells a server that answered "no" (unknown or renamed CONFIG, ACL,
// wrong password) from one that is only busy starting up.
func refused(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	return !redis.IsLoadingError(err) && !redis.HasErrorPrefix(err, "BUSY")
}
