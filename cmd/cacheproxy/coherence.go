package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheproxy/cacheproxy/invalidation"
	"github.com/cacheproxy/cacheproxy/upstream/cluster"
)

// clusterCoherence keeps the L1 coherent with every master of a Redis
// Cluster: an invalidation.Group, a stream on each master that follows the
// slot map. It exports each master's stream, labelled by node address, and
// what topology changes did, and reports each master's stream on /readyz.
// cfg is the single-upstream stream's configuration; its Options give the
// credentials and TLS of every node.
func clusterCoherence(cfg invalidation.Config, cl *cluster.Cluster, t invalidation.Target,
	reg prometheus.Registerer, h *health) *invalidation.Group {
	g := invalidation.NewGroup(cfg, cl.Topology, t)
	reg.MustRegister(groupCollector{g})
	h.setNodes(g.Nodes)
	return g
}

// groupCollector exports a Group's per-master streams and topology counters,
// read at each scrape, so that a master gone from the slot map leaves no
// series behind.
type groupCollector struct{ g *invalidation.Group }

var (
	nodeLabels          = []string{"node"}
	nodeSubscribedDesc  = prometheus.NewDesc("cacheproxy_cluster_stream_subscribed", "1 while the master's invalidation stream is trusted.", nodeLabels, nil)
	nodeReconnectsDesc  = prometheus.NewDesc("cacheproxy_cluster_stream_reconnects_total", "Trusted invalidation streams of the master that were lost (each suspended the L1).", nodeLabels, nil)
	nodeMessagesDesc    = prometheus.NewDesc("cacheproxy_cluster_stream_messages_total", "Invalidation messages received from the master.", nodeLabels, nil)
	nodeLagDesc         = prometheus.NewDesc("cacheproxy_cluster_stream_lag_seconds", "How long the master's last canary write took to come back as an invalidation (or has been waiting, if longer).", nodeLabels, nil)
	clusterChangesDesc  = prometheus.NewDesc("cacheproxy_cluster_topology_changes_total", "Slot maps that replaced another (slots or masters moved, or replicas changed).", nil, nil)
	clusterFailoverDesc = prometheus.NewDesc("cacheproxy_cluster_failovers_total", "Masters that were, in the slot map they replaced, a replica.", nil, nil)
	clusterFlushesDesc  = prometheus.NewDesc("cacheproxy_cluster_l1_flushes_total", "Whole-L1 flushes for a topology change that moved a slot or a master.", nil, nil)
	clusterOffDesc      = prometheus.NewDesc("cacheproxy_cluster_l1_suspended_seconds_total", "Seconds the L1 has been suspended because some master's invalidation stream was not trusted, from start on.", nil, nil)
)

func (c groupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodeSubscribedDesc, nodeReconnectsDesc, nodeMessagesDesc, nodeLagDesc,
		clusterChangesDesc, clusterFailoverDesc, clusterFlushesDesc, clusterOffDesc} {
		ch <- d
	}
}

func (c groupCollector) Collect(ch chan<- prometheus.Metric) {
	for _, n := range c.g.Nodes() {
		subscribed := 0.0
		if n.Subscribed {
			subscribed = 1
		}
		ch <- prometheus.MustNewConstMetric(nodeSubscribedDesc, prometheus.GaugeValue, subscribed, n.Addr)
		ch <- prometheus.MustNewConstMetric(nodeReconnectsDesc, prometheus.CounterValue, float64(n.Reconnects), n.Addr)
		ch <- prometheus.MustNewConstMetric(nodeMessagesDesc, prometheus.CounterValue, float64(n.Messages), n.Addr)
		ch <- prometheus.MustNewConstMetric(nodeLagDesc, prometheus.GaugeValue, n.Lag.Seconds(), n.Addr)
	}
	st := c.g.Stats()
	ch <- prometheus.MustNewConstMetric(clusterChangesDesc, prometheus.CounterValue, float64(st.TopologyChanges))
	ch <- prometheus.MustNewConstMetric(clusterFailoverDesc, prometheus.CounterValue, float64(st.Failovers))
	ch <- prometheus.MustNewConstMetric(clusterFlushesDesc, prometheus.CounterValue, float64(st.TopologyFlushes))
	ch <- prometheus.MustNewConstMetric(clusterOffDesc, prometheus.CounterValue, st.Suspended.Seconds())
}
