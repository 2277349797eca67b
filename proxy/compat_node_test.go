package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestNodeClient replays framework patterns (sessions, a rate limiter in MULTI
// and in a pipeline, SCAN MATCH + DEL, INCR versions, a lock released by a
// script, pub/sub, list queues, a stream consumer group) with ioredis through
// the proxy, which requires a password. testdata/node holds the script and the
// locked dependencies; they are installed with npm ci into the user's cache
// directory, once per lockfile.
func TestNodeClient(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed; the Node.js client test needs Node.js 18.19 or later and npm (Debian: apt-get install -y nodejs npm): %v", tool, err)
		}
	}
	modules := installNodeModules(t)
	e := startEnv(t, envOptions{options: func(o *Options) { o.RequirePass = "node-secret" }})
	e.waitSubscribed()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("testdata", "node", "patterns.js"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "REDIS_URL=redis://:node-secret@"+e.addr+"/0")
	out, err := cmd.CombinedOutput()
	t.Logf("node:\n%s", out)
	if err != nil {
		t.Fatalf("node %s: %v", script, err)
	}
}

// TestNodeRedisRESP3 runs node-redis (the redis package) in RESP3 through the
// proxy, which requires a password: strings, a hash as a RESP3 map, MULTI/EXEC
// and WATCH, pub/sub on RESP3 connections, a write made on Redis directly seen
// through the proxy, and node-redis's client-side cache, which relies on the
// proxy's CLIENT TRACKING and its invalidation pushes.
func TestNodeRedisRESP3(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed; the Node.js client test needs Node.js 18.19 or later and npm (Debian: apt-get install -y nodejs npm): %v", tool, err)
		}
	}
	modules := installNodeModules(t)
	e := startEnv(t, envOptions{options: func(o *Options) { o.RequirePass = "node-secret" }})
	e.waitSubscribed()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("testdata", "node", "node-redis.js"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules,
		"PROXY_URL=redis://default:node-secret@"+e.addr+"/0",
		"REDIS_URL=redis://"+e.redis.Addr()+"/0")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("node (%v):\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("node %s: %v", script, err)
	}
}

// installNodeModules runs npm ci for testdata/node into a cache directory
// named after the lockfile's hash, unless an earlier run did, and returns its
// node_modules.
func installNodeModules(t *testing.T) string {
	t.Helper()
	src := filepath.Join("testdata", "node")
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile(filepath.Join(src, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(append([]byte(nil), manifest...), lock...))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "cacheproxy-node-test", hex.EncodeToString(sum[:8]))
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, ".package-lock.json")); err == nil {
		return modules
	}
	// Install beside the final place and rename, so that a run cut short or
	// one running alongside never sees half an install.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for name, b := range map[string][]byte{"package.json": manifest, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", tmp, err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(modules, ".package-lock.json")); statErr != nil {
			t.Fatal(err)
		}
	}
	return modules
}
