package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqtt-operator/mqtt-operator/broker/cluster"
	"github.com/mqtt-operator/mqtt-operator/broker/listener"
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
		m("clients_parked", "Connected clients whose idle connection waits in the poller, without a goroutine or buffers of its own.", g, func(s server.StatsSnapshot) float64 { return float64(s.ClientsParked) }),
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
		m("retained_unreplicated_total", "Retained publishes refused (neither stored nor delivered) because the cluster had no majority to replicate them.", c, func(s server.StatsSnapshot) float64 { return float64(s.RetainedRefused) }),
		m("session_moves_expired_total", "Sessions handed to another node for a takeover that no node released within the move timeout (the answer was lost); kept on this node again.", c, func(s server.StatsSnapshot) float64 { return float64(s.MovesExpired) }),
	}}
}

var (
	limitRefusalsDesc = prometheus.NewDesc("mqttd_limit_refusals_total",
		"Things refused (connections, subscriptions, retained messages) or dropped (queued messages) because an abuse limit was reached, by limit.",
		[]string{"limit"}, nil)
	limitThrottlesDesc = prometheus.NewDesc("mqttd_limit_throttles_total",
		"Times a listener over its connection rate or a client over its publish rate was made to wait, by limit.",
		[]string{"limit"}, nil)
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.descs {
		ch <- m.desc
	}
	ch <- limitRefusalsDesc
	ch <- limitThrottlesDesc
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	for _, m := range c.descs {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(st))
	}
	for _, l := range st.Limits {
		desc := limitRefusalsDesc
		if l.Limit.Throttle() {
			desc = limitThrottlesDesc
		}
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(l.Count), l.Limit.String())
	}
}

var (
	clusterTLSDesc = prometheus.NewDesc("mqttd_cluster_tls_handshakes_total", "TLS handshakes completed on the cluster port (both directions), by TLS version.", []string{"version"}, nil)
	handshakesDesc = prometheus.NewDesc("mqttd_cluster_handshakes_total",
		"Cluster connection handshakes by result: ok, cookie_mismatch (the peer has another cookie), reflected (its hello carried this node's own name or nonce), failed.",
		[]string{"result"}, nil)
	peersDesc     = prometheus.NewDesc("mqttd_cluster_peers", "Members this node has a working link to.", nil, nil)
	membersDesc   = prometheus.NewDesc("mqttd_cluster_members", "Members of the cluster as this node sees it (0: not a member).", nil, nil)
	staleDesc     = prometheus.NewDesc("mqttd_cluster_store_stale", "1 when this node's store is stale (another cluster's, or removed): it serves no cluster traffic until reset.", nil, nil)
	leaderDesc    = prometheus.NewDesc("mqttd_cluster_raft_leader", "1 when this node is the raft leader.", nil, nil)
	forwardedDesc = prometheus.NewDesc("mqttd_cluster_forwarded_messages_total", "Messages forwarded between nodes, by direction (out, in).", []string{"direction"}, nil)
	fwdFailDesc   = prometheus.NewDesc("mqttd_cluster_forward_failures_total", "Forwards that failed: QoS 0 to an unreachable node, QoS 1 and 2 not kept for a node (its outbox full), undecodable.", nil, nil)
	unreachDesc   = prometheus.NewDesc("mqttd_cluster_unreachable_members", "Other members of the cluster this node has no working link to (a partition, a peer down).", nil, nil)
	hbDesc        = prometheus.NewDesc("mqttd_cluster_heartbeat_timeouts_total", "Links between nodes closed because the peer sent nothing within the heartbeat timeout (a silent cut or a frozen peer).", nil, nil)
	outboxDesc    = prometheus.NewDesc("mqttd_cluster_outbox_messages", "QoS 1 and 2 messages this node holds for other nodes until they acknowledge them (in flight, or waiting for an unreachable node).", nil, nil)
	outDropDesc   = prometheus.NewDesc("mqttd_cluster_outbox_dropped_total", "QoS 1 and 2 messages not kept for another node: its outbox was full, or its link closed for good (it left the cluster) with them in it.", nil, nil)
	dupDesc       = prometheus.NewDesc("mqttd_cluster_forward_duplicates_total", "Forwarded messages received again after a reconnect (delivered before): acknowledged, not delivered twice.", nil, nil)
	tlsFailDesc   = prometheus.NewDesc("mqttd_cluster_tls_failures_total", "Cluster connections refused in the TLS handshake.", nil, nil)
	evacDesc      = prometheus.NewDesc("mqttd_cluster_evacuating", "1 while this node is being evacuated (its clients and sessions moved to other nodes).", nil, nil)
	staleKDesc    = prometheus.NewDesc("mqttd_cluster_stale_kicks_pending", "Client IDs connected here while a member was out of reach, whose older connection or session there is kicked once it is back.", nil, nil)
)

// clusterCollector reports the cluster port's counters.
type clusterCollector struct{ node *cluster.Node }

// Describe implements prometheus.Collector.
func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{handshakesDesc, peersDesc, membersDesc, staleDesc, leaderDesc, forwardedDesc, fwdFailDesc, unreachDesc, hbDesc, outboxDesc, outDropDesc, dupDesc, tlsFailDesc, clusterTLSDesc, staleKDesc, evacDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.node.Auth().Stats()
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.CounterValue, float64(s.OK), "ok")
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.CounterValue, float64(s.CookieMismatch), "cookie_mismatch")
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.CounterValue, float64(s.Failed), "failed")
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.CounterValue, float64(s.Reflected), "reflected")
	st := c.node.Stats()
	ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(st.Peers))
	ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(st.Members))
	ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, b2f(st.Stale))
	ch <- prometheus.MustNewConstMetric(leaderDesc, prometheus.GaugeValue, b2f(st.Leader))
	ch <- prometheus.MustNewConstMetric(forwardedDesc, prometheus.CounterValue, float64(st.ForwardedOut), "out")
	ch <- prometheus.MustNewConstMetric(forwardedDesc, prometheus.CounterValue, float64(st.ForwardedIn), "in")
	ch <- prometheus.MustNewConstMetric(fwdFailDesc, prometheus.CounterValue, float64(st.ForwardFailures))
	ch <- prometheus.MustNewConstMetric(unreachDesc, prometheus.GaugeValue, float64(max(st.Members-1-st.Peers, 0)))
	ch <- prometheus.MustNewConstMetric(hbDesc, prometheus.CounterValue, float64(st.HeartbeatTimeouts))
	ch <- prometheus.MustNewConstMetric(outboxDesc, prometheus.GaugeValue, float64(st.Outboxed))
	ch <- prometheus.MustNewConstMetric(outDropDesc, prometheus.CounterValue, float64(st.OutboxDropped))
	ch <- prometheus.MustNewConstMetric(dupDesc, prometheus.CounterValue, float64(st.Duplicates))
	ch <- prometheus.MustNewConstMetric(tlsFailDesc, prometheus.CounterValue, float64(st.TLSFailures))
	ch <- prometheus.MustNewConstMetric(clusterTLSDesc, prometheus.CounterValue, float64(st.TLS12Handshakes), "1.2")
	ch <- prometheus.MustNewConstMetric(clusterTLSDesc, prometheus.CounterValue, float64(st.TLS13Handshakes), "1.3")
	ch <- prometheus.MustNewConstMetric(staleKDesc, prometheus.GaugeValue, float64(st.StaleKicks))
	ch <- prometheus.MustNewConstMetric(evacDesc, prometheus.GaugeValue, b2f(c.node.Evacuation().State == "running"))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	certReloadDesc = prometheus.NewDesc("mqttd_tls_certificate_reloads_total", "TLS listener certificates read again after their files changed.", []string{"listener"}, nil)
	certFailDesc   = prometheus.NewDesc("mqttd_tls_certificate_load_failures_total", "Changed TLS certificate files that did not load (the previous certificate stayed in use).", []string{"listener"}, nil)
	handshakeDesc  = prometheus.NewDesc("mqttd_tls_handshakes_total", "TLS handshakes completed on client listeners, by TLS version.", []string{"listener", "version"}, nil)
	hsFailDesc     = prometheus.NewDesc("mqttd_tls_handshake_failures_total", "TLS handshakes that failed on client listeners, by reason (client_certificate_missing, client_certificate_untrusted, client_certificate_expired, server_certificate_refused, client_aborted, protocol_version, no_shared_cipher_suite, timeout, not_tls, closed, ...).", []string{"listener", "reason"}, nil)
	certExpiryDesc = prometheus.NewDesc("mqttd_tls_certificate_expiry_timestamp_seconds", "When the certificate in force expires (Unix time), by listener (cluster: the cluster port's).", []string{"listener"}, nil)
	refusalDesc    = prometheus.NewDesc("mqttd_listener_refusals_total", "Connections refused before MQTT other than by a failed TLS handshake: a missing or invalid PROXY protocol header (stage proxy), a verified client certificate without the name to take as username (stage certificate, reason no_username), a refused WebSocket origin or upgrade (stage websocket).", []string{"listener", "stage", "reason"}, nil)
)

// listenerCollector reports the client listeners' refusals, TLS handshakes and
// certificate reloads.
type listenerCollector struct {
	listeners []*listener.Listener
	cluster   *listener.CertReloader
}

// Describe implements prometheus.Collector.
func (c listenerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{certReloadDesc, certFailDesc, certExpiryDesc, handshakeDesc, hsFailDesc, refusalDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c listenerCollector) Collect(ch chan<- prometheus.Metric) {
	if r := c.cluster; r != nil {
		ch <- prometheus.MustNewConstMetric(certReloadDesc, prometheus.CounterValue, float64(r.Reloads()), "cluster")
		ch <- prometheus.MustNewConstMetric(certFailDesc, prometheus.CounterValue, float64(r.Failures()), "cluster")
		if na := r.NotAfter(); !na.IsZero() {
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(na.Unix()), "cluster")
		}
	}
	for _, l := range c.listeners {
		name := l.Name()
		if r := l.Certificate(); r != nil {
			ch <- prometheus.MustNewConstMetric(certReloadDesc, prometheus.CounterValue, float64(r.Reloads()), name)
			ch <- prometheus.MustNewConstMetric(certFailDesc, prometheus.CounterValue, float64(r.Failures()), name)
			if na := r.NotAfter(); !na.IsZero() {
				ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(na.Unix()), name)
			}
			v12, v13 := l.Handshakes()
			ch <- prometheus.MustNewConstMetric(handshakeDesc, prometheus.CounterValue, float64(v12), name, "1.2")
			ch <- prometheus.MustNewConstMetric(handshakeDesc, prometheus.CounterValue, float64(v13), name, "1.3")
		}
		for _, f := range l.Failures() {
			if f.Stage == "tls" {
				ch <- prometheus.MustNewConstMetric(hsFailDesc, prometheus.CounterValue, float64(f.Count), name, f.Reason)
				continue
			}
			ch <- prometheus.MustNewConstMetric(refusalDesc, prometheus.CounterValue, float64(f.Count), name, f.Stage, f.Reason)
		}
	}
}
