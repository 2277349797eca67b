package cluster

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Scheme starts a cluster upstream URL.
const Scheme = "redis-cluster://"

// URL is a parsed redis-cluster:// URL:
//
//	redis-cluster://[user:pass@]host:port[,host:port...][/0]
//
// The hosts are seeds: the proxy learns the other nodes from them. user and
// pass authenticate on every node.
type URL struct {
	Seeds              []string // host:port, in the order given
	Username, Password string
}

// IsURL reports whether s is meant as a cluster URL.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// ParseURL parses s. Its errors never repeat a password.
func ParseURL(s string) (*URL, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return nil, fmt.Errorf("lacks the %s scheme", Scheme)
	}
	u := &URL{}
	authority, path, _ := strings.Cut(rest, "/")
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		user, pass, hasPass := strings.Cut(authority[:at], ":")
		var err error
		if u.Username, err = url.PathUnescape(user); err != nil {
			return nil, fmt.Errorf("bad user name escape: %v", err)
		}
		if hasPass {
			if u.Password, err = url.PathUnescape(pass); err != nil {
				return nil, fmt.Errorf("bad password escape")
			}
		}
		authority = authority[at+1:]
	}
	if authority == "" {
		return nil, fmt.Errorf("names no seed node (host:port)")
	}
	for _, hp := range strings.Split(authority, ",") {
		if err := checkSeed(hp); err != nil {
			return nil, err
		}
		u.Seeds = append(u.Seeds, hp)
	}
	if path != "" && path != "0" {
		return nil, fmt.Errorf("names database %q: a cluster has database 0 alone", path)
	}
	return u, nil
}

// checkSeed checks that hp is host:port.
func checkSeed(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("seed %q is not host:port", hp)
	}
	if host == "" {
		return fmt.Errorf("seed %q has no host", hp)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("seed %q has a bad port (1..65535)", hp)
	}
	return nil
}

// SeedsURL is the cluster URL of seeds given as a list (host:port each),
// as the configuration file may give them.
func SeedsURL(seeds []string) (string, error) {
	if len(seeds) == 0 {
		return "", fmt.Errorf("lists no seed node")
	}
	for _, hp := range seeds {
		if err := checkSeed(hp); err != nil {
			return "", err
		}
	}
	return Scheme + strings.Join(seeds, ","), nil
}
