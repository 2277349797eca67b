// Package sentinel follows the master that Redis Sentinel names, as Redis's
// guidelines for Sentinel clients describe: ask the sentinels in turn for the
// master's address (SENTINEL get-master-addr-by-name), check that the node
// there really is a master (ROLE), and then watch for a change.
//
// A Watcher subscribes to +switch-master on one sentinel and re-asks the
// address whenever one is published for its master, every CheckInterval,
// and after every (re)connection to a sentinel, since messages published
// while it was not subscribed are lost. When a sentinel goes away it moves
// on to the next. A new address is followed only once its node answers ROLE
// as a master; the Watcher then calls its switch function, which moves the
// proxy's connections (see upstream.Target) and flushes what it cached.
package sentinel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config configures Resolve and a Watcher.
type Config struct {
	URL *URL // the sentinels, the master's name and the credentials; required
	// CheckInterval is how often the address is re-asked while no message
	// comes. 0 means 1s.
	CheckInterval time.Duration
	// Timeout bounds each exchange with a sentinel or a node. 0 means 2s.
	Timeout time.Duration
	// Logger receives switches and sentinel failures. Nil means
	// slog.Default().
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.CheckInterval <= 0 {
		c.CheckInterval = time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Resolve asks each sentinel in turn for the master's address and returns
// the first one whose node answers as a master.
func Resolve(ctx context.Context, cfg Config) (string, error) {
	cfg.defaults()
	var errs []error
	for _, s := range cfg.URL.Sentinels {
		sc := redis.NewSentinelClient(sentinelOptions(&cfg, s))
		addr, err := ask(ctx, &cfg, sc)
		sc.Close()
		if err == nil {
			err = verify(ctx, &cfg, addr)
		}
		if err == nil {
			return addr, nil
		}
		errs = append(errs, fmt.Errorf("sentinel %s: %w", s, err))
	}
	return "", fmt.Errorf("no sentinel named a master %q: %w", cfg.URL.Master, errors.Join(errs...))
}

// Watcher follows the master. Create it with NewWatcher, start it with Run.
type Watcher struct {
	cfg      Config
	onSwitch func(from, to string)
	log      *slog.Logger

	mu   sync.Mutex // guards addr
	addr string
}

// NewWatcher returns a Watcher that starts at addr (from Resolve) and calls
// onSwitch, from Run's goroutine, each time the master moves.
func NewWatcher(cfg Config, addr string, onSwitch func(from, to string)) *Watcher {
	cfg.defaults()
	return &Watcher{cfg: cfg, onSwitch: onSwitch, addr: addr,
		log: cfg.Logger.With("component", "sentinel", "master", cfg.URL.Master)}
}

// Addr is the master's address as last followed.
func (w *Watcher) Addr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.addr
}

// Run follows the master until ctx is done, then returns nil.
func (w *Watcher) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		for _, s := range w.cfg.URL.Sentinels {
			start := time.Now()
			err := w.follow(ctx, s)
			if ctx.Err() != nil {
				return nil
			}
			w.log.Warn("lost the sentinel; trying the next", "sentinel", s, "err", err)
			if time.Since(start) > 10*time.Second {
				backoff = 100 * time.Millisecond
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// switchMaster is the channel sentinels announce a failover's end on:
// "<name> <old-ip> <old-port> <new-ip> <new-port>".
const switchMaster = "+switch-master"

// follow subscribes to one sentinel and checks the master's address at
// once, on every +switch-master for it, and every CheckInterval. It returns
// when the sentinel fails.
func (w *Watcher) follow(ctx context.Context, s string) error {
	sc := redis.NewSentinelClient(sentinelOptions(&w.cfg, s))
	defer sc.Close()
	ps := sc.Subscribe(ctx, switchMaster)
	defer ps.Close()
	msg, err := ps.ReceiveTimeout(ctx, w.cfg.Timeout)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", switchMaster, err)
	}
	if _, ok := msg.(*redis.Subscription); !ok {
		return fmt.Errorf("subscribe %s: unexpected %T", switchMaster, msg)
	}
	// Whatever was published before now is lost: ask.
	pending, err := w.check(ctx, sc)
	if err != nil {
		return err
	}
	for {
		wait := w.cfg.CheckInterval
		if pending {
			wait = min(wait, 100*time.Millisecond)
		}
		msg, err := ps.ReceiveTimeout(ctx, wait)
		var ne net.Error
		switch {
		case err != nil && errors.As(err, &ne) && ne.Timeout():
		case err != nil:
			return fmt.Errorf("receive: %w", err)
		default:
			m, ok := msg.(*redis.Message)
			if !ok || !strings.HasPrefix(m.Payload, w.cfg.URL.Master+" ") {
				continue
			}
			w.log.Info("sentinel announced a failover", "sentinel", s, "message", m.Payload)
		}
		if pending, err = w.check(ctx, sc); err != nil {
			return err
		}
	}
}

// check asks the sentinel for the master and switches to it if it moved and
// answers as a master. pending reports a move not followed yet.
func (w *Watcher) check(ctx context.Context, sc *redis.SentinelClient) (pending bool, err error) {
	addr, err := ask(ctx, &w.cfg, sc)
	if err != nil {
		return false, err
	}
	from := w.Addr()
	if addr == from {
		return false, nil
	}
	if err := verify(ctx, &w.cfg, addr); err != nil {
		w.log.Warn("the sentinel names a new master that is not ready; staying", "master_addr", from, "named", addr, "err", err)
		return true, nil
	}
	w.mu.Lock()
	w.addr = addr
	w.mu.Unlock()
	w.log.Warn("upstream master moved", "from", from, "to", addr)
	w.onSwitch(from, addr)
	return false, nil
}

// ask returns the master's address as the sentinel knows it.
func ask(ctx context.Context, cfg *Config, sc *redis.SentinelClient) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	hp, err := sc.GetMasterAddrByName(ctx, cfg.URL.Master).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("the sentinel does not monitor a master named %q", cfg.URL.Master)
	}
	if err != nil {
		return "", fmt.Errorf("SENTINEL get-master-addr-by-name: %w", err)
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("SENTINEL get-master-addr-by-name: unexpected reply %q", hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// verify checks that the node at addr is a master: a node the sentinels
// have not reconfigured yet could still be a replica.
func verify(ctx context.Context, cfg *Config, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{
		Addr: addr, Username: cfg.URL.Username, Password: cfg.URL.Password,
		Protocol: 2, MaxRetries: -1, DialTimeout: cfg.Timeout, DialerRetries: 1, PoolSize: 1,
		DisableIdentity: true,
	})
	defer c.Close()
	role, err := c.Do(ctx, "ROLE").Slice()
	if err == nil {
		if len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("%s is not a master: ROLE says %v", addr, role)
		}
		return nil
	}
	// ROLE may be denied by an ACL; INFO says the same.
	info, ierr := c.Info(ctx, "replication").Result()
	if ierr != nil {
		return fmt.Errorf("%s: ROLE: %v; INFO replication: %w", addr, err, ierr)
	}
	if !strings.Contains(info, "role:master\r\n") {
		return fmt.Errorf("%s is not a master (INFO replication)", addr)
	}
	return nil
}

func sentinelOptions(cfg *Config, addr string) *redis.Options {
	return &redis.Options{
		Addr: addr, Username: cfg.URL.SentinelUsername, Password: cfg.URL.SentinelPassword,
		Protocol: 2, MaxRetries: -1, DialTimeout: cfg.Timeout, DialerRetries: 1,
		ReadTimeout: cfg.Timeout, WriteTimeout: cfg.Timeout, PoolSize: 2,
		DisableIdentity: true,
	}
}
