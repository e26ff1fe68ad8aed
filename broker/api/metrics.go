package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqtt-operator/mqtt-operator/broker/cluster"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// collector turns the server's counters into Prometheus metrics at scrape time, so
// the hot path keeps its plain atomics.
type collector struct {
	srv   *server.Server
	descs []metric
}

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(server.StatsSnapshot) float64
}

func newCollector(srv *server.Server) *collector {
	m := func(name, help string, kind prometheus.ValueType, v func(server.StatsSnapshot) float64) metric {
		return metric{prometheus.NewDesc("mqttd_"+name, help, nil, nil), kind, v}
	}
	g, c := prometheus.GaugeValue, prometheus.CounterValue
	return &collector{srv: srv, descs: []metric{
		m("uptime_seconds", "Seconds since the broker started.", g, func(s server.StatsSnapshot) float64 { return s.Uptime.Seconds() }),
		m("clients_connected", "Connected clients.", g, func(s server.StatsSnapshot) float64 { return float64(s.ClientsConnected) }),
		m("connections_total", "Accepted MQTT connections (CONNACK success).", c, func(s server.StatsSnapshot) float64 { return float64(s.ClientsTotal) }),
		m("sessions", "Sessions, connected or not.", g, func(s server.StatsSnapshot) float64 { return float64(s.Sessions) }),
		m("subscriptions", "Subscriptions.", g, func(s server.StatsSnapshot) float64 { return float64(s.Subscriptions) }),
		m("retained_messages", "Retained messages.", g, func(s server.StatsSnapshot) float64 { return float64(s.Retained) }),
		m("messages_received_total", "PUBLISH packets received from clients.", c, func(s server.StatsSnapshot) float64 { return float64(s.MessagesReceived) }),
		m("messages_sent_total", "PUBLISH packets sent to clients.", c, func(s server.StatsSnapshot) float64 { return float64(s.MessagesSent) }),
		m("messages_dropped_total", "Messages dropped (full queues, over the client's maximum packet size).", c, func(s server.StatsSnapshot) float64 { return float64(s.MessagesDropped) }),
		m("messages_expired_total", "Messages that expired before delivery.", c, func(s server.StatsSnapshot) float64 { return float64(s.MessagesExpired) }),
		m("bytes_received_total", "Bytes received from clients.", c, func(s server.StatsSnapshot) float64 { return float64(s.BytesReceived) }),
		m("bytes_sent_total", "Bytes sent to clients.", c, func(s server.StatsSnapshot) float64 { return float64(s.BytesSent) }),
		m("malformed_packets_total", "Malformed packets received.", c, func(s server.StatsSnapshot) float64 { return float64(s.MalformedPackets) }),
		m("protocol_errors_total", "Protocol violations by clients.", c, func(s server.StatsSnapshot) float64 { return float64(s.ProtocolErrors) }),
		m("store_errors_total", "Failed writes to the session and retained-message store.", c, func(s server.StatsSnapshot) float64 { return float64(s.StoreErrors) }),
	}}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.descs {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	for _, m := range c.descs {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(st))
	}
}

var (
	handshakesDesc = prometheus.NewDesc("mqttd_cluster_handshakes_total",
		"Cluster connection handshakes by result: ok, cookie_mismatch (the peer has another cookie), failed.",
		[]string{"result"}, nil)
	peersDesc = prometheus.NewDesc("mqttd_cluster_peers", "Authenticated cluster connections.", nil, nil)
)

// clusterCollector reports the cluster port's counters.
type clusterCollector struct{ node *cluster.Node }

// Describe implements prometheus.Collector.
func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- handshakesDesc
	ch <- peersDesc
}

// Collect implements prometheus.Collector.
func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.node.Auth().Stats()
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.CounterValue, float64(s.OK), "ok")
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.CounterValue, float64(s.CookieMismatch), "cookie_mismatch")
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.CounterValue, float64(s.Failed), "failed")
	ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(len(c.node.Peers())))
}
