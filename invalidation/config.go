package invalidation

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// neededClasses are the event classes that report writes: every class of the
// "A" alias that Redis 6 and later understand. K selects the keyspace channels
// we listen to. Classes not listed here (E, m, n, d) are kept as found.
const neededClasses = "g$lshzxet"

// checkConfig makes sure notify-keyspace-events publishes every write on the
// keyspace channels, setting it when allowed. It is run before each
// subscription because a runtime CONFIG SET does not survive an upstream
// restart or failover. It returns verified false, with the reason, when the
// server will not say (CONFIG refused, as managed Redis often does): then only
// a canary's notification can show that the stream works. A value that lacks
// classes and cannot be fixed is a disabledError.
func (s *Subscriber) checkConfig(ctx context.Context, ctl *redis.Client) (verified bool, why string, err error) {
	res, err := ctl.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		if refused(err) {
			return false, fmt.Sprintf("CONFIG GET notify-keyspace-events refused (%v)", err), nil
		}
		return false, "", fmt.Errorf("config get notify-keyspace-events: %w", err)
	}
	cur, ok := res["notify-keyspace-events"]
	if !ok {
		return false, "the server does not report notify-keyspace-events", nil
	}
	want, missing := eventFlags(cur)
	if !missing {
		return true, "", nil
	}
	if !s.allowConfigSet {
		return false, "", &disabledError{fmt.Sprintf(
			"notify-keyspace-events is %q, keyspace notifications of every write class are off; "+
				"set it to %q on the server (or allow the proxy to CONFIG SET it)", cur, want)}
	}
	if err := ctl.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		if refused(err) {
			return false, "", &disabledError{fmt.Sprintf(
				"notify-keyspace-events is %q and CONFIG SET to %q was refused (%v); set it on the server", cur, want, err)}
		}
		return false, "", fmt.Errorf("config set notify-keyspace-events %q: %w", want, err)
	}
	s.log.Warn("enabled keyspace notifications on the upstream with CONFIG SET; "+
		"make it permanent in the server's configuration", "was", cur, "now", want)
	return true, "", nil
}

// eventFlags reports whether flags (a notify-keyspace-events value) lacks K
// or any needed class, and the value to set: flags plus what is missing, so
// that classes the operator chose stay on. Missing classes are added as "A",
// which also covers classes of newer servers (d, module key types).
// KeyspaceEventsSufficient reports whether a notify-keyspace-events value
// publishes every write on the keyspace channels, as keyspace mode needs.
func KeyspaceEventsSufficient(flags string) bool {
	_, missing := eventFlags(flags)
	return !missing
}

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
