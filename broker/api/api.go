// Package api is mqttd's HTTP API. Without a token: /healthz (the process serves
// HTTP), /readyz (the broker takes clients: false from the start of a graceful
// shutdown or an evacuation, and on a stale node) and /metrics (Prometheus). Under
// /api/v1, with the bearer token: the node and cluster verbs the operator drives
// (docs/clustering.md; the bodies and codes are broker/apiv1). Errors are JSON with a
// stable code.
package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/auth"
	"github.com/mqtt-operator/mqtt-operator/broker/cluster"
	"github.com/mqtt-operator/mqtt-operator/broker/listener"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// Options configures the API.
type Options struct {
	// Token is the bearer token of /api/v1; empty turns /api/v1 off.
	Token string
	// Version is the broker version reported by GET /api/v1/node.
	Version string
	// EvacuationRate is how many clients per second an evacuation disconnects.
	EvacuationRate int
	// Auth, when set, has its counters exported in /metrics.
	Auth *auth.Authenticator
	// Listeners are the client listeners: their refusals (PROXY header, TLS
	// handshake, WebSocket upgrade), handshakes and certificate reloads are exported
	// in /metrics.
	Listeners []*listener.Listener
	// ClusterCert is the cluster port's certificate (nil without cluster TLS): its
	// reloads are exported as those of the listener "cluster".
	ClusterCert *listener.CertReloader
}

// Handler returns the HTTP API of srv; node is its cluster membership (nil when the
// broker runs without a cluster port).
func Handler(srv *server.Server, node *cluster.Node, opts Options) http.Handler {
	if opts.EvacuationRate <= 0 {
		opts.EvacuationRate = 100
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(srv))
	if node != nil {
		reg.MustRegister(clusterCollector{node})
	}
	if opts.Auth != nil {
		reg.MustRegister(authCollector{opts.Auth})
	}
	if len(opts.Listeners) > 0 || opts.ClusterCert != nil {
		reg.MustRegister(listenerCollector{listeners: opts.Listeners, cluster: opts.ClusterCert})
	}
	a := &api{srv: srv, node: node, opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready, why := a.readiness(); !ready {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	v1 := http.NewServeMux()
	v1.HandleFunc("GET /api/v1/node", a.getNode)
	v1.HandleFunc("GET /api/v1/cluster", a.clusterVerb(func(n *cluster.Node, _ *http.Request) (any, error) { return n.View() }))
	v1.HandleFunc("POST /api/v1/cluster/bootstrap", a.clusterVerb(func(n *cluster.Node, _ *http.Request) (any, error) {
		if err := n.Bootstrap(); err != nil {
			return nil, err
		}
		return a.nodeInfo(), nil
	}))
	v1.HandleFunc("POST /api/v1/cluster/join", a.clusterVerb(func(n *cluster.Node, r *http.Request) (any, error) {
		var body apiv1.JoinRequest
		if err := decode(r, &body); err != nil || body.Seed == "" {
			return nil, &cluster.Error{Code: apiv1.CodeBadRequest, Message: `body must be {"seed": "host:port"}`}
		}
		if err := n.Join(r.Context(), body.Seed); err != nil {
			return nil, err
		}
		return a.nodeInfo(), nil
	}))
	v1.HandleFunc("POST /api/v1/cluster/leave", a.clusterVerb(func(n *cluster.Node, _ *http.Request) (any, error) {
		if err := n.Leave(); err != nil {
			return nil, err
		}
		return a.nodeInfo(), nil
	}))
	v1.HandleFunc("POST /api/v1/cluster/force-leave", a.clusterVerb(func(n *cluster.Node, r *http.Request) (any, error) {
		var body apiv1.ForceLeaveRequest
		if err := decode(r, &body); err != nil || body.Node == "" {
			return nil, &cluster.Error{Code: apiv1.CodeBadRequest, Message: `body must be {"node": "name"}`}
		}
		if err := n.ForceLeave(body.Node); err != nil {
			return nil, err
		}
		return n.View()
	}))
	v1.HandleFunc("POST /api/v1/node/reset", a.clusterVerb(func(n *cluster.Node, _ *http.Request) (any, error) {
		if err := n.Reset(); err != nil {
			return nil, err
		}
		return a.nodeInfo(), nil
	}))
	v1.HandleFunc("POST /api/v1/node/evacuate", a.clusterVerb(func(n *cluster.Node, _ *http.Request) (any, error) {
		if err := n.Evacuate(a.opts.EvacuationRate); err != nil {
			return nil, err
		}
		return n.Evacuation(), nil
	}))
	v1.HandleFunc("GET /api/v1/node/evacuation", a.clusterVerb(func(n *cluster.Node, _ *http.Request) (any, error) {
		return n.Evacuation(), nil
	}))
	v1.HandleFunc("GET /api/v1/clients/{clientID}", a.getClient)
	v1.HandleFunc("/api/v1/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	mux.Handle("/api/v1/", a.authenticate(v1))
	return mux
}

type api struct {
	srv  *server.Server
	node *cluster.Node
	opts Options
}

// readiness reports whether the node takes clients, and why not.
func (a *api) readiness() (bool, string) {
	if !a.srv.Ready() {
		return false, "shutting down or evacuating"
	}
	if a.node != nil {
		return a.node.Readiness()
	}
	return true, ""
}

// authenticate requires the bearer token on /api/v1.
func (a *api) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.opts.Token == "" {
			writeError(w, http.StatusForbidden, "api_disabled", "no API token is configured (api.token_file)")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.opts.Token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mqttd"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// nodeInfo is GET /api/v1/node.
func (a *api) nodeInfo() apiv1.Node {
	var in apiv1.Node
	if a.node != nil {
		in = a.node.Info()
	}
	in.Version, in.Connections = a.opts.Version, a.srv.Stats().ClientsConnected
	in.Ready, in.NotReadyReason = a.readiness()
	return in
}

func (a *api) getNode(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.nodeInfo())
}

// getClient describes a client connected to this node (its address is the PROXY
// header's when its listener has the PROXY protocol on). Only this node's clients for
// now: the cluster-wide client list is [dashboard]'s.
func (a *api) getClient(w http.ResponseWriter, r *http.Request) {
	info, ok := a.srv.Client(r.PathValue("clientID"))
	if !ok {
		writeError(w, http.StatusNotFound, apiv1.CodeNotFound, "no client with this ID is connected to this node")
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// clusterVerb wraps a verb that needs the cluster port.
func (a *api) clusterVerb(fn func(*cluster.Node, *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.node == nil {
			writeError(w, http.StatusConflict, apiv1.CodeNotMember, "this node runs without a cluster port (cluster.listen)")
			return
		}
		v, err := fn(a.node, r)
		if err != nil {
			code := cluster.CodeOf(err)
			msg := err.Error()
			var ce *cluster.Error
			if errors.As(err, &ce) {
				msg = ce.Message
			}
			writeError(w, statusOf(code), code, msg)
			return
		}
		status := http.StatusOK
		if strings.HasSuffix(r.URL.Path, "/evacuate") {
			status = http.StatusAccepted
		}
		writeJSON(w, status, v)
	}
}

func statusOf(code string) int {
	switch code {
	case apiv1.CodeStaleStore, apiv1.CodeAlreadyMember, apiv1.CodeNotMember, apiv1.CodeEvacuating:
		return http.StatusConflict
	case apiv1.CodeCookieMismatch, apiv1.CodeUnreachable:
		return http.StatusBadGateway
	case apiv1.CodeNoLeader:
		return http.StatusServiceUnavailable
	case apiv1.CodeUnknownNode:
		return http.StatusNotFound
	case apiv1.CodeBadRequest:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func decode(r *http.Request, v any) error {
	return json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiv1.Error{Code: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
