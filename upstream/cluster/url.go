package cluster

import (
	"fmt"
	"strings"

	"github.com/cacheproxy/cacheproxy/internal/hostlist"
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
	var err error
	if u.Username, u.Password, u.Seeds, err = hostlist.Parse(authority, "seed"); err != nil {
		return nil, err
	}
	if path != "" && path != "0" {
		return nil, fmt.Errorf("names database %q: a cluster has database 0 alone", path)
	}
	return u, nil
}

// SeedsURL is the cluster URL of seeds given as a list (host:port each),
// as the configuration file may give them.
func SeedsURL(seeds []string) (string, error) {
	if len(seeds) == 0 {
		return "", fmt.Errorf("lists no seed node")
	}
	for _, hp := range seeds {
		if err := hostlist.Check(hp, "seed"); err != nil {
			return "", err
		}
	}
	return Scheme + strings.Join(seeds, ","), nil
}
