// Package tlsconf turns certificate files into TLS configurations that follow
// the files: the proxy's listener (Server) and its connections to Redis
// (Client). Each keeps what it loaded from the files in an atomically swapped
// value that the handshakes read (tls.Config.GetConfigForClient,
// GetClientCertificate), so that a reload changes the certificate of new
// connections and leaves established ones alone. A reload re-reads the files;
// files whose content did not change (same hash) are not parsed again, and
// files that do not load (half written, garbage, a key that does not match)
// leave the running certificate in place and say why.
//
// Errors name each file by the configuration field it comes from (cert_file,
// key_file, client_ca_file, ca_file) and by its path.
//
// The package is a leaf: it knows files and crypto/tls, not the proxy's
// configuration.
package tlsconf

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Versions are the names min_version accepts.
var Versions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// ParseVersion reads a min_version value: "1.2" or "1.3".
func ParseVersion(s string) (uint16, error) {
	v, ok := Versions[s]
	if !ok {
		return 0, fmt.Errorf("%q is not a TLS version (1.2 or 1.3)", s)
	}
	return v, nil
}

// file is one file as read: its role (the configuration field), path and data.
type file struct {
	field, path string
	data        []byte
}

func (f file) errorf(format string, args ...any) error {
	return fmt.Errorf("%s %q: %s", f.field, f.path, fmt.Sprintf(format, args...))
}

// read reads the files, in order; a path "" yields an empty file.
func read(fields, paths []string) ([]file, [sha256.Size]byte, error) {
	h := sha256.New()
	out := make([]file, len(paths))
	for i, p := range paths {
		out[i] = file{field: fields[i], path: p}
		if p == "" {
			h.Write([]byte{0})
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is in the message already
			}
			return nil, [sha256.Size]byte{}, out[i].errorf("cannot be read: %v", err)
		}
		out[i].data = data
		h.Write(data)
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return out, sum, nil
}

// keyPair parses a certificate chain and its private key, and says which of
// the two files is wrong.
func keyPair(cert, key file) (*tls.Certificate, error) {
	leaf, err := parseCerts(cert)
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(key.data, []byte("PRIVATE KEY-----")) {
		return nil, key.errorf("holds no PEM private key")
	}
	pair, err := tls.X509KeyPair(cert.data, key.data)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "tls: ")
		if strings.Contains(msg, "does not match") {
			return nil, key.errorf("does not match the certificate of %s %q", cert.field, cert.path)
		}
		return nil, key.errorf("%s", msg)
	}
	pair.Leaf = leaf[0]
	return &pair, nil
}

// parseCerts reads every certificate of a PEM file; there must be one.
func parseCerts(f file) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := f.data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, f.errorf("certificate %d: %v", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, f.errorf("holds no PEM certificate")
	}
	return out, nil
}

// certPool reads a CA bundle.
func certPool(f file) (*x509.CertPool, error) {
	certs, err := parseCerts(f)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// Describe is a certificate as a log line shows it.
func Describe(c *x509.Certificate) string {
	if c == nil {
		return "none"
	}
	return fmt.Sprintf("subject %q serial %s expires %s", c.Subject.String(), c.SerialNumber.String(),
		c.NotAfter.UTC().Format(time.RFC3339))
}
