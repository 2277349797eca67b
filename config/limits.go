package config

import (
	"fmt"
	"time"
)

// validateClientLimits checks the limits on what clients may cost.
func (c *Config) validateClientLimits() []fieldError {
	var errs []fieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, fieldError{"limits." + path, fmt.Sprintf(format, args...)})
	}
	l := c.Limits
	switch {
	case l.ClientQueryBufferLimit < MiB:
		add("client_query_buffer_limit", "%v is below Redis's minimum of 1MiB (e.g. 1GiB, Redis's default)", l.ClientQueryBufferLimit)
	case l.ClientQueryBufferLimit > 1024*1024*MiB:
		add("client_query_buffer_limit", "%v is above the maximum of 1TiB (e.g. 1GiB, Redis's default)", l.ClientQueryBufferLimit)
	case l.ClientQueryBufferLimit < l.ProtoMaxBulkLen:
		add("client_query_buffer_limit", "%v is below limits.proto_max_bulk_len (%v): such an argument could never fit", l.ClientQueryBufferLimit, l.ProtoMaxBulkLen)
	}
	for _, class := range []struct {
		name string
		o    OutputBufferLimit
	}{{"normal", l.ClientOutputBufferLimit.Normal}, {"pubsub", l.ClientOutputBufferLimit.PubSub}} {
		at := "client_output_buffer_limit." + class.name
		o := class.o
		if o.Hard < 0 {
			add(at+".hard", "%v must not be negative (0: no hard limit)", o.Hard)
		}
		if o.Soft < 0 {
			add(at+".soft", "%v must not be negative (0: no soft limit)", o.Soft)
		}
		if o.SoftSeconds < 0 {
			add(at+".soft_seconds", "%d must not be negative (0: the soft limit acts at once)", o.SoftSeconds)
		}
		if o.Hard > 0 && o.Soft > o.Hard {
			add(at+".soft", "%v is above the hard limit %v: it could never apply (e.g. soft: 8MiB with hard: 32MiB)", o.Soft, o.Hard)
		}
		if o.Soft == 0 && o.SoftSeconds > 0 {
			add(at+".soft_seconds", "%d is set but soft is 0: set soft too, or soft_seconds: 0", o.SoftSeconds)
		}
	}
	if l.ClientsMaxMemory < 0 {
		add("clients_max_memory", "%v must not be negative (0: no bound)", l.ClientsMaxMemory)
	} else if l.ClientsMaxMemory > 0 && l.ClientsMaxMemory < MiB {
		add("clients_max_memory", "%v is below the minimum of 1MiB (0: no bound; e.g. 1GiB)", l.ClientsMaxMemory)
	}
	if l.Timeout < 0 {
		add("timeout", "%v must not be negative (0: idle clients are never closed)", l.Timeout)
	} else if l.Timeout > 0 && l.Timeout < time.Second {
		add("timeout", "%v is below 1s (Redis counts it in seconds; e.g. 300s, or 0 for never)", l.Timeout)
	}
	if l.TCPKeepAlive < 0 {
		add("tcp_keepalive", "%v must not be negative (0: off; Redis's default is 300s)", l.TCPKeepAlive)
	} else if l.TCPKeepAlive > 0 && l.TCPKeepAlive < time.Second {
		add("tcp_keepalive", "%v is below 1s (e.g. 300s, Redis's default, or 0 for off)", l.TCPKeepAlive)
	}
	return errs
}
