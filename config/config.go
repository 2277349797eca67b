// Package config owns the proxy's configuration file: its YAML format, its
// defaults and its validation. Parsing is strict (an unknown or misspelt field is
// an error) and every error names the file, the line when there is one, the
// field path (policies[1].ttl) and what a correct value looks like.
//
// It never starts anything: no listeners, no connections, no logging. The caller
// turns a validated Config into running parts.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"

	"github.com/cacheproxy/cacheproxy/acl"
	"github.com/cacheproxy/cacheproxy/sentinel"
	"github.com/cacheproxy/cacheproxy/upstream/cluster"

	"github.com/cacheproxy/cacheproxy/policy"
)

// Config is the whole file. Fields left out of the file keep Default's values; a
// key written with no value (listen:) also keeps its default.
type Config struct {
	Listen string `yaml:"listen"` // client address, host:port; port 0 picks a free one; "": TLS only
	// Upstream is redis://[user:pass@]host:port[/db], as go-redis's ParseURL
	// reads it, rediss:// for TLS, redis-sentinel:// (see sentinel.ParseURL),
	// or redis-cluster:// (see cluster.ParseURL); in the file, also a list of
	// a cluster's seed nodes (host:port each).
	Upstream UpstreamURL `yaml:"upstream"`
	Metrics  string      `yaml:"metrics"` // Prometheus address, host:port; "" serves no metrics
	L1       L1          `yaml:"l1"`
	// PolicyList replaces the default list when given. Keys that match no prefix
	// and find no "" entry are not cached. Policies compiles it.
	PolicyList    []Policy     `yaml:"policies"`
	Limits        Limits       `yaml:"limits"`
	Auth          Auth         `yaml:"auth"`
	UpstreamConns int          `yaml:"upstream_conns"` // multiplexed upstream connections per db, >= 1
	Invalidation  Invalidation `yaml:"invalidation"`
	Log           Log          `yaml:"log"`
	// ShutdownGrace is how long a stopping proxy lets clients' commands in
	// progress finish before it closes their connections anyway.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// ConfigPoll is how often the file is checked for changes, which are
	// reloaded as SIGHUP would; 0 reloads on SIGHUP only.
	ConfigPoll time.Duration `yaml:"config_poll"`
	// TLS is the TLS port for clients; UpstreamTLS, how to reach a rediss://
	// upstream. See tls.go.
	TLS         TLS         `yaml:"tls"`
	UpstreamTLS UpstreamTLS `yaml:"upstream_tls"`
	// UpstreamTimeout bounds how long a command on a shared upstream
	// connection waits for its reply: past it the connection is closed and
	// every command on it fails. Blocking commands, scripts and transactions
	// are exempt. 0: no bound.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// UpstreamConnectTimeout bounds connecting to the upstream and readying
	// the connection (AUTH, HELLO, SELECT).
	UpstreamConnectTimeout time.Duration `yaml:"upstream_connect_timeout"`
}

// L1 sizes the in-process cache.
type L1 struct {
	MaxMemory ByteSize `yaml:"max_memory"` // whole budget: keys plus replies; >= 1MiB
	// Pools are carved out of MaxMemory, each with a budget of its own, so
	// that the entries of one pool are never evicted to make room for
	// another's; policies name their pool. The "default" pool gets what the
	// others leave, at least 1MiB.
	Pools map[string]Pool `yaml:"pools"`
}

// Pool is one named L1 memory pool.
type Pool struct {
	MaxMemory ByteSize `yaml:"max_memory"` // >= 1MiB
}

// DefaultPool is the name of the pool of policies that name none.
const DefaultPool = "default"

// PoolBudgets returns every pool's budget, the default pool's included.
func (l L1) PoolBudgets() map[string]ByteSize {
	out := make(map[string]ByteSize, len(l.Pools)+1)
	rest := l.MaxMemory
	for name, p := range l.Pools {
		out[name] = p.MaxMemory
		rest -= p.MaxMemory
	}
	out[DefaultPool] = rest
	return out
}

// Policy is one caching rule as written in the file; see policy.Policy for what
// the proxy does with it. Binary prefixes can be written as !!binary (base64).
type Policy struct {
	Prefix   string        `yaml:"prefix"`    // required; "" is the default policy
	Cache    *bool         `yaml:"cache"`     // nil: cache exactly when TTL > 0
	TTL      time.Duration `yaml:"ttl"`       // required when caching; written as 30s, 5m
	CacheNil *bool         `yaml:"cache_nil"` // nil: true
	// MaxValueBytes bounds the replies kept (as Redis sent them, in RESP);
	// larger ones are answered from upstream every time. 0: no bound.
	MaxValueBytes ByteSize `yaml:"max_value_bytes"`
	Pool          string   `yaml:"pool"` // an l1.pools name; "" or "default": the default pool
	// StaleIfError serves reads of the policy's keys from their last cached
	// reply, if no older than this, while the upstream cannot be reached.
	// 0: off.
	StaleIfError time.Duration `yaml:"stale_if_error"`
}

// Limits bound what one client may send.
type Limits struct {
	ProtoMaxBulkLen ByteSize `yaml:"proto_max_bulk_len"` // largest bulk string accepted, >= 1MiB as in Redis
	MaxClients      int      `yaml:"max_clients"`        // >= 1
	// TrackingTableMaxKeys bounds the keys remembered for clients' CLIENT
	// TRACKING, as Redis's tracking-table-max-keys; 0: no bound.
	TrackingTableMaxKeys int `yaml:"tracking_table_max_keys"` // >= 0
	// ClientQueryBufferLimit bounds a client's unparsed input, as Redis's
	// client-query-buffer-limit; >= 1MiB and >= proto_max_bulk_len.
	ClientQueryBufferLimit ByteSize `yaml:"client_query_buffer_limit"`
	// ClientOutputBufferLimit bounds the replies held for a client that
	// does not read them, per class, as Redis's client-output-buffer-limit.
	ClientOutputBufferLimit OutputBufferLimits `yaml:"client_output_buffer_limit"`
	// ClientsMaxMemory bounds the output all clients hold together, as
	// Redis's maxmemory-clients; past it the biggest are dropped. 0: none.
	ClientsMaxMemory ByteSize `yaml:"clients_max_memory"`
	// Timeout closes a client idle this long, as Redis's timeout; 0: never.
	Timeout time.Duration `yaml:"timeout"`
	// TCPKeepAlive is client sockets' keepalive period, as Redis's
	// tcp-keepalive; 0: off.
	TCPKeepAlive time.Duration `yaml:"tcp_keepalive"`
}

// OutputBufferLimits are client_output_buffer_limit's classes.
type OutputBufferLimits struct {
	Normal OutputBufferLimit `yaml:"normal"`
	PubSub OutputBufferLimit `yaml:"pubsub"`
}

// OutputBufferLimit is one class's limits: a client past Hard, or past Soft
// for longer than SoftSeconds, is disconnected. 0 turns a limit off.
type OutputBufferLimit struct {
	Hard        ByteSize `yaml:"hard"`
	Soft        ByteSize `yaml:"soft"`
	SoftSeconds int      `yaml:"soft_seconds"`
}

// Auth is who may use the proxy, and what each user may do. Clients AUTH to
// the proxy, as to a Redis with requirepass or ACL users; the proxy reaches
// the upstream with the upstream URL's credentials. With neither RequirePass
// nor Users, clients need no AUTH, and ProtectedMode serves only local ones.
type Auth struct {
	// RequirePass is the password of the "default" user (AUTH password).
	RequirePass string `yaml:"requirepass"`
	// Default are the default user's permissions: by default it may do
	// everything, as Redis's default user.
	Default Permissions `yaml:"default"`
	// Users are named users (AUTH name password). Given without
	// RequirePass, the default user is off.
	Users []User `yaml:"users"`
	// ProtectedMode, as Redis's protected-mode: while no password is set,
	// clients connecting from elsewhere than 127.0.0.1 or ::1 are refused.
	ProtectedMode bool `yaml:"protected_mode"`
}

// Permissions are what a user may do (see the acl package): Redis's ACL
// "-@write" for ReadOnly, "~pattern" for each of Keys (none: every key), and
// the admin commands, the proxy's CACHEPROXY included, for Admin.
type Permissions struct {
	ReadOnly bool     `yaml:"readonly"`
	Keys     []string `yaml:"keys"`
	Admin    bool     `yaml:"admin"`
}

// User is one named user a client may AUTH as. Its permissions default to
// every command and key except the admin ones.
type User struct {
	Name     string   `yaml:"name"`
	Password string   `yaml:"password"`
	ReadOnly bool     `yaml:"readonly"`
	Keys     []string `yaml:"keys"`
	Admin    bool     `yaml:"admin"`
}

// Permissions are the user's permissions.
func (u User) Permissions() Permissions {
	return Permissions{ReadOnly: u.ReadOnly, Keys: u.Keys, Admin: u.Admin}
}

// Invalidation says how the proxy learns about writes it did not see.
type Invalidation struct {
	// Mode is "keyspace" (keyspace notifications) or "tracking" (CLIENT
	// TRACKING in broadcast mode, for servers that refuse CONFIG).
	Mode string `yaml:"mode"`
	// ConfigSet allows the proxy to CONFIG SET notify-keyspace-events on the
	// upstream when event classes it needs are off (keyspace mode). Without
	// it, and without the classes, the proxy cannot invalidate and must not
	// cache.
	ConfigSet bool `yaml:"config_set"`
	// CanaryInterval paces the canary: a key the proxy writes to measure the
	// notification lag and to catch a stream that silently delivers nothing.
	CanaryInterval time.Duration `yaml:"canary_interval"`
	// CanaryTimeout is how long a canary's notification may take before the
	// stream counts as lost (the L1 is flushed until a new one is trusted).
	CanaryTimeout time.Duration `yaml:"canary_timeout"`
	// PollInterval is how often the upstream's INFO is read for restarts,
	// failovers, and FLUSHDB, FLUSHALL or SWAPDB sent to it directly.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// Log configures the proxy's own log.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn or error
	Format string `yaml:"format"` // text or json
}

// Default returns the configuration used for everything the file leaves out.
func Default() *Config {
	return &Config{
		Listen:      "127.0.0.1:6380",
		Upstream:    "redis://127.0.0.1:6379/0",
		Auth:        Auth{Default: Permissions{Admin: true}, ProtectedMode: true},
		TLS:         TLS{ClientAuth: "require", MinVersion: "1.2"},
		UpstreamTLS: UpstreamTLS{MinVersion: "1.2"},
		Metrics:     "127.0.0.1:9180",
		L1:          L1{MaxMemory: 256 * MiB},
		PolicyList:  []Policy{{Prefix: "", TTL: 10 * time.Second}},
		Limits: Limits{
			ProtoMaxBulkLen: 512 * MiB, MaxClients: 10000, TrackingTableMaxKeys: 1_000_000,
			ClientQueryBufferLimit:  1024 * MiB,
			ClientOutputBufferLimit: OutputBufferLimits{PubSub: OutputBufferLimit{Hard: 32 * MiB, Soft: 8 * MiB, SoftSeconds: 60}},
			TCPKeepAlive:            300 * time.Second,
		},
		UpstreamConns:          2,
		UpstreamConnectTimeout: 5 * time.Second,
		Invalidation: Invalidation{
			Mode:           "keyspace",
			ConfigSet:      true,
			CanaryInterval: time.Second,
			CanaryTimeout:  5 * time.Second,
			PollInterval:   100 * time.Millisecond,
		},
		Log:           Log{Level: "info", Format: "text"},
		ShutdownGrace: 10 * time.Second,
		ConfigPoll:    5 * time.Second,
	}
}

// Load reads the file at path, decodes it strictly onto Default and validates it.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Validate checks every field and reports every problem, one per line.
func (c *Config) Validate() error {
	errs := c.validate()
	if len(errs) == 0 {
		return nil
	}
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e.in("", 0)
	}
	return errors.Join(out...)
}

// Policies compiles the policy list. The error, if any, is one Validate reports.
func (c *Config) Policies() (*policy.Set, error) {
	s, err := c.compilePolicies()
	if err != nil {
		return nil, fmt.Errorf("config: policies: %w", err)
	}
	return s, nil
}

func (c *Config) compilePolicies() (*policy.Set, error) {
	ps := make([]policy.Policy, len(c.PolicyList))
	for i, p := range c.PolicyList {
		ps[i] = p.resolve()
	}
	return policy.Compile(ps)
}

func (p Policy) resolve() policy.Policy {
	r := policy.Policy{Prefix: p.Prefix, Cache: p.TTL > 0, TTL: p.TTL, CacheNil: true, MaxValueBytes: int64(p.MaxValueBytes), Pool: p.Pool, StaleIfError: p.StaleIfError}
	if r.Pool == DefaultPool {
		r.Pool = ""
	}
	if p.Cache != nil {
		r.Cache = *p.Cache
	}
	if p.CacheNil != nil {
		r.CacheNil = *p.CacheNil
	}
	return r
}

// fieldError is a problem with one field, before the file and line are known.
type fieldError struct {
	path string // policies[1].ttl; "" for the whole file
	msg  string
}

// in renders e as found in file name at line (0: unknown).
func (e fieldError) in(name string, line int) error {
	where := "config"
	switch {
	case name != "" && line > 0:
		where += " " + name + ":" + strconv.Itoa(line)
	case name != "":
		where += " " + name
	case line > 0:
		where += " line " + strconv.Itoa(line)
	}
	if e.path != "" {
		return fmt.Errorf("%s: %s: %s", where, e.path, e.msg)
	}
	return fmt.Errorf("%s: %s", where, e.msg)
}

func (c *Config) validate() []fieldError {
	var errs []fieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, fieldError{path, fmt.Sprintf(format, args...)})
	}

	if c.Listen == "" && c.TLS.Listen == "" {
		add("listen", `is empty and so is tls.listen: clients could not connect (e.g. 127.0.0.1:6380)`)
	} else if msg := checkHostPort(c.Listen); c.Listen != "" && msg != "" {
		add("listen", "%s (e.g. 127.0.0.1:6380)", msg)
	}
	if c.Metrics != "" {
		if msg := checkHostPort(c.Metrics); msg != "" {
			add("metrics", `%s (e.g. 127.0.0.1:9180, or "" for no metrics)`, msg)
		} else if c.Metrics == c.Listen && !hasPortZero(c.Listen) {
			add("metrics", "%q is also the listen address", c.Metrics)
		}
	}
	if msg := checkUpstream(string(c.Upstream)); msg != "" {
		add("upstream", "%s (e.g. redis://127.0.0.1:6379/0 or redis://user:pass@host:6379/0)", msg)
	}
	errs = append(errs, c.validateTLS()...)

	if c.L1.MaxMemory < MiB {
		add("l1.max_memory", "%v is below the minimum of 1MiB (plain numbers are bytes; e.g. 256MiB)", c.L1.MaxMemory)
	}
	errs = append(errs, c.validatePools()...)

	errs = append(errs, c.validatePolicies()...)

	if c.Limits.ProtoMaxBulkLen < MiB {
		add("limits.proto_max_bulk_len", "%v is below Redis's minimum of 1MiB (e.g. 512MiB, Redis's default)", c.Limits.ProtoMaxBulkLen)
	}
	if c.Limits.MaxClients < 1 {
		add("limits.max_clients", "%d must be at least 1 (e.g. 10000)", c.Limits.MaxClients)
	}
	if c.Limits.TrackingTableMaxKeys < 0 {
		add("limits.tracking_table_max_keys", "%d must not be negative (0: no bound; Redis's default is 1000000)", c.Limits.TrackingTableMaxKeys)
	}
	errs = append(errs, c.validateClientLimits()...)
	errs = append(errs, c.validateAuth()...)
	if c.UpstreamConns < 1 {
		add("upstream_conns", "%d must be at least 1 (e.g. 2)", c.UpstreamConns)
	}
	if c.UpstreamTimeout < 0 {
		add("upstream_timeout", "%v is negative (e.g. 1s; 0: no bound)", c.UpstreamTimeout)
	}
	if c.UpstreamConnectTimeout <= 0 {
		add("upstream_connect_timeout", "%v must be positive (e.g. 5s)", c.UpstreamConnectTimeout)
	}
	switch c.Invalidation.Mode {
	case "keyspace", "tracking":
	default:
		add("invalidation.mode", "%q is not one of keyspace, tracking", c.Invalidation.Mode)
	}
	for _, d := range []struct {
		path string
		v    time.Duration
		eg   string
	}{
		{"invalidation.canary_interval", c.Invalidation.CanaryInterval, "1s"},
		{"invalidation.canary_timeout", c.Invalidation.CanaryTimeout, "5s"},
		{"invalidation.poll_interval", c.Invalidation.PollInterval, "100ms"},
	} {
		if d.v < minInvalidationInterval {
			add(d.path, "%v is below the minimum of %v (e.g. %s)", d.v, minInvalidationInterval, d.eg)
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if c.ShutdownGrace < 0 {
		add("shutdown_grace", "%v is negative (e.g. 10s; 0 closes connections at once)", c.ShutdownGrace)
	}
	if c.ConfigPoll < 0 || c.ConfigPoll > 0 && c.ConfigPoll < 100*time.Millisecond {
		add("config_poll", "%v must be 0 (reload on SIGHUP only) or at least 100ms (e.g. 5s)", c.ConfigPoll)
	}
	return errs
}

// validateAuth checks the users; messages never repeat a password.
func (c *Config) validateAuth() []fieldError {
	var errs []fieldError
	seen := make(map[string]int, len(c.Auth.Users))
	for i, u := range c.Auth.Users {
		at := fmt.Sprintf("auth.users[%d]", i)
		switch {
		case u.Name == "":
			errs = append(errs, fieldError{at + ".name", "is required (e.g. name: app)"})
		case u.Name == "default":
			errs = append(errs, fieldError{at + ".name", `"default" is the user of auth.requirepass: set that instead`})
		case strings.ContainsAny(u.Name, " \t\r\n"):
			errs = append(errs, fieldError{at + ".name", fmt.Sprintf("%q contains a space or a line break", u.Name)})
		default:
			if j, dup := seen[u.Name]; dup {
				errs = append(errs, fieldError{at + ".name", fmt.Sprintf("%q is already the name of auth.users[%d]", u.Name, j)})
			}
			seen[u.Name] = i
		}
		if u.Password == "" {
			errs = append(errs, fieldError{at + ".password", "is required: a user without a password would let anyone in"})
		}
		errs = append(errs, u.Permissions().validate(at)...)
	}
	errs = append(errs, c.Auth.Default.validate("auth.default")...)
	return errs
}

// validate checks the key patterns, with Redis's glob syntax.
func (p Permissions) validate(at string) []fieldError {
	if p.Keys != nil && len(p.Keys) == 0 {
		return []fieldError{{at + ".keys", "lists no pattern: leave it out to allow every key, or list some (e.g. [\"user:*\"])"}}
	}
	var errs []fieldError
	for i, k := range p.Keys {
		if _, err := acl.Compile(k); err != nil {
			errs = append(errs, fieldError{fmt.Sprintf("%s.keys[%d]", at, i), err.Error()})
		}
	}
	return errs
}

// rePoolName keeps pool names fit for metric labels and log lines.
var rePoolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

func (c *Config) validatePools() []fieldError {
	var errs []fieldError
	names := make([]string, 0, len(c.L1.Pools))
	for name := range c.L1.Pools {
		names = append(names, name)
	}
	sort.Strings(names) // one error order for one file
	var carved ByteSize
	for _, name := range names {
		at := "l1.pools." + name
		switch {
		case name == DefaultPool:
			errs = append(errs, fieldError{at, `is implicit: the default pool gets what the named pools leave of l1.max_memory`})
			continue
		case !rePoolName.MatchString(name):
			errs = append(errs, fieldError{at, "is not a pool name: use 1 to 64 letters, digits, _ or -"})
			continue
		}
		if m := c.L1.Pools[name].MaxMemory; m < MiB {
			errs = append(errs, fieldError{at + ".max_memory", fmt.Sprintf("%v is below the minimum of 1MiB (e.g. 64MiB)", m)})
		} else {
			carved += m
		}
	}
	if len(names) > 0 && c.L1.MaxMemory >= MiB && c.L1.MaxMemory-carved < MiB {
		errs = append(errs, fieldError{"l1.pools", fmt.Sprintf("take %v of l1.max_memory %v, leaving less than 1MiB for the default pool", carved, c.L1.MaxMemory)})
	}
	return errs
}

// minInvalidationInterval bounds the invalidation timings from below: the
// canary and the poller each cost the upstream a round trip per interval.
const minInvalidationInterval = 10 * time.Millisecond

func (c *Config) validatePolicies() []fieldError {
	var errs []fieldError
	seen := make(map[string]int, len(c.PolicyList))
	for i, p := range c.PolicyList {
		at := fmt.Sprintf("policies[%d]", i)
		if j, dup := seen[p.Prefix]; dup {
			errs = append(errs, fieldError{at + ".prefix", fmt.Sprintf("%q is already the prefix of policies[%d]", p.Prefix, j)})
		}
		seen[p.Prefix] = i
		switch {
		case p.TTL < 0:
			errs = append(errs, fieldError{at + ".ttl", fmt.Sprintf("%v is negative (e.g. 30s)", p.TTL)})
		case p.Cache != nil && *p.Cache && p.TTL == 0:
			errs = append(errs, fieldError{at + ".cache", "true needs a ttl (e.g. ttl: 30s)"})
		case p.Cache != nil && !*p.Cache && p.TTL > 0:
			errs = append(errs, fieldError{at + ".ttl", fmt.Sprintf("%v is set but cache is false: remove one of them", p.TTL)})
		}
		caches := p.TTL > 0 && (p.Cache == nil || *p.Cache)
		if p.MaxValueBytes > 0 && !caches {
			errs = append(errs, fieldError{at + ".max_value_bytes", "is set but the policy does not cache: remove it, or give a ttl"})
		}
		if p.StaleIfError < 0 {
			errs = append(errs, fieldError{at + ".stale_if_error", fmt.Sprintf("%v is negative (e.g. 30s; 0: off)", p.StaleIfError)})
		} else if p.StaleIfError > 0 && !caches {
			errs = append(errs, fieldError{at + ".stale_if_error", "is set but the policy does not cache: remove it, or give a ttl"})
		}
		if _, ok := c.L1.Pools[p.Pool]; p.Pool != "" && p.Pool != DefaultPool && !ok {
			errs = append(errs, fieldError{at + ".pool", fmt.Sprintf("%q is not in l1.pools (%s)", p.Pool, c.poolNames())})
		} else if p.Pool != "" && !caches {
			errs = append(errs, fieldError{at + ".pool", "is set but the policy does not cache: remove it, or give a ttl"})
		}
	}
	if len(errs) == 0 {
		// The checks above mirror policy.Compile's with paths; this catches any rule
		// added there and not here.
		if _, err := c.compilePolicies(); err != nil {
			errs = append(errs, fieldError{"policies", err.Error()})
		}
	}
	return errs
}

func (c *Config) poolNames() string {
	names := []string{DefaultPool}
	for name := range c.L1.Pools {
		names = append(names, name)
	}
	sort.Strings(names[1:])
	return strings.Join(names, ", ")
}

// checkHostPort returns what is wrong with addr as a TCP listen address, or "".
func checkHostPort(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q is not host:port", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("%q does not end in a port number from 0 to 65535", addr)
	}
	return ""
}

func hasPortZero(addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	return port == "0"
}

// UpstreamURL is the upstream's URL. In the file it may also be a list of a
// Redis Cluster's seed nodes, which stands for the redis-cluster:// URL of
// them.
type UpstreamURL string

// UnmarshalYAML reads a URL, or a list of seed nodes.
func (u *UpstreamURL) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*u = UpstreamURL(s)
		return nil
	}
	var seeds []string
	if err := n.Decode(&seeds); err != nil {
		return err
	}
	s, err := cluster.SeedsURL(seeds)
	if err != nil {
		return fmt.Errorf("line %d: upstream: the list of cluster seed nodes: %v", n.Line, err)
	}
	*u = UpstreamURL(s)
	return nil
}

// checkUpstream returns what is wrong with the upstream URL, or "". Messages
// never repeat the password.
func checkUpstream(s string) string {
	if cluster.IsURL(s) {
		if _, err := cluster.ParseURL(s); err != nil {
			return "is not a cluster URL (redis-cluster://[user:pass@]host:port[,host:port...]): " + err.Error()
		}
		return ""
	}
	if sentinel.IsURL(s) {
		if _, err := sentinel.ParseURL(s); err != nil {
			return "is not a Sentinel URL (redis-sentinel://[user:pass@]host:port[,host:port]/master[/db]): " + err.Error()
		}
		return ""
	}
	if !strings.Contains(s, "://") {
		return "is not a URL: it lacks the redis:// scheme"
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Error quotes the whole URL, password included: keep only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Sprintf("is not a URL: %v", err)
	}
	shown := strconv.Quote(u.Redacted())
	o, err := redis.ParseURL(s)
	if err != nil {
		return fmt.Sprintf("%s is not a Redis URL: %v", shown, err)
	}
	if o.DB < 0 {
		return fmt.Sprintf("%s names a negative database", shown)
	}
	return ""
}
