package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cacheproxy/cacheproxy/internal/localnet"
)

const (
	startTimeout = 15 * time.Second
	stopTimeout  = 5 * time.Second
)

// process is a server the suite started. Its output goes to a log file so that
// a failure can show why.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once the process has been reaped
}

// startProcess runs argv with its output in logPath. The process is killed if
// bench itself dies (see childAttr), and otherwise by stop.
func startProcess(name, logPath string, argv []string) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop asks the process to end, kills it if it does not within stopTimeout,
// and returns once it is reaped.
func (p *process) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// logTail is the last lines of the process's output, for error messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(b) == 0 {
		return "(no output)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// waitReady waits until addr answers PING, failing early if the process exits.
func (p *process) waitReady(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var last error
	for {
		if last = localnet.Ping(addr); last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before answering PING on %s; its output:\n%s", p.name, addr, p.logTail())
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%s did not answer PING on %s within %v (%v); its output:\n%s", p.name, addr, startTimeout, last, p.logTail())
			}
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// launcher starts servers on free loopback ports, their logs and files in a
// temporary dir, and stops them all, last started first, and removes dir.
type launcher struct {
	ctx   context.Context
	dir   string
	procs []*process
}

// newLauncher makes a launcher whose dir is a new temporary directory named
// after cmd; close stops what it started and removes the directory.
func newLauncher(ctx context.Context, cmd string) (*launcher, error) {
	dir, err := os.MkdirTemp("", "bench-"+cmd+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return &launcher{ctx: ctx, dir: dir}, nil
}

// start runs the server argv(addr) returns for a free address and waits until
// it answers PING there, trying up to three addresses (another process may take
// a free port first).
func (l *launcher) start(name string, argv func(addr string) ([]string, error)) (string, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var addr string
		var args []string
		if addr, err = localnet.FreeAddr(); err != nil {
			return "", err
		}
		if args, err = argv(addr); err != nil {
			return "", err
		}
		var p *process
		if p, err = startProcess(name, filepath.Join(l.dir, name+".log"), args); err != nil {
			return "", err
		}
		l.procs = append(l.procs, p)
		if err = p.waitReady(l.ctx, addr); err == nil {
			return addr, nil
		}
		p.stop()
		if l.ctx.Err() != nil {
			return "", l.ctx.Err()
		}
	}
	return "", err
}

// startRedis starts a redis-server that keeps nothing on disk.
func (l *launcher) startRedis(redisPath string) (string, error) {
	return l.start("redis-server", func(addr string) ([]string, error) {
		_, port, _ := strings.Cut(addr, ":")
		return []string{redisPath, "--port", port, "--bind", "127.0.0.1", "--dir", l.dir,
			"--notify-keyspace-events", "KEA", "--save", "", "--appendonly", "no", "--daemonize", "no"}, nil
	})
}

// last is the process started last.
func (l *launcher) last() *process { return l.procs[len(l.procs)-1] }

func (l *launcher) close() {
	for i := len(l.procs) - 1; i >= 0; i-- {
		l.procs[i].stop()
	}
	os.RemoveAll(l.dir)
}
