package main

import (
	"time"

	"github.com/cacheproxy/cacheproxy/config"
	"github.com/cacheproxy/cacheproxy/proxy"
)

// clientLimits turns the configuration's client limits into the proxy's.
func clientLimits(l config.Limits) proxy.ClientLimits {
	out := func(o config.OutputBufferLimit) proxy.OutputLimit {
		return proxy.OutputLimit{Hard: int64(o.Hard), Soft: int64(o.Soft), SoftFor: time.Duration(o.SoftSeconds) * time.Second}
	}
	return proxy.ClientLimits{
		Normal:       out(l.ClientOutputBufferLimit.Normal),
		PubSub:       out(l.ClientOutputBufferLimit.PubSub),
		Timeout:      l.Timeout,
		TCPKeepAlive: l.TCPKeepAlive,
		MaxMemory:    int64(l.ClientsMaxMemory),
	}
}
