package lifecycle_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/test/mqttdproc"
)

// Bounds of the waits on processes.
const (
	startTimeout = 20 * time.Second // from exec to all listeners open
	stopTimeout  = 15 * time.Second // SIGTERM to exit (mqttd's shutdown_timeout is 10s)
	apiTimeout   = 5 * time.Second  // one GET of the test's own
	logTail      = 80               // log lines printed per pod when a spec fails
)

// brokerOptions are the flags of one mqttd process.
type brokerOptions struct {
	name        string // --cluster.node-name
	clusterAddr string // --cluster.listen, 127.0.0.1:<port fixed per pod>
	dataDir     string
	cookieFile  string
	tokenFile   string
	bootstrap   bool      // --cluster.bootstrap=true (the standalone cluster of the stale spec)
	configFile  string    // --config: the operator's rendered mqttd.yaml (podConfig), "" for none
	clusterTLS  [3]string // --cluster.tls-cert-file, -key-file, -ca-file (the pod's mounted files), empty for none
}

func (o brokerOptions) args() []string {
	var args []string
	if o.configFile != "" {
		args = append(args, "--config", o.configFile)
	}
	args = append(args,
		"--listeners.tcp", "127.0.0.1:0",
		"--listeners.websocket", "",
		"--api.listen", "127.0.0.1:0",
		"--api.token-file", o.tokenFile,
		"--store.dir", o.dataDir,
		"--log.format", "json",
		"--cluster.listen", o.clusterAddr,
		"--cluster.cookie-file", o.cookieFile,
		"--cluster.node-name", o.name,
	)
	if o.bootstrap {
		args = append(args, "--cluster.bootstrap=true")
	}
	if o.clusterTLS[0] != "" {
		args = append(args, "--cluster.tls-cert-file", o.clusterTLS[0], "--cluster.tls-key-file", o.clusterTLS[1],
			"--cluster.tls-ca-file", o.clusterTLS[2])
	}
	return args
}

// broker is one mqttd process: the container of one pod incarnation.
type broker struct {
	opts     brokerOptions
	logs     *mqttdproc.Log
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has exited
	exitErr  error         // valid once exited is closed
	apiAddr  string        // the HTTP API, host:port
	mqttAddr string        // MQTT over TCP, host:port
	tlsAddr  string        // MQTT over TLS (mqtts), when the configuration has it
}

// startBroker starts mqttd and waits until its MQTT, API and cluster listeners are
// open; the process's output goes to logs. On an error after the start it returns
// the exited process too (for its exit code).
func startBroker(opts brokerOptions, logs *mqttdproc.Log) (*broker, error) {
	cmd := exec.Command(mqttdBin, opts.args()...)
	logs.Add(fmt.Sprintf("=== %s: start %s", time.Now().Format(time.TimeOnly), strings.Join(cmd.Args, " ")))
	listening := make(chan mqttdproc.Listening, 8)
	w := &mqttdproc.LineWriter{OnLine: func(line string) {
		logs.Add(line)
		if ev, ok := mqttdproc.ParseListening(line); ok {
			select {
			case listening <- ev:
			default:
			}
		}
	}}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mqttd: %w", err)
	}
	b := &broker{opts: opts, logs: logs, cmd: cmd, exited: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		w.Flush()
		b.exitErr = err
		logs.Add(fmt.Sprintf("=== %s: exited: %v", time.Now().Format(time.TimeOnly), err))
		close(b.exited)
	}()
	deadline := time.After(startTimeout)
	want := map[string]bool{"tcp": true, "api": true, "cluster": true}
	for len(want) > 0 {
		select {
		case ev := <-listening:
			delete(want, ev.Listener)
			switch ev.Listener {
			case "tcp":
				b.mqttAddr = ev.Address
			case "api":
				b.apiAddr = ev.Address
			case "mqtts":
				b.tlsAddr = ev.Address // logged before the API's, so known once it is
			}
		case <-b.exited:
			return b, fmt.Errorf("mqttd exited before listening: %w", b.exitErr)
		case <-deadline:
			b.kill()
			return b, fmt.Errorf("mqttd listeners not open within %v", startTimeout)
		}
	}
	return b, nil
}

// running reports whether the process has not exited.
func (b *broker) running() bool {
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for the exit, as the kubelet does; it kills the process
// when it does not stop in time.
func (b *broker) stop() error {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
		return b.exitErr
	case <-time.After(stopTimeout):
		b.kill()
		return fmt.Errorf("still running %v after SIGTERM; killed", stopTimeout)
	}
}

// exitCode is the exit code of an exited process (-1 when killed by a signal).
func (b *broker) exitCode() int32 {
	<-b.exited
	return int32(b.cmd.ProcessState.ExitCode())
}

// kill sends SIGKILL and waits until the process is gone.
func (b *broker) kill() {
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.exited
}

// apiCall is one request the operator sent to a broker's /api/v1 (other than a GET).
type apiCall struct {
	pod    string
	method string
	path   string
	body   string
	status int
	start  time.Time
	end    time.Time
}

func (c apiCall) String() string {
	return fmt.Sprintf("%s %s %s %s %s -> %d", c.start.Format("15:04:05.000"), c.pod, c.method, c.path, c.body, c.status)
}

// callLog records the operator's calls, in the order they were answered.
type callLog struct {
	mu    sync.Mutex
	calls []apiCall
}

func (l *callLog) add(c apiCall) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, c)
}

// all returns the calls so far.
func (l *callLog) all() []apiCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]apiCall(nil), l.calls...)
}

// apiProxy stands between the operator and one broker process's API, as the pod's
// network would: it lives as long as the process and records the operator's writes.
type apiProxy struct {
	srv *http.Server
	url string
}

func startAPIProxy(pod, target string, calls *callLog) (*apiProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			rp.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		call := apiCall{pod: pod, method: r.Method, path: r.URL.Path, body: string(body), start: time.Now()}
		rp.ServeHTTP(rec, r)
		call.status, call.end = rec.status, time.Now()
		calls.add(call)
	})
	p := &apiProxy{srv: &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}, url: "http://" + l.Addr().String()}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

func (p *apiProxy) close() { _ = p.srv.Close() }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// registry answers the operator's pod-address seam (controllers.PodAddresses) with
// the addresses of the simulated pods' processes.
type registry struct {
	mu      sync.Mutex
	api     map[string]podAPI // namespace/pod -> the current process's API
	cluster map[string]string // namespace/pod -> cluster address, fixed for the pod's life
}

// podAPI is the API of the process of one pod incarnation.
type podAPI struct {
	uid types.UID
	url string
}

func newRegistry() *registry {
	return &registry{api: map[string]podAPI{}, cluster: map[string]string{}}
}

// API implements controllers.PodAddresses: the proxy in front of the process of this
// very pod (by UID, as a pod IP belongs to one pod), "" while there is none.
func (r *registry) API(mc *v1alpha1.MQTTCluster, pod *corev1.Pod) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.api[mc.Namespace+"/"+pod.Name]
	if !ok || pod.Status.PodIP == "" || (pod.UID != "" && pod.UID != a.uid) {
		return ""
	}
	return a.url
}

// Cluster implements controllers.PodAddresses.
func (r *registry) Cluster(mc *v1alpha1.MQTTCluster, pod *corev1.Pod) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cluster[mc.Namespace+"/"+pod.Name]
}

func (r *registry) setAPI(ns, pod string, uid types.UID, url string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if url == "" {
		delete(r.api, ns+"/"+pod)
		return
	}
	r.api[ns+"/"+pod] = podAPI{uid: uid, url: url}
}

func (r *registry) setCluster(ns, pod, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cluster[ns+"/"+pod] = addr
}

// forget drops every pod of namespace ns.
func (r *registry) forget(ns string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.api {
		if strings.HasPrefix(k, ns+"/") {
			delete(r.api, k)
		}
	}
	for k := range r.cluster {
		if strings.HasPrefix(k, ns+"/") {
			delete(r.cluster, k)
		}
	}
}

// The broker API's bodies, from the contract package the broker serves.

// nodeInfo is GET /api/v1/node.
type nodeInfo = apiv1.Node

// clusterView is GET /api/v1/cluster.
type clusterView struct{ apiv1.Cluster }

// names returns the members in the order of the raft configuration (join order).
func (v *clusterView) names() []string {
	var out []string
	for _, m := range v.Members {
		out = append(out, m.Name)
	}
	return out
}

// has reports whether the view lists node.
func (v *clusterView) has(node string) bool {
	for _, m := range v.Members {
		if m.Name == node {
			return true
		}
	}
	return false
}

var httpClient = &http.Client{Timeout: apiTimeout}

// getJSON GETs path from the API at addr (host:port) with the bearer token.
func getJSON(ctx context.Context, addr, token, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %s: %d %s", path, addr, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

// readyz reports whether the process at addr answers /readyz with 200, as the
// readiness probe of the pod does.
func readyz(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// copyDir copies the regular files and directories under src into dst (created).
func copyDir(src, dst string) error {
	return os.CopyFS(dst, os.DirFS(src))
}

var errNoProcess = errors.New("the pod has no running process")
