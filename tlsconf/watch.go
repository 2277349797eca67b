package tlsconf

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"time"
)

// Source is what Watch reloads: a Server or a Client.
type Source interface {
	Reload() (changed bool, err error)
	Current() *x509.Certificate
	Label() string
}

var (
	_ Source = (*Server)(nil)
	_ Source = (*Client)(nil)
)

// Watch reloads every source each poll (0: never) and on each value from hup,
// until ctx ends. A new certificate is logged at info; one that does not load
// is logged as an error, and its source keeps the certificate it has. Polling
// logs the same error once, until it changes; hup logs it every time.
func Watch(ctx context.Context, poll time.Duration, hup <-chan os.Signal, log *slog.Logger, srcs ...Source) {
	var tick <-chan time.Time
	if poll > 0 {
		t := time.NewTicker(poll)
		defer t.Stop()
		tick = t.C
	}
	last := make([]string, len(srcs)) // the error polling last logged, per source
	reload := func(trigger string) {
		for i, s := range srcs {
			changed, err := s.Reload()
			switch {
			case err != nil:
				if trigger == "poll" && err.Error() == last[i] {
					continue
				}
				last[i] = err.Error()
				log.Error("TLS certificate reload failed; the running certificate stays",
					"config", s.Label(), "trigger", trigger, "err", err, "running", Describe(s.Current()))
			case changed:
				last[i] = ""
				log.Info("TLS certificate reloaded", "config", s.Label(), "trigger", trigger, "certificate", Describe(s.Current()))
			default:
				last[i] = ""
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			reload("SIGHUP")
		case <-tick:
			reload("poll")
		}
	}
}
