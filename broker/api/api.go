// Package api is mqttd's HTTP API. Today it serves what needs no token: /healthz
// (the process serves HTTP), /readyz (the broker accepts connections; false from the
// start of a graceful shutdown, so Kubernetes stops sending clients) and /metrics
// (Prometheus). The cluster verbs of ARCHITECTURE.md section 6 join it later.
package api

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mqtt-operator/mqtt-operator/broker/cluster"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// Handler returns the HTTP API of srv; node is the cluster port (nil on a single node).
func Handler(srv *server.Server, node *cluster.Node) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(srv))
	if node != nil {
		reg.MustRegister(clusterCollector{node})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !srv.Ready() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
