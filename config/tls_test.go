package config

import (
	"strings"
	"testing"
)

func TestTLSConfig(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, in string
		want     string // "" for no error
	}{
		{"TLS beside plain", "tls:\n  listen: 127.0.0.1:6381\n  cert_file: s.crt\n  key_file: s.key\n", ""},
		{"TLS only", "listen: \"\"\ntls:\n  listen: 127.0.0.1:6381\n  cert_file: s.crt\n  key_file: s.key\n  client_ca_file: ca.crt\n  client_auth: optional\n  min_version: \"1.3\"\n", ""},
		{"unquoted version", "tls:\n  min_version: 1.3\n", ""},
		{"no port at all", "listen: \"\"\n", `t.yaml:1: listen: is empty and so is tls.listen`},
		{"TLS without cert", "tls:\n  listen: 127.0.0.1:6381\n", "t.yaml: tls.cert_file: is required with tls.listen"},
		{"TLS without key", "tls:\n  listen: 127.0.0.1:6381\n  cert_file: s.crt\n", "t.yaml: tls.key_file: is required with tls.listen"},
		{"TLS on the plain port", "listen: 127.0.0.1:6380\ntls:\n  listen: 127.0.0.1:6380\n  cert_file: s.crt\n  key_file: s.key\n", `t.yaml:3: tls.listen: "127.0.0.1:6380" is also the listen address`},
		{"bad TLS address", "tls:\n  listen: localhost\n  cert_file: s.crt\n  key_file: s.key\n", `t.yaml:2: tls.listen: "localhost" is not host:port`},
		{"cert without listen", "tls:\n  cert_file: s.crt\n", "t.yaml:2: tls.cert_file: is set but tls.listen is empty"},
		{"bad client_auth", "tls:\n  client_auth: yes\n", `t.yaml:2: tls.client_auth: "yes" is not one of require, optional`},
		{"bad version", "tls:\n  min_version: \"1.1\"\n", `t.yaml:2: tls.min_version: "1.1" is not one of "1.2", "1.3"`},
		{"upstream TLS", "upstream: rediss://redis.example.com:6380/0\nupstream_tls:\n  ca_file: ca.crt\n  server_name: redis\n  cert_file: c.crt\n  key_file: c.key\n", ""},
		{"upstream TLS on redis://", "upstream_tls:\n  ca_file: ca.crt\n", "t.yaml:2: upstream_tls.ca_file: is set but upstream is not a rediss:// URL"},
		{"upstream cert without key", "upstream: rediss://h:6380\nupstream_tls:\n  cert_file: c.crt\n", "t.yaml:3: upstream_tls.cert_file: and upstream_tls.key_file go together"},
		{"bad upstream version", "upstream_tls:\n  min_version: \"1.0\"\n", `t.yaml:2: upstream_tls.min_version: "1.0" is not one of`},
	} {
		_, err := Parse([]byte(tt.in), "t.yaml")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
}
