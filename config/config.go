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
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/policy"
)

// Config is the whole file. Fields left out of the file keep Default's values; a
// key written with no value (listen:) also keeps its default.
type Config struct {
	Listen   string `yaml:"listen"`   // client address, host:port; port 0 picks a free one
	Upstream string `yaml:"upstream"` // redis://[user:pass@]host:port[/db], as go-redis's ParseURL reads it
	Metrics  string `yaml:"metrics"`  // Prometheus address, host:port; "" serves no metrics
	L1       L1     `yaml:"l1"`
	// PolicyList replaces the default list when given. Keys that match no prefix
	// and find no "" entry are not cached. Policies compiles it.
	PolicyList    []Policy     `yaml:"policies"`
	Limits        Limits       `yaml:"limits"`
	UpstreamConns int          `yaml:"upstream_conns"` // multiplexed upstream connections per db, >= 1
	Invalidation  Invalidation `yaml:"invalidation"`
	Log           Log          `yaml:"log"`
}

// L1 sizes the in-process cache.
type L1 struct {
	MaxMemory ByteSize `yaml:"max_memory"` // whole budget: keys plus replies; >= 1MiB
}

// Policy is one caching rule as written in the file; see policy.Policy for what
// the proxy does with it. Binary prefixes can be written as !!binary (base64).
type Policy struct {
	Prefix   string        `yaml:"prefix"`    // required; "" is the default policy
	Cache    *bool         `yaml:"cache"`     // nil: cache exactly when TTL > 0
	TTL      time.Duration `yaml:"ttl"`       // required when caching; written as 30s, 5m
	CacheNil *bool         `yaml:"cache_nil"` // nil: true
}

// Limits bound what one client may send.
type Limits struct {
	ProtoMaxBulkLen ByteSize `yaml:"proto_max_bulk_len"` // largest bulk string accepted, >= 1MiB as in Redis
	MaxClients      int      `yaml:"max_clients"`        // >= 1
}

// Invalidation says how the proxy learns about writes it did not see.
type Invalidation struct {
	Mode string `yaml:"mode"` // only "keyspace": keyspace notifications
	// ConfigSet allows the proxy to CONFIG SET notify-keyspace-events on the
	// upstream when event classes it needs are off. Without it, and without the
	// classes, the proxy cannot invalidate and must not cache.
	ConfigSet bool `yaml:"config_set"`
}

// Log configures the proxy's own log.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn or error
	Format string `yaml:"format"` // text or json
}

// Default returns the configuration used for everything the file leaves out.
func Default() *Config {
	return &Config{
		Listen:        "127.0.0.1:6380",
		Upstream:      "redis://127.0.0.1:6379/0",
		Metrics:       "127.0.0.1:9180",
		L1:            L1{MaxMemory: 256 * MiB},
		PolicyList:    []Policy{{Prefix: "", TTL: 10 * time.Second}},
		Limits:        Limits{ProtoMaxBulkLen: 512 * MiB, MaxClients: 10000},
		UpstreamConns: 2,
		Invalidation:  Invalidation{Mode: "keyspace", ConfigSet: true},
		Log:           Log{Level: "info", Format: "text"},
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
	r := policy.Policy{Prefix: p.Prefix, Cache: p.TTL > 0, TTL: p.TTL, CacheNil: true}
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

	if msg := checkHostPort(c.Listen); msg != "" {
		add("listen", "%s (e.g. 127.0.0.1:6380)", msg)
	}
	if c.Metrics != "" {
		if msg := checkHostPort(c.Metrics); msg != "" {
			add("metrics", `%s (e.g. 127.0.0.1:9180, or "" for no metrics)`, msg)
		} else if c.Metrics == c.Listen && !hasPortZero(c.Listen) {
			add("metrics", "%q is also the listen address", c.Metrics)
		}
	}
	if msg := checkUpstream(c.Upstream); msg != "" {
		add("upstream", "%s (e.g. redis://127.0.0.1:6379/0 or redis://user:pass@host:6379/0)", msg)
	}

	if c.L1.MaxMemory < MiB {
		add("l1.max_memory", "%v is below the minimum of 1MiB (plain numbers are bytes; e.g. 256MiB)", c.L1.MaxMemory)
	}

	errs = append(errs, c.validatePolicies()...)

	if c.Limits.ProtoMaxBulkLen < MiB {
		add("limits.proto_max_bulk_len", "%v is below Redis's minimum of 1MiB (e.g. 512MiB, Redis's default)", c.Limits.ProtoMaxBulkLen)
	}
	if c.Limits.MaxClients < 1 {
		add("limits.max_clients", "%d must be at least 1 (e.g. 10000)", c.Limits.MaxClients)
	}
	if c.UpstreamConns < 1 {
		add("upstream_conns", "%d must be at least 1 (e.g. 2)", c.UpstreamConns)
	}
	if c.Invalidation.Mode != "keyspace" {
		add("invalidation.mode", `%q is not supported; only "keyspace" is, for now`, c.Invalidation.Mode)
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
	return errs
}

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

// checkUpstream returns what is wrong with the upstream URL, or "". Messages
// never repeat the password.
func checkUpstream(s string) string {
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
