package tlsconf

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
)

// ServerConfig is a listener's TLS: its certificate, and the CA that signs
// the client certificates it accepts, if it asks for any.
type ServerConfig struct {
	Label    string // the configuration block, for logs: "tls"
	CertFile string // PEM certificate chain, leaf first; required
	KeyFile  string // PEM private key of the leaf; required
	// ClientCAFile is a PEM bundle of the CAs whose client certificates are
	// accepted; "" asks clients for no certificate.
	ClientCAFile string
	// RequireClientCert refuses a client that shows no certificate; without
	// it a client may show none, but one it shows must verify. Only with
	// ClientCAFile.
	RequireClientCert bool
	MinVersion        uint16 // tls.VersionTLS12 when 0
}

// Server is a listener's TLS configuration, reloaded from its files by Reload.
// Handshakes use what the last successful load read; connections already
// established keep the certificate they were made with.
type Server struct {
	cfg  ServerConfig
	base *tls.Config // what listeners get; its GetConfigForClient reads cur

	mu   sync.Mutex        // serialises loads
	hash [sha256.Size]byte // of the files' content at the last successful load
	cur  atomic.Pointer[tls.Config]
}

// NewServer loads the files: an error names the field and the file at fault.
func NewServer(c ServerConfig) (*Server, error) {
	switch {
	case c.CertFile == "" || c.KeyFile == "":
		return nil, errors.New("tlsconf: a server needs cert_file and key_file")
	case c.RequireClientCert && c.ClientCAFile == "":
		return nil, errors.New("tlsconf: requiring client certificates needs client_ca_file")
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	s := &Server{cfg: c}
	s.base = &tls.Config{
		MinVersion: c.MinVersion,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load(), nil
		},
	}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Config is the configuration to give tls.NewListener. It stays the same
// across reloads: each handshake picks the current certificate.
func (s *Server) Config() *tls.Config { return s.base }

// Label is the configuration block the files come from.
func (s *Server) Label() string { return s.cfg.Label }

// Current is the leaf certificate new connections are served with.
func (s *Server) Current() *x509.Certificate {
	return s.cur.Load().Certificates[0].Leaf
}

// Reload reads the files again and, when their content changed and loads,
// serves new connections with it. On an error the running certificate and
// client CA stay.
func (s *Server) Reload() (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	files, sum, err := read([]string{"cert_file", "key_file", "client_ca_file"},
		[]string{s.cfg.CertFile, s.cfg.KeyFile, s.cfg.ClientCAFile})
	if err != nil {
		return false, err
	}
	if s.cur.Load() != nil && sum == s.hash {
		return false, nil
	}
	pair, err := keyPair(files[0], files[1])
	if err != nil {
		return false, err
	}
	next := &tls.Config{
		MinVersion:   s.cfg.MinVersion,
		Certificates: []tls.Certificate{*pair},
	}
	if s.cfg.ClientCAFile != "" {
		if next.ClientCAs, err = certPool(files[2]); err != nil {
			return false, err
		}
		next.ClientAuth = tls.VerifyClientCertIfGiven
		if s.cfg.RequireClientCert {
			next.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	s.cur.Store(next)
	s.hash = sum
	return true, nil
}
