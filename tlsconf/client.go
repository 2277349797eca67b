package tlsconf

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
)

// ClientConfig is the TLS of connections to a server: which CAs it trusts to
// sign the server's certificate, the name it expects in it, and the
// certificate it shows if the server asks for one.
type ClientConfig struct {
	Label string // the configuration block, for logs: "upstream_tls"
	// CAFile is a PEM bundle of the CAs that sign the server's certificate;
	// "" trusts the system's CAs. Read once, by NewClient.
	CAFile string
	// ServerName is the name the server's certificate must carry (a host
	// name, or an IP address in its IP SANs); required.
	ServerName string
	// CertFile and KeyFile are the client certificate, both or neither;
	// reloaded by Reload.
	CertFile, KeyFile string
	MinVersion        uint16 // tls.VersionTLS12 when 0
}

// Client is the TLS configuration of connections to a server.
type Client struct {
	cfg  ClientConfig
	base *tls.Config

	mu   sync.Mutex // serialises loads
	hash [sha256.Size]byte
	cur  atomic.Pointer[tls.Certificate] // nil: no client certificate
}

// NewClient loads the files: an error names the field and the file at fault.
func NewClient(c ClientConfig) (*Client, error) {
	switch {
	case c.ServerName == "":
		return nil, errors.New("tlsconf: a client needs the server's name")
	case (c.CertFile == "") != (c.KeyFile == ""):
		return nil, errors.New("tlsconf: cert_file and key_file go together")
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	cl := &Client{cfg: c}
	cl.base = &tls.Config{
		ServerName: c.ServerName,
		MinVersion: c.MinVersion,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := cl.cur.Load(); cert != nil {
				return cert, nil
			}
			return &tls.Certificate{}, nil // none: the server decides
		},
	}
	if c.CAFile != "" {
		files, _, err := read([]string{"ca_file"}, []string{c.CAFile})
		if err != nil {
			return nil, err
		}
		if cl.base.RootCAs, err = certPool(files[0]); err != nil {
			return nil, err
		}
	}
	if _, err := cl.Reload(); err != nil {
		return nil, err
	}
	return cl, nil
}

// Config is the configuration connections are made with (tls.Client, or
// go-redis's Options.TLSConfig). It stays the same across reloads: each
// handshake shows the current client certificate.
func (c *Client) Config() *tls.Config { return c.base }

// Label is the configuration block the files come from.
func (c *Client) Label() string { return c.cfg.Label }

// Current is the client certificate new connections show; nil for none.
func (c *Client) Current() *x509.Certificate {
	if cert := c.cur.Load(); cert != nil {
		return cert.Leaf
	}
	return nil
}

// Reload reads the client certificate and key again and, when their content
// changed and loads, shows it on new connections. On an error the running
// certificate stays. Without a client certificate it does nothing.
func (c *Client) Reload() (changed bool, err error) {
	if c.cfg.CertFile == "" {
		return false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	files, sum, err := read([]string{"cert_file", "key_file"}, []string{c.cfg.CertFile, c.cfg.KeyFile})
	if err != nil {
		return false, err
	}
	if c.cur.Load() != nil && sum == c.hash {
		return false, nil
	}
	pair, err := keyPair(files[0], files[1])
	if err != nil {
		return false, err
	}
	c.cur.Store(pair)
	c.hash = sum
	return true, nil
}
