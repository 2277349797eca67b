package deploy

import (
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/localnet"
	"github.com/cacheproxy/cacheproxy/internal/redistest"
	"github.com/cacheproxy/cacheproxy/internal/syncbuf"
)

// TestRunLocal runs deploy/run-local.sh (what make run runs) on free ports and
// stops it with a signal: the proxy drains and exits 0, and the redis-server
// the script started is gone with it, while a Redis the script found running is
// left alone.
func TestRunLocal(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed (apt-get install -y redis-server)")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "cacheproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/cacheproxy").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("SIGINT stops the Redis it started", func(t *testing.T) {
		if signal.Ignored(syscall.SIGINT) {
			t.Skip("this test process was started with SIGINT ignored, and so would the script be; the SIGTERM case stands for it")
		}
		t.Parallel()
		runLocal(t, bin, syscall.SIGINT, nil)
	})
	t.Run("SIGTERM stops the Redis it started", func(t *testing.T) {
		t.Parallel()
		runLocal(t, bin, syscall.SIGTERM, nil)
	})
	t.Run("a Redis already running is left alone", func(t *testing.T) {
		t.Parallel()
		runLocal(t, bin, syscall.SIGTERM, redistest.Start(t, redistest.Options{}))
	})
}

var reStarted = regexp.MustCompile(`started redis-server on \S+ \(pid (\d+)`)

// runLocal runs the script with the proxy on free ports in front of r, or of
// a Redis the script starts when r is nil, waits for the proxy to be ready, and
// stops the script with sig.
func runLocal(t *testing.T, bin string, sig syscall.Signal, r *redistest.Server) {
	free := func() string {
		addr, err := localnet.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		return addr
	}
	// The ports are free when picked, but other tests (a cluster's nodes
	// and buses) may take one before the script binds it: try again with
	// new ones when a bind lost that race (bounded).
	var (
		redisAddr, listen, metrics, tmp string
		cmd                             *exec.Cmd
		logs                            *syncbuf.Buffer
		exited                          chan error
	)
	for attempt := 1; ; attempt++ {
		redisAddr = free()
		if r != nil {
			redisAddr = r.Addr()
		}
		listen, metrics = free(), free()
		_, port, _ := strings.Cut(redisAddr, ":")
		cmd = exec.Command("./run-local.sh", bin, "cacheproxy.example.yaml", "--listen", listen, "--metrics", metrics)
		tmp = t.TempDir() // the script's mktemp makes Redis's directory here
		cmd.Env = append(os.Environ(), "REDIS_PORT="+port, "TMPDIR="+tmp)
		logs = &syncbuf.Buffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited = make(chan error, 1)
		thisCmd, thisExited := cmd, exited
		go func() { thisExited <- thisCmd.Wait() }()
		t.Cleanup(func() {
			select {
			case err := <-thisExited:
				thisExited <- err
			default:
				_ = thisCmd.Process.Signal(syscall.SIGTERM)
				<-thisExited
			}
		})
		if ready(metrics, exited) {
			break
		}
		if !strings.Contains(strings.ToLower(logs.String()), "address already in use") || attempt == 3 {
			t.Fatalf("the proxy was not ready within 20s; output:\n%s", logs)
		}
	}
	pid := 0
	if m := reStarted.FindStringSubmatch(logs.String()); m != nil {
		pid, _ = strconv.Atoi(m[1])
	}
	if (pid != 0) != (r == nil) {
		t.Fatalf("redis-server started by the script: pid %d; want one only when none ran; output:\n%s", pid, logs)
	}

	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("after %v: %v (want exit 0, the proxy's); output:\n%s", sig, err, logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the script did not exit within 20s of %v; output:\n%s", sig, logs)
	}
	if !strings.Contains(logs.String(), "every client drained") {
		t.Errorf("the proxy did not drain (the signal did not reach it once); output:\n%s", logs)
	}
	if r != nil {
		if err := localnet.Ping(redisAddr); err != nil {
			t.Errorf("the script stopped a Redis it did not start: %v", err)
		}
		return
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Errorf("redis-server (pid %d) still runs after the script exited (kill 0: %v); output:\n%s", pid, err, logs)
	}
	if localnet.Ping(redisAddr) == nil {
		t.Errorf("a Redis still answers at %s", redisAddr)
	}
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "*")); len(dirs) != 0 {
		t.Errorf("the script left %v behind", dirs)
	}
}

// ready waits until the proxy's /readyz answers 200 (true), or the script
// exits or 20s pass (false).
func ready(metrics string, exited chan error) bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + metrics + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case err := <-exited:
			exited <- err
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}
