package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheproxy/cacheproxy/config"
	"github.com/cacheproxy/cacheproxy/tlsconf"
)

// serverTLS loads the TLS port's certificate files; nil without tls.listen.
func serverTLS(cfg *config.Config) (*tlsconf.Server, error) {
	t := cfg.TLS
	if t.Listen == "" {
		return nil, nil
	}
	v, err := tlsconf.ParseVersion(t.MinVersion)
	if err != nil {
		return nil, fmt.Errorf("tls.min_version: %w", err)
	}
	s, err := tlsconf.NewServer(tlsconf.ServerConfig{
		Label:             "tls",
		CertFile:          t.CertFile,
		KeyFile:           t.KeyFile,
		ClientCAFile:      t.ClientCAFile,
		RequireClientCert: t.ClientCAFile != "" && t.ClientAuth == "require",
		MinVersion:        v,
	})
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return s, nil
}

// upstreamTLS loads upstream_tls's files for a rediss:// upstream and sets
// opts.TLSConfig, which every upstream connection then uses: go-redis's and
// the pools'. It returns nil for a redis:// upstream (no TLSConfig).
func upstreamTLS(cfg *config.Config, opts *redis.Options) (*tlsconf.Client, error) {
	if opts.TLSConfig == nil {
		return nil, nil
	}
	u := cfg.UpstreamTLS
	name := u.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(opts.Addr)
	}
	v, err := tlsconf.ParseVersion(u.MinVersion)
	if err != nil {
		return nil, fmt.Errorf("upstream_tls.min_version: %w", err)
	}
	c, err := tlsconf.NewClient(tlsconf.ClientConfig{
		Label:      "upstream_tls",
		CAFile:     u.CAFile,
		ServerName: name,
		CertFile:   u.CertFile,
		KeyFile:    u.KeyFile,
		MinVersion: v,
	})
	if err != nil {
		return nil, fmt.Errorf("upstream_tls: %w", err)
	}
	opts.TLSConfig = c.Config()
	return c, nil
}

// listen opens the plain port (unless listen is "") and the TLS port (with
// st, unless nil).
func listen(cfg *config.Config, st *tlsconf.Server, log *slog.Logger) ([]net.Listener, error) {
	var lns []net.Listener
	if cfg.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		log.Info("listening", "addr", ln.Addr().String())
		lns = append(lns, ln)
	}
	if st != nil {
		ln, err := net.Listen("tcp", cfg.TLS.Listen)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("tls.listen: %w", err)
		}
		log.Info("listening for TLS", "addr", ln.Addr().String(), "certificate", tlsconf.Describe(st.Current()),
			"client_certificates", clientAuth(cfg.TLS))
		lns = append(lns, tls.NewListener(ln, st.Config()))
	}
	return lns, nil
}

func clientAuth(t config.TLS) string {
	if t.ClientCAFile == "" {
		return "none"
	}
	return t.ClientAuth
}

// tlsRefused explains an upstream TLS failure that retrying cannot cure (a
// certificate that does not verify, a client certificate Redis refuses, a
// server that does not speak TLS), naming the setting to look at; "" for any
// other error.
func tlsRefused(err error, cfg *config.Config) string {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknown):
		if cfg.UpstreamTLS.CAFile == "" {
			return "the system's CAs do not trust the upstream's certificate: set upstream_tls.ca_file"
		}
		return fmt.Sprintf("upstream_tls.ca_file %q does not hold the CA of the upstream's certificate", cfg.UpstreamTLS.CAFile)
	case errors.As(err, &hostname):
		return "the upstream's certificate does not carry the name the proxy expects: see upstream_tls.server_name"
	case errors.As(err, &invalid):
		return "the upstream's certificate is not valid (expired, or not for servers)"
	case errors.As(err, &record):
		return "the upstream does not speak TLS: use a redis:// URL, or its TLS port"
	case strings.Contains(err.Error(), "remote error: tls: "):
		return "the upstream refused the proxy's TLS handshake: see upstream_tls.cert_file and upstream_tls.min_version"
	}
	return ""
}

// watchTLS reloads the certificate files every poll (config_poll) and on
// SIGHUP, until ctx ends.
func watchTLS(ctx context.Context, poll time.Duration, log *slog.Logger, st *tlsconf.Server, ut *tlsconf.Client) {
	var srcs []tlsconf.Source
	if st != nil {
		srcs = append(srcs, st)
	}
	if ut != nil && ut.Current() != nil {
		srcs = append(srcs, ut)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tlsconf.Watch(ctx, poll, hup, log, srcs...)
}
