package main

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// target is one server under test.
type target struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	metrics string // Prometheus endpoint URL, if any
	// ceiling marks the suite's ceiling server: it keeps its own keys, so it
	// is preloaded too, and it runs only in scenarios that ask for it.
	ceiling bool
	// origin is the server behind Addr when Addr is a relay to it: keys are
	// preloaded there, without the relay's latency.
	origin string
}

// namedValues is a repeatable name=value flag that keeps the order given.
type namedValues struct {
	names, values []string
}

func (n *namedValues) String() string {
	var parts []string
	for i := range n.names {
		parts = append(parts, n.names[i]+"="+n.values[i])
	}
	return strings.Join(parts, ",")
}

func (n *namedValues) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok {
		// A bare address names itself.
		name, value = s, s
	}
	if name == "" || value == "" {
		return fmt.Errorf("%q is not name=value", s)
	}
	for _, have := range n.names {
		if have == name {
			return fmt.Errorf("name %q given twice", name)
		}
	}
	n.names = append(n.names, name)
	n.values = append(n.values, value)
	return nil
}

// buildTargets pairs targets with their metrics endpoints and refuses anything
// that is not on this machine unless remote is true.
func buildTargets(addrs, metrics namedValues, remote bool) ([]target, error) {
	if len(addrs.names) == 0 {
		return nil, fmt.Errorf("no target: give at least one --target name=host:port")
	}
	var ts []target
	for i, name := range addrs.names {
		host, _, err := net.SplitHostPort(addrs.values[i])
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", name, err)
		}
		if !remote && !isLoopback(host) {
			return nil, fmt.Errorf("target %s: %s is not a loopback address; pass --allow-remote to load a remote server", name, host)
		}
		ts = append(ts, target{Name: name, Addr: addrs.values[i]})
	}
	for i, name := range metrics.names {
		u, err := url.Parse(metrics.values[i])
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("metrics %s: %q is not an http URL", name, metrics.values[i])
		}
		if !remote && !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("metrics %s: %s is not a loopback address; pass --allow-remote to scrape a remote server", name, u.Hostname())
		}
		found := false
		for j := range ts {
			if ts[j].Name == name {
				ts[j].metrics, found = metrics.values[i], true
			}
		}
		if !found {
			return nil, fmt.Errorf("metrics %s: no target of that name", name)
		}
	}
	return ts, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// preloadTarget is where keys are written first: the target named direct when
// there is one, because writing through a cache would warm it.
func preloadTarget(ts []target) target {
	for _, t := range ts {
		if t.Name == "direct" {
			return t
		}
	}
	return ts[0]
}
