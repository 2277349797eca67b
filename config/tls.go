package config

import (
	"fmt"
	"strings"
)

// TLS is the proxy's TLS port for clients, served beside the plain listen
// port (as Redis's tls-port beside port). The certificate files are read
// again when their content changes (polled every config_poll) and on SIGHUP:
// new connections get the new certificate, established ones keep theirs.
type TLS struct {
	Listen string `yaml:"listen"` // host:port of the TLS port; "" serves no TLS
	// CertFile is the server's PEM certificate chain, leaf first, and
	// KeyFile its private key; both required with Listen.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile is a PEM bundle of the CAs whose client certificates are
	// accepted (mutual TLS); "" asks clients for none.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth, with ClientCAFile, is "require" (a client without a
	// certificate is refused) or "optional" (one shown must verify).
	ClientAuth string `yaml:"client_auth"`
	MinVersion string `yaml:"min_version"` // "1.2" or "1.3"
}

// UpstreamTLS is how the proxy speaks TLS to a rediss:// upstream, on every
// connection it makes: client commands' and the invalidation stream's.
type UpstreamTLS struct {
	// CAFile is a PEM bundle of the CAs that sign the upstream's
	// certificate; "" trusts the system's CAs.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name the upstream's certificate must carry; "" means
	// the upstream URL's host.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile are the client certificate the proxy shows when
	// Redis asks for one (tls-auth-clients), both or neither.
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	MinVersion string `yaml:"min_version"` // "1.2" or "1.3"
}

func (c *Config) validateTLS() []fieldError {
	var errs []fieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, fieldError{path, fmt.Sprintf(format, args...)})
	}
	t := c.TLS
	if t.Listen != "" {
		switch msg := checkHostPort(t.Listen); {
		case msg != "":
			add("tls.listen", `%s (e.g. 127.0.0.1:6381, or "" for no TLS port)`, msg)
		case hasPortZero(t.Listen):
		case t.Listen == c.Listen:
			add("tls.listen", "%q is also the listen address: the TLS port needs one of its own", t.Listen)
		case t.Listen == c.Metrics:
			add("tls.listen", "%q is also the metrics address", t.Listen)
		}
		if t.CertFile == "" {
			add("tls.cert_file", "is required with tls.listen (a PEM certificate chain)")
		}
		if t.KeyFile == "" {
			add("tls.key_file", "is required with tls.listen (the certificate's PEM private key)")
		}
	} else {
		for _, f := range []struct{ path, v string }{
			{"tls.cert_file", t.CertFile}, {"tls.key_file", t.KeyFile}, {"tls.client_ca_file", t.ClientCAFile},
		} {
			if f.v != "" {
				add(f.path, "is set but tls.listen is empty: give the TLS port an address, or remove it")
			}
		}
	}
	switch t.ClientAuth {
	case "require", "optional":
	default:
		add("tls.client_auth", "%q is not one of require, optional", t.ClientAuth)
	}
	if !validVersion(t.MinVersion) {
		add("tls.min_version", `%q is not one of "1.2", "1.3"`, t.MinVersion)
	}

	u := c.UpstreamTLS
	if !strings.HasPrefix(string(c.Upstream), "rediss://") {
		for _, f := range []struct{ path, v string }{
			{"upstream_tls.ca_file", u.CAFile}, {"upstream_tls.server_name", u.ServerName},
			{"upstream_tls.cert_file", u.CertFile}, {"upstream_tls.key_file", u.KeyFile},
		} {
			if f.v != "" {
				add(f.path, "is set but upstream is not a rediss:// URL: the proxy would not use TLS")
			}
		}
	}
	if (u.CertFile == "") != (u.KeyFile == "") {
		add("upstream_tls.cert_file", "and upstream_tls.key_file go together: give both, or neither")
	}
	if !validVersion(u.MinVersion) {
		add("upstream_tls.min_version", `%q is not one of "1.2", "1.3"`, u.MinVersion)
	}
	return errs
}

func validVersion(v string) bool { return v == "1.2" || v == "1.3" }
