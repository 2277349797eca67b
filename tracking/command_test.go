package tracking

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// words splits a command line of the argument tables on spaces; a word of two
// single quotes stands for an empty word, and $id for the id of the client
// itself (the one REDIRECT target that exists in both the table and a real
// Redis).
func words(line string) []string {
	w := strings.Fields(line)
	for i := range w {
		if w[i] == "''" {
			w[i] = ""
		}
	}
	return w
}

type argCase struct {
	setup []string // CLIENT TRACKING lines run first; each must succeed
	args  []string // after TRACKING (or CACHING)
	want  string   // the error, or "" for OK
	// notRedis marks a case where Redis 7.0 misbehaves and we do not copy it.
	notRedis bool
}

func tc(setup []string, line, want string) argCase {
	return argCase{setup: setup, args: words(line), want: want}
}

func on(lines ...string) []string { return lines }

const (
	syntax      = "ERR syntax error"
	notInt      = "ERR value is not an integer or out of range"
	noRedir     = "ERR The client ID you want redirect to does not exist"
	oneRedir    = "ERR A client can only redirect to a single other client"
	prefixBcast = "ERR PREFIX option requires BCAST mode to be enabled"
	switchBcast = "ERR You can't switch BCAST mode on/off before disabling tracking for this client, " +
		"and then re-enabling it with a different mode."
	optBcast    = "ERR OPTIN and OPTOUT are not compatible with BCAST"
	optBoth     = "ERR You can't specify both OPTIN mode and OPTOUT mode"
	switchOptin = "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, " +
		"and then re-enabling it with a different mode."
	cachingOff = "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"
	cachingYes = "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
	cachingNo  = "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."
)

func overlapOther(p, q string) string {
	return "ERR Prefix '" + p + "' overlaps with another provided prefix '" + q + "'. Prefixes for a single client must not overlap."
}

func overlapExisting(p, q string) string {
	return "ERR Prefix '" + p + "' overlaps with an existing prefix '" + q + "'. Prefixes for a single client must not overlap."
}

var trackingCases = []argCase{
	tc(nil, "", "ERR wrong number of arguments for 'client|tracking' command"),
	tc(nil, "foo", syntax),
	tc(nil, "maybe", syntax),
	tc(nil, "maybe FOO", syntax),
	tc(nil, "maybe REDIRECT 999999999", noRedir),
	tc(nil, "on FOO", syntax),
	tc(nil, "on bcaſt", syntax),
	tc(nil, "on REDIRECT", syntax),
	tc(nil, "on PREFIX", syntax),
	tc(nil, "on BCAST PREFIX", syntax),
	tc(nil, "on REDIRECT 0", noRedir),
	tc(nil, "on REDIRECT -1", noRedir),
	tc(nil, "on REDIRECT 999999999", noRedir),
	tc(nil, "on REDIRECT abc", notInt),
	tc(nil, "on REDIRECT 01", notInt),
	tc(nil, "on REDIRECT +1", notInt),
	tc(nil, "on REDIRECT -0", notInt),
	tc(nil, "on REDIRECT ''", notInt),
	tc(nil, "on REDIRECT 99999999999999999999", notInt),
	tc(nil, "on REDIRECT -9223372036854775808", noRedir),
	tc(nil, "on REDIRECT 9223372036854775808", notInt),
	tc(nil, "on FOO REDIRECT 999999999", syntax),
	tc(nil, "on REDIRECT 999999999 FOO", noRedir),
	tc(nil, "on REDIRECT $id REDIRECT $id", oneRedir),
	tc(nil, "on REDIRECT $id REDIRECT abc", oneRedir),
	tc(nil, "on PREFIX a", prefixBcast),
	tc(nil, "on PREFIX a OPTIN OPTOUT", prefixBcast),
	tc(nil, "on BCAST OPTIN", optBcast),
	tc(nil, "on BCAST OPTOUT", optBcast),
	tc(nil, "on BCAST OPTIN OPTOUT", optBcast),
	tc(nil, "on OPTIN OPTOUT", optBoth),
	tc(nil, "on BCAST PREFIX a PREFIX ab", overlapOther("a", "ab")),
	tc(nil, "on BCAST PREFIX ab PREFIX a", overlapOther("ab", "a")),
	tc(nil, "on BCAST PREFIX a PREFIX a", overlapOther("a", "a")),
	tc(nil, "on BCAST PREFIX '' PREFIX b", overlapOther("", "b")),
	{args: []string{"on", "BCAST", "PREFIX", "a\r\nb", "PREFIX", "a"}, want: overlapOther("a  b", "a")},
	{args: []string{"on", "BCAST", "PREFIX", "a\x00b", "PREFIX", "a"}, want: overlapOther("a", "a")},
	// Redis replies this error, then enables tracking and replies OK as well.
	{args: words("on BCAST PREFIX a PREFIX b PREFIX bc"), want: overlapOther("b", "bc"), notRedis: true},
	tc(on("on BCAST PREFIX a"), "on BCAST PREFIX a", overlapExisting("a", "a")),
	tc(on("on BCAST PREFIX a"), "on BCAST PREFIX ab", overlapExisting("ab", "a")),
	tc(on("on BCAST PREFIX ab"), "on BCAST PREFIX c PREFIX a", overlapExisting("a", "ab")),
	tc(on("on BCAST PREFIX a"), "on BCAST PREFIX b PREFIX ba", overlapOther("b", "ba")),
	tc(on("on BCAST PREFIX a"), "on BCAST PREFIX b PREFIX c", ""),
	tc(on("on BCAST"), "on BCAST PREFIX d", overlapExisting("d", "")),
	tc(on("on BCAST PREFIX b"), "on BCAST", ""),
	tc(on("on BCAST"), "on BCAST", ""),
	tc(on("on BCAST"), "on", switchBcast),
	tc(on("on BCAST"), "on OPTIN", switchBcast),
	tc(on("on"), "on BCAST", switchBcast),
	tc(on("on"), "on PREFIX a", prefixBcast),
	tc(on("on OPTIN"), "on OPTOUT", switchOptin),
	tc(on("on OPTOUT"), "on OPTIN", switchOptin),
	tc(on("on OPTIN"), "on OPTIN OPTOUT", optBoth),
	tc(on("on OPTIN"), "on", ""),
	tc(on("on OPTIN", "off"), "on OPTOUT", ""),
	tc(on("on OPTIN NOLOOP"), "on OPTIN", ""),
	tc(on("on REDIRECT $id"), "on", ""),
	tc(on("on BCAST PREFIX a"), "off", ""),
	tc(nil, "off REDIRECT 999999999", noRedir),
	tc(nil, "off PREFIX x", ""),
	tc(nil, "OFF BCAST OPTIN OPTOUT", ""),
	tc(nil, "off", ""),
	tc(nil, "ON bcast noloop prefix x prefix y", ""),
	tc(nil, "on REDIRECT $id NOLOOP OPTIN", ""),
	tc(nil, "on optout", ""),
}

var cachingCases = []argCase{
	tc(nil, "", "ERR wrong number of arguments for 'client|caching' command"),
	tc(nil, "yes x", "ERR wrong number of arguments for 'client|caching' command"),
	tc(nil, "yes", cachingOff),
	tc(nil, "maybe", cachingOff),
	tc(on("on"), "yes", cachingYes),
	tc(on("on"), "no", cachingNo),
	tc(on("on"), "maybe", syntax),
	tc(on("on BCAST"), "yes", cachingYes),
	tc(on("on OPTIN"), "yes", ""),
	tc(on("on OPTIN"), "YES", ""),
	tc(on("on OPTIN"), "no", cachingNo),
	tc(on("on OPTOUT"), "no", ""),
	tc(on("on OPTOUT"), "yes", cachingYes),
	tc(on("on OPTOUT"), "maybe", syntax),
	tc(on("on OPTIN", "off"), "yes", cachingOff),
}

const self = 1 // the client id of each argument case in a table

func subst(args []string, id int64) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(strings.ReplaceAll(a, "$id", fmt.Sprint(id)))
	}
	return out
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// runCase runs c against a fresh table and returns the reply and the client's
// state after it.
func runCase(t *testing.T, c argCase, caching bool) (string, Info) {
	t.Helper()
	tbl := newTable(t, 0)
	exists := func(id int64) bool { return id == self }
	for _, s := range c.setup {
		if err := tbl.Tracking(self, subst(words(s), self), exists); err != nil {
			t.Fatalf("setup %q: %v", s, err)
		}
	}
	args := subst(c.args, self)
	if caching {
		return errText(tbl.Caching(self, args)), tbl.Info(self)
	}
	return errText(tbl.Tracking(self, args, exists)), tbl.Info(self)
}

func TestTrackingArgs(t *testing.T) {
	for _, c := range trackingCases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			if got, _ := runCase(t, c, false); got != c.want {
				t.Fatalf("setup %q: got %q, want %q", c.setup, got, c.want)
			}
		})
	}
}

func TestCachingArgs(t *testing.T) {
	for _, c := range cachingCases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			if got, _ := runCase(t, c, true); got != c.want {
				t.Fatalf("setup %q: got %q, want %q", c.setup, got, c.want)
			}
		})
	}
}

// TestArgsMatchRedis replays both tables on a real Redis 7.0, each case on a
// new connection, and compares the reply and then CLIENT TRACKINGINFO (a
// CLIENT command, so it keeps the CACHING flag as the table does).
func TestArgsMatchRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	for _, caching := range []bool{false, true} {
		sub, cases := "TRACKING", trackingCases
		if caching {
			sub, cases = "CACHING", cachingCases
		}
		for _, c := range cases {
			if c.notRedis {
				continue
			}
			name := sub + " " + strings.Join(c.args, " ")
			t.Run(name, func(t *testing.T) {
				// A client of its own: a pooled connection would carry the
				// previous case's tracking state.
				conn := redis.NewClient(&redis.Options{Addr: srv.Addr(), Protocol: 2, PoolSize: 1})
				defer conn.Close()
				id, err := conn.ClientID(ctx).Result()
				if err != nil {
					t.Fatal(err)
				}
				do := func(sub string, args [][]byte) string {
					cmd := []any{"CLIENT", sub}
					for _, a := range args {
						cmd = append(cmd, string(a))
					}
					err := conn.Do(ctx, cmd...).Err()
					if err == nil {
						return ""
					}
					return err.Error()
				}
				for _, s := range c.setup {
					if err := do("TRACKING", subst(words(s), id)); err != "" {
						t.Fatalf("setup %q: %s", s, err)
					}
				}
				if got := do(sub, subst(c.args, id)); got != c.want {
					t.Fatalf("Redis replies %q, the table %q", got, c.want)
				}
				_, info := runCase(t, c, caching)
				want := redisTrackingInfo(t, conn)
				if info.Redirect == self {
					info.Redirect = id
				}
				got := fmt.Sprint(info.Flags(), info.Redirect, info.Prefixes)
				if got != want {
					t.Fatalf("TRACKINGINFO: Redis %s, the table %s", want, got)
				}
			})
		}
	}
}

func redisTrackingInfo(t *testing.T, conn *redis.Client) string {
	t.Helper()
	v, err := conn.Do(context.Background(), "CLIENT", "TRACKINGINFO").Slice()
	if err != nil || len(v) != 6 {
		t.Fatalf("CLIENT TRACKINGINFO: %v %v", v, err)
	}
	var flags, prefixes []string
	for _, f := range v[1].([]any) {
		flags = append(flags, f.(string))
	}
	for _, p := range v[5].([]any) {
		prefixes = append(prefixes, p.(string))
	}
	slices.Sort(prefixes)
	return fmt.Sprint(flags, v[3], prefixes)
}

func TestParseInt(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1": 1, "-1": -1, "42": 42,
		"9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63,
	} {
		if got, ok := parseInt([]byte(in)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "-", "+1", "01", "-0", " 1", "1 ", "1a", "9223372036854775808",
		"-9223372036854775809", "18446744073709551616", "99999999999999999999"} {
		if got, ok := parseInt([]byte(in)); ok {
			t.Errorf("parseInt(%q) = %d, want an error", in, got)
		}
	}
}
