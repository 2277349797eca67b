package sentinel

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/cacheproxy/cacheproxy/internal/hostlist"
)

// Scheme starts a Sentinel upstream URL.
const Scheme = "redis-sentinel://"

// URL is a parsed redis-sentinel:// URL:
//
//	redis-sentinel://[user:pass@]host:port[,host:port...]/master[/db][?sentinel_username=u&sentinel_password=p]
//
// user and pass authenticate on the data nodes (the master); the query's
// parameters on the sentinels.
type URL struct {
	Sentinels                          []string // host:port, in the order given
	Master                             string
	DB                                 int
	Username, Password                 string
	SentinelUsername, SentinelPassword string
}

// IsURL reports whether s is meant as a Sentinel URL.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// ParseURL parses s. Its errors never repeat a password.
func ParseURL(s string) (*URL, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return nil, fmt.Errorf("lacks the %s scheme", Scheme)
	}
	u := &URL{}
	rest, query, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	var err error
	if u.Username, u.Password, u.Sentinels, err = hostlist.Parse(authority, "sentinel"); err != nil {
		return nil, err
	}
	master, db, hasDB := strings.Cut(path, "/")
	if master == "" {
		return nil, fmt.Errorf("names no master: the path must be /master-name[/db]")
	}
	if u.Master, err = url.PathUnescape(master); err != nil {
		return nil, fmt.Errorf("bad master name escape: %v", err)
	}
	if hasDB && db != "" {
		if u.DB, err = strconv.Atoi(db); err != nil || u.DB < 0 || strings.Contains(db, "/") {
			return nil, fmt.Errorf("database %q is not a number >= 0", db)
		}
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("bad query: %v", err)
	}
	for k, v := range q {
		switch k {
		case "sentinel_username":
			u.SentinelUsername = v[len(v)-1]
		case "sentinel_password":
			u.SentinelPassword = v[len(v)-1]
		default:
			return nil, fmt.Errorf("unknown parameter %q (sentinel_username, sentinel_password)", k)
		}
	}
	return u, nil
}
