// Package hostlist parses the authority part of the proxy's URLs that name
// several hosts (redis-sentinel://, redis-cluster://): [user[:pass]@]host:port
// [,host:port...]. It owns no scheme and no path, and its errors never repeat
// a password.
package hostlist

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Parse splits authority into the user, the password and the host:port list.
// what names a host in errors ("sentinel", "seed").
func Parse(authority, what string) (user, pass string, hosts []string, err error) {
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		u, p, hasPass := strings.Cut(authority[:at], ":")
		if user, err = url.PathUnescape(u); err != nil {
			return "", "", nil, fmt.Errorf("bad user name escape: %v", err)
		}
		if hasPass {
			if pass, err = url.PathUnescape(p); err != nil {
				return "", "", nil, fmt.Errorf("bad password escape")
			}
		}
		authority = authority[at+1:]
	}
	if authority == "" {
		return "", "", nil, fmt.Errorf("names no %s (host:port)", what)
	}
	for _, hp := range strings.Split(authority, ",") {
		if err := Check(hp, what); err != nil {
			return "", "", nil, err
		}
		hosts = append(hosts, hp)
	}
	return user, pass, hosts, nil
}

// Check checks that hp is host:port with a host and a port in 1..65535.
func Check(hp, what string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("%s %q is not host:port", what, hp)
	}
	if host == "" {
		return fmt.Errorf("%s %q has no host", what, hp)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%s %q has a bad port (1..65535)", what, hp)
	}
	return nil
}
