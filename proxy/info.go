package proxy

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/tidwall/redcon"

	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/upstream"
)

// info answers INFO with the upstream's sections and, when the defaults or
// "proxy" are asked for, a "# Proxy" section with the proxy's own figures. The
// upstream's Clients section counts the proxy's connections, not its clients.
func (c *client) info(cmd redcon.Command) {
	c.flush()
	var b upstream.Batch
	b.Add(cmd.Raw)
	c.pool().Do(c.s.ctx, c.db, c.hint, &b)
	if b.Answered() == 0 {
		c.emitUpstreamError(b.Err())
		return
	}
	reply := b.Reply(0)
	body, ok := bulkBody(reply)
	if !ok || !wantsProxySection(cmd.Args[1:]) {
		c.emit(reply) // written at once: flush left nothing waiting
		return
	}
	out := append([]byte(nil), body...)
	if len(out) > 0 {
		out = append(out, "\r\n"...)
	}
	out = c.s.appendProxyInfo(out)
	c.emit(c.appendVerbatim(out))
}

// bulkBody returns the content of a bulk string reply, or of a verbatim
// string's text (RESP3's INFO) without its format.
func bulkBody(reply []byte) ([]byte, bool) {
	if len(reply) < 4 || reply[0] != '$' && reply[0] != '=' {
		return nil, false
	}
	i := bytes.IndexByte(reply, '\n')
	if i < 0 || len(reply) < i+3 {
		return nil, false
	}
	body := reply[i+1 : len(reply)-2]
	if reply[0] == '=' {
		if len(body) < 4 || body[3] != ':' {
			return nil, false
		}
		body = body[4:]
	}
	return body, true
}

func wantsProxySection(sections [][]byte) bool {
	if len(sections) == 0 {
		return true
	}
	for _, s := range sections {
		switch strings.ToLower(string(s)) {
		case "proxy", "default", "all", "everything":
			return true
		}
	}
	return false
}

// appendProxyInfo appends the "# Proxy" section in INFO's format.
func (s *Server) appendProxyInfo(b []byte) []byte {
	st := s.cache.Stats()
	m := s.metrics
	line := func(name string, v int64) {
		b = append(b, name...)
		b = append(b, ':')
		b = strconv.AppendInt(b, v, 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "# Proxy\r\n"...)
	line("proxy_connected_clients", s.clients.Load())
	line("proxy_caching_enabled", int64(sum(m.caching)))
	line("proxy_l1_hits", int64(sum(m.hits)))
	line("proxy_l1_misses", int64(sum(m.misses)))
	line("proxy_l1_entries", st.Entries)
	line("proxy_l1_bytes", st.Bytes)
	line("proxy_l1_evictions", st.Evictions)
	line("proxy_l1_fills_stored", st.Stored)
	line("proxy_l1_fills_dropped_stale", st.DroppedStale)
	line("proxy_invalidations_write", int64(sum(m.inv.write)))
	line("proxy_invalidations_keyspace", int64(sum(m.inv.keyspace)))
	line("proxy_invalidations_flush", int64(sum(m.inv.flush)))
	ts := s.track.Stats()
	line("proxy_tracking_clients", ts.Clients)
	line("proxy_tracking_total_keys", ts.Keys)
	line("proxy_tracking_total_items", ts.Items)
	line("proxy_tracking_total_prefixes", ts.Prefixes)
	return b
}

// sum adds up what a collector's counters and gauges hold.
func sum(col prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() {
		col.Collect(ch)
		close(ch)
	}()
	var total float64
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil {
			total += d.GetCounter().GetValue() + d.GetGauge().GetValue()
		}
	}
	return total
}

// config forwards CONFIG, except a CONFIG SET of notify-keyspace-events to a
// value without the event classes the L1's coherence depends on: through the
// proxy that would silently leave the L1 serving values changed elsewhere.
func (c *client) config(cmd redcon.Command) {
	args := cmd.Args
	if strings.EqualFold(string(args[1]), "set") {
		for i := 2; i+1 < len(args); i += 2 {
			if strings.EqualFold(string(args[i]), "notify-keyspace-events") && !invalidation.KeyspaceEventsSufficient(string(args[i+1])) {
				c.emitError("ERR cacheproxy: notify-keyspace-events '" + sanitize(string(args[i+1])) +
					"' would turn off the keyspace notifications the proxy's cache relies on (it needs K with A, or K with g$lshzxet); set it on Redis directly if you mean to stop caching")
				return
			}
		}
	}
	c.forward(cmd.Raw)
}
