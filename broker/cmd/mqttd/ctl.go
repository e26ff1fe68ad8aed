package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

const ctlUsage = `usage: mqttd ctl [--api URL] [--token-file FILE] [--ca-file FILE --server-name NAME] [-o table|json] COMMAND

Drives a running mqttd through its HTTP API (/api/v1, bearer token). The answers of
clients, subscriptions, retained, status and stats cover the whole cluster, whichever
node is asked. Output is a table, or the API's JSON with -o json.

commands:
  status                   every node: state, raft, version, uptime, connections
  stats                    every node's counters and their sum
  clients list [--node N] [--user U] [--prefix P] [--connected true|false] [--page N] [--limit N]
  clients show CLIENT_ID   one session: node, state, queue, subscriptions
  clients kick CLIENT_ID   disconnect a client (reason 0x98), wherever it is connected
  subscriptions list [--topic FILTER] [--client CLIENT_ID] [--node N] [--page N] [--limit N]
  routes list [--topic FILTER] [--page N] [--limit N]
  retained list [--prefix P] [--page N] [--limit N]
  retained show TOPIC      one retained message with its whole payload
  retained delete TOPIC    delete a retained message on every node
  publish TOPIC PAYLOAD [--qos 0|1|2] [--retain] [--base64]
  cluster                  members as this node sees them (= cluster status)
  node status              this node: name, cluster ID, raft state, store state, ready
  node evacuate            move clients and persistent sessions to other nodes
  node evacuation          progress of an evacuation
  node reset               wipe this node's store (cluster identity, sessions, retained)
  cluster status           members as this node sees them
  cluster bootstrap        create a new cluster with this node as its first member
  cluster join HOST:PORT   join the cluster of the member at HOST:PORT (its cluster port)
  cluster leave            leave the cluster gracefully
  cluster force-leave NODE remove a dead node from the cluster

environment: MQTTD_API (default http://127.0.0.1:8080, or https:// when
MQTTD_API_TLS_CERT_FILE is set, as in an operator's pod), MQTTD_API_TOKEN_FILE,
MQTTD_API_CA_FILE (default MQTTD_CLUSTER_TLS_CA_FILE), MQTTD_API_SERVER_NAME (default
POD_NAME for this pod's own API, else the URL's host): an https API is verified against
that CA and name.
`

// runCtl is `mqttd ctl`: the cluster verbs of the HTTP API from the command line.
func runCtl(args, environ []string, stdout, stderr io.Writer) int {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	fs := flag.NewFlagSet("mqttd ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	defURL := "http://127.0.0.1:8080"
	if env["MQTTD_API_TLS_CERT_FILE"] != "" {
		defURL = "https://127.0.0.1:8080" // this node serves its API over HTTPS
	}
	apiURL := fs.String("api", envOr(env, "MQTTD_API", defURL), "base URL of the node's HTTP API")
	caFile := fs.String("ca-file", envOr(env, "MQTTD_API_CA_FILE", env["MQTTD_CLUSTER_TLS_CA_FILE"]), "CA bundle an https API's certificate must chain to")
	serverName := fs.String("server-name", env["MQTTD_API_SERVER_NAME"], "name an https API's certificate must carry (default: POD_NAME for this pod's own API, else the URL's host)")
	tokenFile := fs.String("token-file", env["MQTTD_API_TOKEN_FILE"], "file with the API bearer token")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the answer")
	output := fs.String("o", "table", "output: table or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "mqttd ctl: -o %q: want table or json\n", *output)
		return exitConfig
	}
	method, path, body, render, err := ctlCommand(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "mqttd ctl: %v\n\n%s", err, ctlUsage)
		return exitConfig
	}
	var token string
	if *tokenFile != "" {
		raw, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "mqttd ctl: %v\n", err)
			return exitConfig
		}
		token = strings.TrimSpace(string(raw))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(*apiURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "mqttd ctl: %v\n", err)
		return exitConfig
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	if *serverName == "" && *apiURL == defURL {
		*serverName = env["POD_NAME"] // this pod's own API: its certificate names the pod
	}
	// No redirect is followed: a redirect would carry the token to another URL.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if strings.HasPrefix(*apiURL, "https://") && *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintf(stderr, "mqttd ctl: %v\n", err)
			return exitConfig
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(stderr, "mqttd ctl: %s holds no PEM certificate\n", *caFile)
			return exitConfig
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: *serverName, MinVersion: tls.VersionTLS12}}
	}
	resp, err := hc.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "mqttd ctl: %v\n", err)
		return exitFailed
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		fmt.Fprintf(stderr, "mqttd ctl: reading the answer: %v\n", err)
		return exitFailed
	}
	if resp.StatusCode >= 300 {
		var e struct{ Code, Message string }
		if json.Unmarshal(raw, &e) == nil && e.Code != "" {
			fmt.Fprintf(stderr, "mqttd ctl: %s: %s\n", e.Code, e.Message)
		} else {
			fmt.Fprintf(stderr, "mqttd ctl: %s: %s\n", resp.Status, bytes.TrimSpace(raw))
		}
		return exitFailed
	}
	if *output == "table" && render != nil {
		if err := render(raw, stdout); err != nil {
			fmt.Fprintf(stderr, "mqttd ctl: the answer does not decode: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
	var out bytes.Buffer
	if json.Indent(&out, raw, "", "  ") != nil {
		out.Reset()
		out.Write(raw)
	}
	fmt.Fprintln(stdout, strings.TrimSpace(out.String()))
	return exitOK
}

func envOr(env map[string]string, key, def string) string {
	if v := env[key]; v != "" {
		return v
	}
	return def
}

// ctlRequest maps a command line to an API request.
func ctlRequest(args []string) (method, path string, body []byte, err error) {
	cmd := strings.Join(args, " ")
	arg := func() (string, error) {
		if len(args) != 3 || args[2] == "" {
			return "", fmt.Errorf("%q needs one argument", strings.Join(args[:min(2, len(args))], " "))
		}
		return args[2], nil
	}
	switch {
	case cmd == "node status":
		return http.MethodGet, "/api/v1/node", nil, nil
	case cmd == "node evacuate":
		return http.MethodPost, "/api/v1/node/evacuate", nil, nil
	case cmd == "node evacuation":
		return http.MethodGet, "/api/v1/node/evacuation", nil, nil
	case cmd == "node reset":
		return http.MethodPost, "/api/v1/node/reset", nil, nil
	case cmd == "cluster status":
		return http.MethodGet, "/api/v1/cluster", nil, nil
	case cmd == "cluster bootstrap":
		return http.MethodPost, "/api/v1/cluster/bootstrap", nil, nil
	case cmd == "cluster leave":
		return http.MethodPost, "/api/v1/cluster/leave", nil, nil
	case len(args) >= 2 && args[0] == "cluster" && args[1] == "join":
		seed, err := arg()
		if err != nil {
			return "", "", nil, err
		}
		body, _ = json.Marshal(map[string]string{"seed": seed})
		return http.MethodPost, "/api/v1/cluster/join", body, nil
	case len(args) >= 2 && args[0] == "cluster" && args[1] == "force-leave":
		node, err := arg()
		if err != nil {
			return "", "", nil, err
		}
		body, _ = json.Marshal(map[string]string{"node": node})
		return http.MethodPost, "/api/v1/cluster/force-leave", body, nil
	}
	return "", "", nil, fmt.Errorf("unknown command %q", cmd)
}
