package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/cacheproxy/cacheproxy/config"
	"github.com/cacheproxy/cacheproxy/proxy"
)

// reloader applies a changed configuration file to the running proxy, on
// SIGHUP and when polling finds the file's content changed. A reload changes
// the policies and log.level; any other setting that changed is logged as
// waiting for a restart. A file that does not load, or whose policies the
// running proxy cannot apply, is rejected with its error logged, and the
// running policies stay.
type reloader struct {
	flags   *flags
	running *config.Config // the startup config, with the policies and level of the last reload applied
	level   *slog.LevelVar
	srv     *proxy.Server
	metrics *proxy.Metrics
	log     *slog.Logger
	// tracked are the prefixes tracking mode was started with; nil in
	// keyspace mode, which is told of every key.
	tracked []string

	seen    [sha256.Size]byte // the content last loaded or rejected
	readErr string            // the read error polling last logged
}

func (r *reloader) run(ctx context.Context, hup <-chan os.Signal) {
	if data, err := os.ReadFile(r.flags.file); err == nil {
		r.seen = sha256.Sum256(data)
	}
	var tick <-chan time.Time
	if r.flags.file != "" && r.running.ConfigPoll > 0 {
		t := time.NewTicker(r.running.ConfigPoll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload("SIGHUP")
		case <-tick:
			r.poll()
		}
	}
}

// poll reloads when the file's content differs from what was last seen.
func (r *reloader) poll() {
	data, err := os.ReadFile(r.flags.file)
	if err != nil {
		// An editor or a ConfigMap update may replace the file under us:
		// say so once, and try again next time.
		if msg := err.Error(); msg != r.readErr {
			r.readErr = msg
			r.log.Warn("config file unreadable; the running configuration stays", "err", err)
		}
		return
	}
	r.readErr = ""
	if sha256.Sum256(data) == r.seen {
		return
	}
	r.apply("file changed", data)
}

func (r *reloader) reload(trigger string) {
	if r.flags.file == "" {
		r.log.Warn("nothing to reload: the proxy runs without --config", "trigger", trigger)
		return
	}
	data, err := os.ReadFile(r.flags.file)
	if err != nil {
		r.reject(trigger, fmt.Errorf("config: %w", err))
		return
	}
	r.apply(trigger, data)
}

func (r *reloader) apply(trigger string, data []byte) {
	r.seen = sha256.Sum256(data)
	cfg, err := r.flags.parse(data)
	if err != nil {
		r.reject(trigger, err)
		return
	}
	if err := r.checkTracked(cfg); err != nil {
		r.reject(trigger, err)
		return
	}
	pols, err := cfg.Policies()
	if err != nil {
		r.reject(trigger, err)
		return
	}
	dropped, err := r.srv.SetPolicies(pols)
	if err != nil {
		r.reject(trigger, fmt.Errorf("%w (pools are made at start: adding one needs a restart)", err))
		return
	}
	setLevel(r.level, cfg.Log.Level)
	r.srv.LogLevelChanged()
	restart := needsRestart(r.running, cfg)
	r.running.PolicyList, r.running.Log.Level = cfg.PolicyList, cfg.Log.Level
	r.metrics.Reloaded(true)
	r.log.Info("configuration reloaded", "trigger", trigger, "policies", len(cfg.PolicyList),
		"dropped_entries_of", quoted(dropped), "log_level", cfg.Log.Level)
	if len(restart) > 0 {
		r.log.Warn("reloaded file changes settings that take effect only after a restart; they are ignored until then",
			"settings", strings.Join(restart, ", "))
	}
}

func (r *reloader) reject(trigger string, err error) {
	r.metrics.Reloaded(false)
	r.log.Error("configuration reload rejected; the running policies stay", "trigger", trigger, "file", r.flags.file, "err", err)
}

// checkTracked refuses policies that would cache keys tracking mode is not
// told about: their writes made elsewhere would never reach the L1.
func (r *reloader) checkTracked(cfg *config.Config) error {
	if r.tracked == nil {
		return nil
	}
	for i, p := range cfg.PolicyList {
		if p.TTL == 0 || p.Cache != nil && !*p.Cache {
			continue
		}
		covered := false
		for _, t := range r.tracked {
			covered = covered || strings.HasPrefix(p.Prefix, t)
		}
		if !covered {
			return fmt.Errorf("config %s: policies[%d].prefix: %q is outside the prefixes tracking mode was started with (%s): caching it needs a restart",
				r.flags.file, i, p.Prefix, quoted(r.tracked))
		}
	}
	return nil
}

// needsRestart names the top-level settings (as written in the file) that
// differ between the running config and cfg, apart from what a reload applies.
func needsRestart(running, cfg *config.Config) []string {
	a, b := *running, *cfg
	b.PolicyList, b.Log.Level = a.PolicyList, a.Log.Level
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			name, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("yaml"), ",")
			out = append(out, name)
		}
	}
	return out
}

func quoted(ss []string) string {
	var b bytes.Buffer
	for i, s := range ss {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", s)
	}
	return b.String()
}
