package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestParse is a table of config snippets: the valid ones with a check of what
// they set, the invalid ones with a fragment of the expected message.
func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		input   string
		wantErr string // "" means must parse
		check   func(t *testing.T, c *Config)
	}{
		// Valid.
		{name: "empty file keeps defaults", input: "", check: func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c, Default()) {
				t.Errorf("got %+v, want Default()", c)
			}
		}},
		{name: "comments only", input: "# nothing\n", check: func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c, Default()) {
				t.Errorf("got %+v, want Default()", c)
			}
		}},
		{name: "partial section keeps sibling defaults", input: "limits:\n  max_clients: 5\n", check: func(t *testing.T, c *Config) {
			if c.Limits.MaxClients != 5 || c.Limits.ProtoMaxBulkLen != 512*MiB {
				t.Errorf("limits = %+v", c.Limits)
			}
		}},
		{name: "key without value keeps default", input: "listen:\nl1:\n", check: func(t *testing.T, c *Config) {
			if c.Listen != "127.0.0.1:6380" || c.L1.MaxMemory != 256*MiB {
				t.Errorf("listen %q, l1 %v", c.Listen, c.L1.MaxMemory)
			}
		}},
		{name: "metrics off, port 0", input: "listen: 127.0.0.1:0\nmetrics: \"\"\n", check: func(t *testing.T, c *Config) {
			if c.Metrics != "" || c.Listen != "127.0.0.1:0" {
				t.Errorf("metrics %q listen %q", c.Metrics, c.Listen)
			}
		}},
		{name: "byte sizes", input: "l1:\n  max_memory: 1 GiB\nlimits:\n  proto_max_bulk_len: 2097152\n", check: func(t *testing.T, c *Config) {
			if c.L1.MaxMemory != GiB || c.Limits.ProtoMaxBulkLen != 2*MiB {
				t.Errorf("max_memory %v proto_max_bulk_len %v", c.L1.MaxMemory, c.Limits.ProtoMaxBulkLen)
			}
		}},
		{name: "sentinel upstream", input: "upstream: redis-sentinel://app:s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/2\n", check: func(t *testing.T, c *Config) {
			if c.Upstream != "redis-sentinel://app:s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/2" {
				t.Errorf("upstream %q", c.Upstream)
			}
		}},
		{name: "cluster upstream", input: "upstream: redis-cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7000\n", check: func(t *testing.T, c *Config) {
			if c.Upstream != "redis-cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7000" {
				t.Errorf("upstream %q", c.Upstream)
			}
		}},
		{name: "cluster seeds as a list", input: "upstream:\n  - 10.0.0.1:7000\n  - 10.0.0.2:7000\n", check: func(t *testing.T, c *Config) {
			if c.Upstream != "redis-cluster://10.0.0.1:7000,10.0.0.2:7000" {
				t.Errorf("upstream %q", c.Upstream)
			}
		}},
		{name: "upstream with auth, db and options", input: "upstream: redis://app:s3cret@127.0.0.1:6379/3?dial_timeout=2s\n", check: func(t *testing.T, c *Config) {
			if c.Upstream != "redis://app:s3cret@127.0.0.1:6379/3?dial_timeout=2s" {
				t.Errorf("upstream %q", c.Upstream)
			}
		}},
		{name: "policy list replaces default", input: "policies:\n  - prefix: \"a:\"\n    ttl: 5m\n    cache_nil: false\n", check: func(t *testing.T, c *Config) {
			f := false
			want := []Policy{{Prefix: "a:", TTL: 5 * time.Minute, CacheNil: &f}}
			if !reflect.DeepEqual(c.PolicyList, want) {
				t.Errorf("policies = %+v", c.PolicyList)
			}
		}},
		{name: "flow style and binary prefix", input: "policies: [{prefix: !!binary AP8=, ttl: 1s}, {prefix: '', cache: false}]\n", check: func(t *testing.T, c *Config) {
			if len(c.PolicyList) != 2 || c.PolicyList[0].Prefix != "\x00\xff" || c.PolicyList[1].Prefix != "" {
				t.Errorf("policies = %+v", c.PolicyList)
			}
		}},
		{name: "anchors and merge keys", input: "policies:\n  - &base {prefix: \"a:\", ttl: 5s}\n  - {<<: *base, prefix: \"b:\"}\n", check: func(t *testing.T, c *Config) {
			if len(c.PolicyList) != 2 || c.PolicyList[1].Prefix != "b:" || c.PolicyList[1].TTL != 5*time.Second {
				t.Errorf("policies = %+v", c.PolicyList)
			}
		}},
		{name: "empty policy list", input: "policies: []\n", check: func(t *testing.T, c *Config) {
			s, err := c.Policies()
			if err != nil || s.Lookup([]byte("k")).Cache {
				t.Errorf("an empty list must cache nothing (err %v)", err)
			}
		}},
		{name: "pools and per-policy limits", input: `
l1:
  max_memory: 256MiB
  pools:
    sessions: {max_memory: 64MiB}
    big-results:
      max_memory: 100MiB
policies:
  - {prefix: "session:", ttl: 30s, pool: sessions}
  - {prefix: "q:", ttl: 5s, pool: big-results, max_value_bytes: 1MiB}
  - {prefix: "", ttl: 10s, pool: default}
shutdown_grace: 30s
config_poll: 0s
`, check: func(t *testing.T, c *Config) {
			if got := c.L1.PoolBudgets(); len(got) != 3 || got["sessions"] != 64*MiB || got["big-results"] != 100*MiB || got[DefaultPool] != 92*MiB {
				t.Errorf("pool budgets %v", got)
			}
			if c.ShutdownGrace != 30*time.Second || c.ConfigPoll != 0 {
				t.Errorf("shutdown_grace %v config_poll %v", c.ShutdownGrace, c.ConfigPoll)
			}
			s, err := c.Policies()
			if err != nil {
				t.Fatal(err)
			}
			if p := s.Lookup([]byte("q:1")); p.Pool != "big-results" || p.MaxValueBytes != 1<<20 {
				t.Errorf("q: policy %+v", *p)
			}
			if p := s.Lookup([]byte("x")); p.Pool != "" {
				t.Errorf(`pool "default" compiles to %q, want ""`, p.Pool)
			}
		}},

		// Structure.
		{name: "unknown field", input: "listen: 127.0.0.1:6380\nlisen: 127.0.0.1:1\n",
			wantErr: "config t.yaml:2: lisen: unknown field; valid fields are listen, upstream, metrics, l1, policies, limits, "},
		{name: "unknown nested field", input: "l1:\n  max_memroy: 1GiB\n",
			wantErr: "config t.yaml:2: l1.max_memroy: unknown field; valid fields are max_memory"},
		{name: "unknown policy field", input: "policies:\n  - prefix: a\n    ttl: 1s\n    tll: 2s\n",
			wantErr: "config t.yaml:4: policies[0].tll: unknown field; valid fields are prefix, cache, ttl, cache_nil"},
		{name: "duplicate key", input: "listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n",
			wantErr: "config t.yaml:2: listen: appears twice (first at line 1)"},
		{name: "syntax error", input: "listen: 127.0.0.1:1\nl1: [\n",
			wantErr: "config t.yaml:2: did not find expected node content"},
		{name: "two documents", input: "listen: 127.0.0.1:1\n---\nlisten: 127.0.0.1:2\n",
			wantErr: "config t.yaml:2: holds more than one YAML document"},
		{name: "not a mapping", input: "- listen\n",
			wantErr: "config t.yaml:1: expected a mapping of listen, upstream,"},
		{name: "section not a mapping", input: "log: loud\n",
			wantErr: `config t.yaml:1: log: "loud" is not a mapping of level, format`},
		{name: "policies not a list", input: "policies: all\n",
			wantErr: `config t.yaml:1: policies: "all" is not a list`},
		{name: "policy not a mapping", input: "policies:\n  - \"a:\"\n",
			wantErr: `config t.yaml:2: policies[0]: "a:" is not a mapping of prefix, cache, ttl, cache_nil`},
		{name: "string given a list", input: "listen: [a, b]\n",
			wantErr: "config t.yaml:1: listen: expected a string, got a list"},

		// Values.
		{name: "bad duration", input: "policies:\n  - prefix: a\n    ttl: 1s\n  - prefix: b\n    ttl: 30 seconds\n",
			wantErr: `config t.yaml:5: policies[1].ttl: "30 seconds" is not a duration (e.g. 30s, 5m)`},
		{name: "long bad duration", input: "policies:\n  - {prefix: a, ttl: thirty seconds}\n",
			wantErr: `config t.yaml:2: policies[0].ttl: "thirty seconds" is not a duration (e.g. 30s, 5m)`},
		{name: "duration without unit", input: "policies:\n  - prefix: a\n    ttl: 30\n",
			wantErr: `config t.yaml:3: policies[0].ttl: "30" is not a duration`},
		{name: "flow style second item", input: "policies: [{prefix: a, ttl: 1s}, {prefix: b, ttl: 2 min}]\n",
			wantErr: `config t.yaml:1: policies[1].ttl: "2 min" is not a duration`},
		{name: "bad bool", input: "policies:\n  - prefix: a\n    cache: maybe\n",
			wantErr: `config t.yaml:3: policies[0].cache: "maybe" is not true or false`},
		{name: "bad int", input: "limits:\n  max_clients: many\n",
			wantErr: `config t.yaml:2: limits.max_clients: "many" is not a whole number`},
		{name: "cache without ttl", input: "policies:\n  - prefix: a\n    cache: true\n",
			wantErr: "config t.yaml:3: policies[0].cache: true needs a ttl (e.g. ttl: 30s)"},
		{name: "ttl with cache false", input: "policies:\n  - prefix: a\n    cache: false\n    ttl: 5s\n",
			wantErr: "config t.yaml:4: policies[0].ttl: 5s is set but cache is false"},
		{name: "negative ttl", input: "policies:\n  - prefix: a\n    ttl: -5s\n",
			wantErr: "config t.yaml:3: policies[0].ttl: -5s is negative"},
		{name: "duplicate prefix", input: "policies:\n  - prefix: \"a:\"\n  - prefix: \"b:\"\n  - prefix: \"a:\"\n",
			wantErr: `config t.yaml:4: policies[2].prefix: "a:" is already the prefix of policies[0]`},
		{name: "missing prefix", input: "policies:\n  - ttl: 5s\n",
			wantErr: `config t.yaml:2: policies[0].prefix: is missing (write prefix: "" for the default policy)`},
		{name: "empty policy item", input: "policies:\n  - prefix: a\n  -\n",
			wantErr: `config t.yaml:3: policies[1].prefix: is missing`},
		{name: "byte size unit", input: "l1:\n  max_memory: 256mb\n",
			wantErr: `config t.yaml:2: l1.max_memory: "256mb" has an unknown unit "mb"`},
		{name: "byte size text", input: "l1:\n  max_memory: lots\n",
			wantErr: `config t.yaml:2: l1.max_memory: "lots" is not a byte size (e.g. 256MiB, 1GiB;`},
		{name: "byte size fraction", input: "l1:\n  max_memory: 1.5GiB\n",
			wantErr: `l1.max_memory: "1.5GiB" has an unknown unit ".5GiB"`},
		{name: "byte size negative", input: "l1:\n  max_memory: -1\n",
			wantErr: `l1.max_memory: "-1" is not a byte size`},
		{name: "byte size overflow", input: "l1:\n  max_memory: 9000000TiB\n",
			wantErr: `l1.max_memory: "9000000TiB" is too large`},
		{name: "byte size mapping", input: "l1:\n  max_memory: {size: 1}\n",
			wantErr: "config t.yaml:2: l1.max_memory: expected a byte size (e.g. 256MiB, 1GiB; units B, KB, KiB, MB, MiB, GB, GiB, TB, TiB), got a mapping"},
		{name: "byte size flow style", input: "limits: {max_clients: 1, proto_max_bulk_len: 1 GiBs}\n",
			wantErr: `config t.yaml:1: limits.proto_max_bulk_len: "1 GiBs" has an unknown unit`},
		{name: "max_memory in bytes by mistake", input: "l1:\n  max_memory: 256\n",
			wantErr: "config t.yaml:2: l1.max_memory: 256B is below the minimum of 1MiB (plain numbers are bytes; e.g. 256MiB)"},
		{name: "proto_max_bulk_len small", input: "limits:\n  proto_max_bulk_len: 1KiB\n",
			wantErr: "config t.yaml:2: limits.proto_max_bulk_len: 1KiB is below Redis's minimum of 1MiB"},
		{name: "tracking_table_max_keys negative", input: "limits:\n  tracking_table_max_keys: -1\n",
			wantErr: "config t.yaml:2: limits.tracking_table_max_keys: -1 must not be negative"},
		{name: "max_clients zero", input: "limits:\n  max_clients: 0\n",
			wantErr: "config t.yaml:2: limits.max_clients: 0 must be at least 1"},
		{name: "upstream_conns zero", input: "upstream_conns: 0\n",
			wantErr: "config t.yaml:1: upstream_conns: 0 must be at least 1"},
		{name: "listen not host:port", input: "listen: localhost\n",
			wantErr: `config t.yaml:1: listen: "localhost" is not host:port (e.g. 127.0.0.1:6380)`},
		{name: "listen bad port", input: "listen: 127.0.0.1:99999\n",
			wantErr: `listen: "127.0.0.1:99999" does not end in a port number from 0 to 65535`},
		{name: "metrics named port", input: "metrics: 127.0.0.1:http\n",
			wantErr: `config t.yaml:1: metrics: "127.0.0.1:http" does not end in a port number`},
		{name: "metrics on listen address", input: "listen: 127.0.0.1:7000\nmetrics: 127.0.0.1:7000\n",
			wantErr: `config t.yaml:2: metrics: "127.0.0.1:7000" is also the listen address`},
		{name: "upstream scheme", input: "upstream: http://127.0.0.1:6379\n",
			wantErr: `config t.yaml:1: upstream: "http://127.0.0.1:6379" is not a Redis URL: redis: invalid URL scheme: http (e.g. redis://127.0.0.1:6379/0`},
		{name: "upstream without scheme", input: "upstream: 127.0.0.1:6379\n",
			wantErr: "upstream: is not a URL: it lacks the redis:// scheme"},
		{name: "upstream bad db", input: "upstream: redis://127.0.0.1:6379/x\n",
			wantErr: `upstream: "redis://127.0.0.1:6379/x" is not a Redis URL: redis: invalid database number: "x"`},
		{name: "upstream negative db", input: "upstream: redis://127.0.0.1:6379/-1\n",
			wantErr: `upstream: "redis://127.0.0.1:6379/-1" names a negative database`},
		{name: "sentinel upstream without master", input: "upstream: redis-sentinel://127.0.0.1:26379\n",
			wantErr: `config t.yaml:1: upstream: is not a Sentinel URL (redis-sentinel://[user:pass@]host:port[,host:port]/master[/db]): names no master`},
		{name: "sentinel upstream bad port", input: "upstream: redis-sentinel://u:hunter2@a:26379,b:99999/mymaster\n",
			wantErr: `upstream: is not a Sentinel URL (redis-sentinel://[user:pass@]host:port[,host:port]/master[/db]): sentinel "b:99999" has a bad port (1..65535)`},
		{name: "cluster upstream bad seed", input: "upstream: redis-cluster://u:hunter2@a:7000,b\n",
			wantErr: `config t.yaml:1: upstream: is not a cluster URL (redis-cluster://[user:pass@]host:port[,host:port...]): seed "b" is not host:port`},
		{name: "cluster upstream with a database", input: "upstream: redis-cluster://a:7000/2\n",
			wantErr: `upstream: is not a cluster URL (redis-cluster://[user:pass@]host:port[,host:port...]): names database "2": a cluster has database 0 alone`},
		{name: "cluster seed list bad seed", input: "upstream: [a:7000, b:0]\n",
			wantErr: `upstream: the list of cluster seed nodes: seed "b:0" has a bad port (1..65535)`},
		{name: "cluster seed list empty", input: "upstream: []\n",
			wantErr: `upstream: the list of cluster seed nodes: lists no seed node`},
		{name: "invalidation mode", input: "invalidation:\n  mode: push\n",
			wantErr: `config t.yaml:2: invalidation.mode: "push" is not one of keyspace, tracking`},
		{name: "invalidation canary interval", input: "invalidation:\n  canary_interval: 0s\n",
			wantErr: `config t.yaml:2: invalidation.canary_interval: 0s is below the minimum of 10ms (e.g. 1s)`},
		{name: "invalidation canary timeout", input: "invalidation:\n  canary_timeout: 1ms\n",
			wantErr: `config t.yaml:2: invalidation.canary_timeout: 1ms is below the minimum of 10ms (e.g. 5s)`},
		{name: "invalidation poll interval", input: "invalidation:\n  poll_interval: -1s\n",
			wantErr: `config t.yaml:2: invalidation.poll_interval: -1s is below the minimum of 10ms (e.g. 100ms)`},
		{name: "log level", input: "log:\n  level: verbose\n",
			wantErr: `config t.yaml:2: log.level: "verbose" is not one of debug, info, warn, error`},
		{name: "log format", input: "log:\n  format: xml\n",
			wantErr: `config t.yaml:2: log.format: "xml" is not one of text, json`},
		{name: "unknown pool", input: "l1:\n  pools:\n    a: {max_memory: 2MiB}\npolicies:\n  - {prefix: x, ttl: 1s, pool: b}\n",
			wantErr: `config t.yaml:5: policies[0].pool: "b" is not in l1.pools (default, a)`},
		{name: "pool on a policy that does not cache", input: "l1:\n  pools:\n    a: {max_memory: 2MiB}\npolicies:\n  - {prefix: x, pool: a}\n",
			wantErr: `config t.yaml:5: policies[0].pool: is set but the policy does not cache`},
		{name: "max_value_bytes on a policy that does not cache", input: "policies:\n  - prefix: x\n    cache: false\n    max_value_bytes: 1KiB\n",
			wantErr: `config t.yaml:4: policies[0].max_value_bytes: is set but the policy does not cache`},
		{name: "max_value_bytes text", input: "policies:\n  - {prefix: x, ttl: 1s, max_value_bytes: big}\n",
			wantErr: `config t.yaml:2: policies[0].max_value_bytes: "big" is not a byte size`},
		{name: "pool too small", input: "l1:\n  pools:\n    a:\n      max_memory: 1KiB\n",
			wantErr: `config t.yaml:4: l1.pools.a.max_memory: 1KiB is below the minimum of 1MiB`},
		{name: "pools take everything", input: "l1:\n  max_memory: 8MiB\n  pools:\n    a: {max_memory: 4MiB}\n    b: {max_memory: 4MiB}\n",
			wantErr: `config t.yaml:3: l1.pools: take 8MiB of l1.max_memory 8MiB, leaving less than 1MiB for the default pool`},
		{name: "default pool listed", input: "l1:\n  pools:\n    default: {max_memory: 2MiB}\n",
			wantErr: `config t.yaml:3: l1.pools.default: is implicit`},
		{name: "bad pool name", input: "l1:\n  pools:\n    \"a b\": {max_memory: 2MiB}\n",
			wantErr: `config t.yaml:3: l1.pools.a b: is not a pool name`},
		{name: "pool field misspelt", input: "l1:\n  pools:\n    a: {max_mem: 2MiB}\n",
			wantErr: `config t.yaml:3: l1.pools.a.max_mem: unknown field; valid fields are max_memory`},
		{name: "pool not a mapping", input: "l1:\n  pools:\n    a: 2MiB\n",
			wantErr: `config t.yaml:3: l1.pools.a: "2MiB" is not a mapping of max_memory`},
		{name: "pools not a mapping", input: "l1:\n  pools: [a]\n",
			wantErr: `config t.yaml:2: l1.pools: expected a mapping of names, got a list`},
		{name: "shutdown_grace negative", input: "shutdown_grace: -1s\n",
			wantErr: `config t.yaml:1: shutdown_grace: -1s is negative`},
		{name: "config_poll too fast", input: "config_poll: 1ms\n",
			wantErr: `config t.yaml:1: config_poll: 1ms must be 0 (reload on SIGHUP only) or at least 100ms`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse([]byte(tt.input), "t.yaml")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tt.wantErr)
			}
			if c != nil {
				t.Errorf("Parse returned a config with its error")
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	t.Parallel()
	in := "lisen: x\nl1:\n  max_memory: lots\npolicies:\n  - prefix: a\n    ttl: soon\n"
	_, err := Parse([]byte(in), "t.yaml")
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	for _, want := range []string{
		"config t.yaml:1: lisen: unknown field",
		`config t.yaml:3: l1.max_memory: "lots" is not a byte size`,
		`config t.yaml:6: policies[0].ttl: "soon" is not a duration`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error:\n%v\nlacks %q", err, want)
		}
	}
	in = "policies:\n  - &x {prefix: a, ttl: 5 s}\n  - *x\n"
	_, err = Parse([]byte(in), "t.yaml")
	if err == nil || strings.Count(err.Error(), "is not a duration") != 1 {
		t.Errorf("want one report of a bad value used twice through an alias; got:\n%v", err)
	}
	in = "upstream_conns: 0\nlog:\n  level: loud\n  format: xml\n"
	_, err = Parse([]byte(in), "t.yaml")
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("want three problems, one per line; got:\n%v", err)
	}
}

func TestParseNeverShowsThePassword(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"upstream: redis://app:s3cret@127.0.0.1:6379/x\n",
		"upstream: redis://app:s3cret@127.0.0.1:port/0\n",
		"upstream: rediz://app:s3cret@127.0.0.1:6379/0\n",
		"upstream: app:s3cret@127.0.0.1:6379\n",
	} {
		_, err := Parse([]byte(in), "t.yaml")
		if err == nil {
			t.Errorf("%q: Parse succeeded", in)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "upstream: ") {
			t.Errorf("%q: error %q must name upstream and hide the password", in, err)
		}
	}
}

func TestDefault(t *testing.T) {
	t.Parallel()
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate: %v", err)
	}
	want := &Config{
		Listen:     "127.0.0.1:6380",
		Upstream:   "redis://127.0.0.1:6379/0",
		Metrics:    "127.0.0.1:9180",
		L1:         L1{MaxMemory: 256 << 20},
		PolicyList: []Policy{{Prefix: "", TTL: 10 * time.Second}},
		Limits: Limits{ProtoMaxBulkLen: 512 << 20, MaxClients: 10000, TrackingTableMaxKeys: 1_000_000,
			ClientQueryBufferLimit:  1 << 30,
			ClientOutputBufferLimit: OutputBufferLimits{PubSub: OutputBufferLimit{Hard: 32 << 20, Soft: 8 << 20, SoftSeconds: 60}},
			TCPKeepAlive:            300 * time.Second},
		UpstreamConns: 2,
		Invalidation: Invalidation{Mode: "keyspace", ConfigSet: true,
			CanaryInterval: time.Second, CanaryTimeout: 5 * time.Second, PollInterval: 100 * time.Millisecond},
		Log:           Log{Level: "info", Format: "text"},
		ShutdownGrace: 10 * time.Second,
		ConfigPoll:    5 * time.Second,
		Auth:          Auth{Default: Permissions{Admin: true}, ProtectedMode: true},
		TLS:           TLS{ClientAuth: "require", MinVersion: "1.2"},
		UpstreamTLS:   UpstreamTLS{MinVersion: "1.2"},

		UpstreamConnectTimeout: 5 * time.Second,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Default() = %+v\nwant %+v", c, want)
	}
	s, err := c.Policies()
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Lookup([]byte("any")); !p.Cache || p.TTL != 10*time.Second || !p.CacheNil || len(s.All()) != 1 {
		t.Errorf("default policy = %+v", *p)
	}
	// Each call is a fresh copy.
	c.PolicyList[0].TTL = time.Hour
	if Default().PolicyList[0].TTL != 10*time.Second {
		t.Error("Default shares its policy list between calls")
	}
}

func TestValidateWithoutFile(t *testing.T) {
	t.Parallel()
	c := Default()
	c.UpstreamConns = 0
	c.PolicyList = append(c.PolicyList, Policy{Prefix: "", TTL: time.Second})
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate succeeded")
	}
	for _, want := range []string{
		"config: upstream_conns: 0 must be at least 1",
		`config: policies[1].prefix: "" is already the prefix of policies[0]`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error:\n%v\nlacks %q", err, want)
		}
	}
}

func TestPolicies(t *testing.T) {
	t.Parallel()
	in := `
policies:
  - prefix: "user:"
    ttl: 1m
  - prefix: "user:admin:"
    cache: false
  - prefix: "user:session:"
    ttl: 5s
    cache_nil: false
`
	c, err := Parse([]byte(in), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Policies()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key      string
		prefix   string
		cache    bool
		ttl      time.Duration
		cacheNil bool
	}{
		{"user:1", "user:", true, time.Minute, true},
		{"user:admin:1", "user:admin:", false, 0, false},
		{"user:session:x", "user:session:", true, 5 * time.Second, false},
		{"user:sess", "user:", true, time.Minute, true},
		{"user", "", false, 0, false}, // no "" entry: not cached
		{"other", "", false, 0, false},
	}
	for _, tt := range tests {
		p := s.Lookup([]byte(tt.key))
		if p.Prefix != tt.prefix || p.Cache != tt.cache || p.TTL != tt.ttl || p.CacheNil != tt.cacheNil {
			t.Errorf("Lookup(%q) = %+v, want prefix %q cache %v ttl %v cache_nil %v",
				tt.key, *p, tt.prefix, tt.cache, tt.ttl, tt.cacheNil)
		}
	}
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want ByteSize
		str  string
	}{
		{"0", 0, "0B"},
		{"1", 1, "1B"},
		{"1000", 1000, "1KB"},
		{"1024", 1024, "1KiB"},
		{"10B", 10, "10B"},
		{"1KB", 1000, "1KB"},
		{"1KiB", 1024, "1KiB"},
		{"3MB", 3e6, "3MB"},
		{"256MiB", 256 << 20, "256MiB"},
		{"256 MiB", 256 << 20, "256MiB"},
		{"2GB", 2e9, "2GB"},
		{"1GiB", 1 << 30, "1GiB"},
		{"1024MiB", 1 << 30, "1GiB"},
		{"1000KiB", 1024000, "1000KiB"},
		{"5TB", 5e12, "5TB"},
		{"8388607TiB", 8388607 << 40, "8388607TiB"},
		{"9223372036854775807", 1<<63 - 1, "9223372036854775807B"},
	}
	for _, tt := range good {
		got, err := parseByteSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			continue
		}
		if got.String() != tt.str {
			t.Errorf("ByteSize(%d).String() = %q, want %q", got, got.String(), tt.str)
		}
		if back, err := parseByteSize(got.String()); err != nil || back != got {
			t.Errorf("%q does not parse back to %d: %d, %v", got.String(), got, back, err)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5GiB", "1mb", "1 kib", "1K", "1 M iB", "8388608TiB", "9223372036854775808", "0x10"} {
		if got, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestExampleLoads(t *testing.T) {
	t.Parallel()
	const path = "../deploy/cacheproxy.example.yaml"
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	// The example documents the defaults: apart from its policies and pools,
	// it must say exactly what Default says.
	d := Default()
	d.PolicyList = c.PolicyList
	d.L1.Pools = c.L1.Pools
	if !reflect.DeepEqual(c, d) {
		t.Errorf("example differs from Default outside policies:\n%+v\n%+v", c, d)
	}
	s, err := c.Policies()
	if err != nil {
		t.Fatal(err)
	}
	for key, ttl := range map[string]time.Duration{"session:1": 30 * time.Second, "ratelimit:1": 0, "x": 10 * time.Second} {
		if p := s.Lookup([]byte(key)); p.TTL != ttl || p.Cache != (ttl > 0) {
			t.Errorf("example: Lookup(%q) = %+v, want ttl %v", key, *p, ttl)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load("testdata/does-not-exist.yaml")
	if err == nil || !strings.Contains(err.Error(), "config: open testdata/does-not-exist.yaml") {
		t.Errorf("Load of a missing file: %v", err)
	}
}
