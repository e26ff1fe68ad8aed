// Package api is mqttd's HTTP API. Without a token: /healthz (the process serves
// HTTP), /readyz (the broker takes clients: false from the start of a graceful
// shutdown or an evacuation, and on a stale node) and /metrics (Prometheus). Under
// /api/v1, with the bearer token: the node and cluster verbs the operator drives
// (docs/clustering.md; the bodies and codes are broker/apiv1). Under /debug/pprof/,
// with the bearer token: Go's profiler. Errors are JSON with a stable code.
package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof" // registers on http.DefaultServeMux too: mqttd never serves that mux
	"os"
	"regexp"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	// NodeName names this node in the management answers when it runs without a
	// cluster (default: the host name); a cluster node is named by its cluster name.
	NodeName string
	// Logger logs the management actions (kicks, deletes); default slog.Default().
	Logger *slog.Logger
	// Dashboard, when set, has its logins counted in /metrics.
	Dashboard LoginCounter
}

// LoginCounter counts the dashboard's logins (dashboard.Dashboard).
type LoginCounter interface {
	Logins() (ok, failed, throttled uint64)
}

// Handler returns the HTTP API of srv; node is its cluster membership (nil when the
// broker runs without a cluster port).
func Handler(srv *server.Server, node *cluster.Node, opts Options) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(srv))
	// The Go runtime's and the process's own (go_*, process_*: memory, goroutines,
	// GC, file descriptors), as every Go exporter has them.
	// go_gc_heap_live_bytes (what the last collection found live) is what a memory
	// limit has to hold; the rest of the heap is garbage not yet collected.
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if node != nil {
		reg.MustRegister(clusterCollector{node})
	}
	if opts.Auth != nil {
		reg.MustRegister(authCollector{opts.Auth})
	}
	if opts.Dashboard != nil {
		reg.MustRegister(dashboardCollector{opts.Dashboard})
	}
	if len(opts.Listeners) > 0 || opts.ClusterCert != nil {
		reg.MustRegister(listenerCollector{listeners: opts.Listeners, cluster: opts.ClusterCert})
	}
	a := newAPI(srv, node, opts)
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
	for _, rt := range a.routes() {
		v1.HandleFunc(rt.Method+" "+rt.Path, rt.handler)
	}
	v1.HandleFunc("/api/v1/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	mux.Handle("/api/v1/", a.authenticate(v1))
	// Go's profiler (heap, goroutines, CPU), for a node that misbehaves: behind the
	// API token like the cluster verbs.
	prof := http.NewServeMux()
	prof.HandleFunc("/debug/pprof/", pprof.Index)
	prof.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	prof.HandleFunc("/debug/pprof/profile", pprof.Profile)
	prof.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	prof.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/debug/pprof/", a.authenticate(prof))
	return mux
}

// Management returns the management part of the API (routes with Management set)
// without authentication, for the dashboard, which authenticates its own sessions.
// It answers for the whole cluster like the API on 8080 (the same node, Options).
func Management(srv *server.Server, node *cluster.Node, opts Options) http.Handler {
	a := newAPI(srv, node, opts)
	mux := http.NewServeMux()
	for _, rt := range a.routes() {
		if rt.Management {
			mux.HandleFunc(rt.Method+" "+rt.Path, rt.handler)
		}
	}
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such API endpoint")
	})
	return mux
}

func newAPI(srv *server.Server, node *cluster.Node, opts Options) *api {
	if opts.EvacuationRate <= 0 {
		opts.EvacuationRate = 100
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.NodeName == "" {
		opts.NodeName, _ = os.Hostname()
	}
	a := &api{srv: srv, node: node, opts: opts, log: opts.Logger}
	if node != nil {
		node.SetManager(a.manager)
	}
	return a
}

// Route is one endpoint of /api/v1: its method, path pattern (net/http's), the Go
// types of its request and answer bodies (nil: none), and whether the dashboard's
// sessions may call it (Management). The OpenAPI document (apiv1.OpenAPI) is checked
// against this table by the tests.
type Route struct {
	Method, Path string
	Request      any
	Response     any
	Status       int // the success status
	Management   bool
	handler      http.HandlerFunc
}

// Routes lists the endpoints of /api/v1.
func Routes() []Route { return (&api{}).routes() }

func (a *api) routes() []Route {
	verb := func(fn func(*cluster.Node, *http.Request) (any, error)) http.HandlerFunc { return a.clusterVerb(fn) }
	return []Route{
		{Method: "GET", Path: "/api/v1/node", Response: apiv1.Node{}, Status: 200, Management: true, handler: a.getNode},
		{Method: "GET", Path: "/api/v1/cluster", Response: apiv1.Cluster{}, Status: 200, Management: true,
			handler: verb(func(n *cluster.Node, _ *http.Request) (any, error) { return n.View() })},
		{Method: "POST", Path: "/api/v1/cluster/bootstrap", Response: apiv1.Node{}, Status: 200,
			handler: verb(func(n *cluster.Node, _ *http.Request) (any, error) {
				if err := n.Bootstrap(); err != nil {
					return nil, err
				}
				return a.nodeInfo(), nil
			})},
		{Method: "POST", Path: "/api/v1/cluster/join", Request: apiv1.JoinRequest{}, Response: apiv1.Node{}, Status: 200,
			handler: verb(func(n *cluster.Node, r *http.Request) (any, error) {
				var req apiv1.JoinRequest
				if err := decode(r, &req); err != nil || req.Seed == "" {
					return nil, &cluster.Error{Code: apiv1.CodeBadRequest, Message: `body must be {"seed": "host:port"}`}
				}
				if err := n.Join(r.Context(), req.Seed); err != nil {
					return nil, err
				}
				return a.nodeInfo(), nil
			})},
		{Method: "POST", Path: "/api/v1/cluster/leave", Response: apiv1.Node{}, Status: 200,
			handler: verb(func(n *cluster.Node, _ *http.Request) (any, error) {
				if err := n.Leave(); err != nil {
					return nil, err
				}
				return a.nodeInfo(), nil
			})},
		{Method: "POST", Path: "/api/v1/cluster/force-leave", Request: apiv1.ForceLeaveRequest{}, Response: apiv1.Cluster{}, Status: 200,
			handler: verb(func(n *cluster.Node, r *http.Request) (any, error) {
				var req apiv1.ForceLeaveRequest
				if err := decode(r, &req); err != nil || req.Node == "" {
					return nil, &cluster.Error{Code: apiv1.CodeBadRequest, Message: `body must be {"node": "name"}`}
				}
				if err := n.ForceLeave(req.Node); err != nil {
					return nil, err
				}
				return n.View()
			})},
		{Method: "POST", Path: "/api/v1/node/reset", Response: apiv1.Node{}, Status: 200,
			handler: verb(func(n *cluster.Node, _ *http.Request) (any, error) {
				if err := n.Reset(); err != nil {
					return nil, err
				}
				return a.nodeInfo(), nil
			})},
		{Method: "POST", Path: "/api/v1/node/evacuate", Response: apiv1.Evacuation{}, Status: 202,
			handler: verb(func(n *cluster.Node, _ *http.Request) (any, error) {
				if err := n.Evacuate(a.opts.EvacuationRate); err != nil {
					return nil, err
				}
				return n.Evacuation(), nil
			})},
		{Method: "GET", Path: "/api/v1/node/evacuation", Response: apiv1.Evacuation{}, Status: 200, Management: true,
			handler: verb(func(n *cluster.Node, _ *http.Request) (any, error) { return n.Evacuation(), nil })},
		{Method: "GET", Path: "/api/v1/nodes", Response: apiv1.NodeList{}, Status: 200, Management: true, handler: a.listNodes},
		{Method: "GET", Path: "/api/v1/stats", Response: apiv1.Stats{}, Status: 200, Management: true, handler: a.getStats},
		{Method: "GET", Path: "/api/v1/clients", Response: apiv1.ClientList{}, Status: 200, Management: true, handler: a.listClients},
		{Method: "GET", Path: "/api/v1/clients/{clientID}", Response: apiv1.ClientDetail{}, Status: 200, Management: true, handler: a.getClient},
		{Method: "DELETE", Path: "/api/v1/clients/{clientID}", Response: apiv1.KickResult{}, Status: 200, Management: true, handler: a.kickClient},
		{Method: "GET", Path: "/api/v1/subscriptions", Response: apiv1.SubscriptionList{}, Status: 200, Management: true, handler: a.listSubscriptions},
		{Method: "GET", Path: "/api/v1/routes", Response: apiv1.RouteList{}, Status: 200, Management: true, handler: a.listRoutes},
		{Method: "GET", Path: "/api/v1/retained", Response: apiv1.RetainedList{}, Status: 200, Management: true, handler: a.listRetained},
		{Method: "GET", Path: "/api/v1/retained/message", Response: apiv1.RetainedMessage{}, Status: 200, Management: true, handler: a.getRetained},
		{Method: "DELETE", Path: "/api/v1/retained/message", Status: 204, Management: true, handler: a.deleteRetained},
		{Method: "POST", Path: "/api/v1/publish", Request: apiv1.PublishRequest{}, Response: apiv1.PublishResult{}, Status: 200, Management: true, handler: a.publish},
		{Method: "GET", Path: "/api/v1/openapi.json", Status: 200, Management: true, handler: serveOpenAPI},
	}
}

type api struct {
	srv  *server.Server
	node *cluster.Node
	opts Options
	log  *slog.Logger
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
