package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

// mainProcess runs main in a child process with args and returns its stdout,
// its stderr and its exit code.
func mainProcess(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runAsMain+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestHelpAndVersion: --help and --version print on stdout and exit 0 without
// starting anything; a flag that does not exist exits 1 and says where the
// flags are listed.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h"} {
		out, errs, code := mainProcess(t, arg)
		if code != 0 || errs != "" {
			t.Errorf("%s: exit %d, stderr %q; want 0 and nothing", arg, code, errs)
		}
		for _, want := range []string{"usage: cacheproxy", "-config", "-listen", "-upstream", "-metrics", "-version"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: the usage lacks %q:\n%s", arg, want, out)
			}
		}
	}
	out, errs, code := mainProcess(t, "--version", "--listen", "nowhere")
	if code != 0 || errs != "" || !strings.HasPrefix(out, "cacheproxy ") || !strings.Contains(out, "go1.") {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	out, errs, code = mainProcess(t, "--no-such-flag")
	if code != 1 || out != "" || !strings.Contains(errs, "no-such-flag") || !strings.Contains(errs, "--help") {
		t.Errorf("--no-such-flag: exit %d, stdout %q, stderr %q; want 1 and an error naming the flag and --help", code, out, errs)
	}
}

// TestVersionFromLdflags: a release build names its version with
// -ldflags "-X main.version=...".
func TestVersionFromLdflags(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "cacheproxy")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v1.2.3-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "cacheproxy v1.2.3-test (") {
		t.Errorf("--version = %q", out)
	}
}

// TestJSONLogsOnly: with log.format json every line on stderr is JSON, go-redis's
// own complaints (here, dials to an upstream that refuses them) included.
func TestJSONLogsOnly(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t, redistest.Options{})
	r.Stop() // refuses connections until restarted on its port
	p := &proc{t: t, redis: r, listen: freeAddr(t), metrics: freeAddr(t), file: filepath.Join(t.TempDir(), "c.yaml"), logs: &syncbuf.Buffer{}}
	p.writeConfig("log:\n  format: json\npolicies:\n  - {prefix: \"\", ttl: 1m}\n")
	cmd := exec.Command(os.Args[0], "--config", p.file)
	cmd.Env = append(os.Environ(), runAsMain+"=1")
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // fails harmlessly once it has exited
		<-exited
	})
	waitFor(t, 10*time.Second, "go-redis's dial failure", p.logs, func() bool {
		return strings.Contains(p.logs.String(), `"component":"go-redis"`)
	})
	r.Restart()
	waitReady(t, p.metrics, p.logs)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("after SIGTERM: %v; log:\n%s", err, p.logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20s of SIGTERM; log:\n%s", p.logs)
	}
	lines := strings.Split(strings.TrimSuffix(p.logs.String(), "\n"), "\n")
	redisLines := 0
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not JSON: %q", line)
			continue
		}
		if rec["component"] == "go-redis" {
			redisLines++
			if rec["level"] != "WARN" || strings.HasPrefix(rec["msg"].(string), "redis: ") {
				t.Errorf("go-redis line %q: want level WARN and the message without go-redis's prefix", line)
			}
		}
	}
	if redisLines == 0 || len(lines) < 5 {
		t.Errorf("%d lines, %d from go-redis:\n%s", len(lines), redisLines, p.logs)
	}
}
