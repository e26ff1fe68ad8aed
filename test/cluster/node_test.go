package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/mqttdproc"
)

// Bounds of the waits on processes.
const (
	startTimeout = 20 * time.Second // from exec to all listeners open
	stopTimeout  = 15 * time.Second // SIGTERM to exit (mqttd's shutdown_timeout is 10s)
	logTail      = 60               // log lines printed per node when a test fails
)

// nodeOptions are the flags a node is started with; a restart reuses them.
type nodeOptions struct {
	name        string
	clusterAddr string   // fixed for the node's life; empty: a free port is picked
	dataDir     string   // empty: a new t.TempDir()
	cookieFile  string   // empty: the package's cookie
	seeds       []string // --cluster.seeds
	bootstrap   bool     // --cluster.bootstrap=true
	extra       []string // more flags
	dashboard   bool     // --dashboard.listen on a free port
}

// node is one mqttd process (and its restarts) with the same name, cluster address
// and data directory.
type node struct {
	t    *testing.T
	opts nodeOptions
	logs *mqttdproc.Log

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}            // closed when the current process has exited
	exitErr  error                    // valid once exited is closed
	mqttAddr string                   // MQTT over TCP, new at every start
	apiAddr  string                   // HTTP API, new at every start
	dashAddr string                   // the dashboard (with opts.dashboard), new at every start
	pending  chan mqttdproc.Listening // "listening" lines of the current process
}

func (n *node) name() string        { return n.opts.name }
func (n *node) clusterAddr() string { return n.opts.clusterAddr }

// mqttAddress returns the node's current MQTT address (it changes when the node restarts).
func (n *node) mqttAddress() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mqttAddr
}

func (n *node) dashboardAddress() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dashAddr
}

func (n *node) apiAddress() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.apiAddr
}

// startNode starts a node and waits until its listeners are open. The process is
// killed when the test ends; when the test fails, the tail of its log is printed.
func startNode(t *testing.T, opts nodeOptions) *node {
	t.Helper()
	n := newNode(t, opts)
	// The cluster port was free a moment ago; another process may have taken it since.
	// Only a node without a store may move to another port, so retry only here.
	for attempt := 1; ; attempt++ {
		n.launch()
		err := n.awaitListening()
		if err == nil {
			return n
		}
		if attempt < 3 && opts.clusterAddr == "" && strings.Contains(n.logs.String(), "address already in use") {
			n.kill()
			n.opts.clusterAddr = clusterAddr(t)
			continue
		}
		t.Fatalf("%s: %v", n.name(), err)
	}
}

// newNode prepares a node without starting it.
func newNode(t *testing.T, opts nodeOptions) *node {
	t.Helper()
	if opts.clusterAddr == "" {
		opts.clusterAddr = clusterAddr(t)
	}
	if opts.dataDir == "" {
		opts.dataDir = t.TempDir()
	}
	if opts.cookieFile == "" {
		opts.cookieFile = cookieFile
	}
	n := &node{t: t, opts: opts, logs: &mqttdproc.Log{}}
	t.Cleanup(func() {
		n.kill()
		if r := n.logs.Race(); r != "" {
			t.Errorf("%s: the mqttd process reported a data race:\n%s", n.name(), r)
		}
		if t.Failed() {
			t.Logf("--- last %d log lines of %s ---\n%s", logTail, n.name(), n.logs.Tail(logTail))
			// MQTTD_TEST_LOG_DIR keeps the whole log of a failed test's nodes (for runs
			// in a loop, where the tail is not enough to tell what happened).
			if dir := os.Getenv("MQTTD_TEST_LOG_DIR"); dir != "" {
				name := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+n.name()+".log")
				if err := os.WriteFile(name, []byte(n.logs.String()), 0o600); err != nil {
					t.Logf("keeping the log of %s: %v", n.name(), err)
				}
			}
		}
	})
	return n
}

func (n *node) args() []string {
	o := n.opts
	args := []string{
		"--listeners.tcp", "127.0.0.1:0",
		"--listeners.websocket", "",
		"--api.listen", "127.0.0.1:0",
		"--api.token-file", tokenFile,
		"--store.dir", o.dataDir,
		"--log.format", "json",
		"--log.level", "debug",
		"--cluster.listen", o.clusterAddr,
		"--cluster.cookie-file", o.cookieFile,
		"--cluster.node-name", o.name,
	}
	if len(o.seeds) > 0 {
		args = append(args, "--cluster.seeds", strings.Join(o.seeds, ","))
	}
	if o.bootstrap {
		args = append(args, "--cluster.bootstrap=true")
	}
	if o.dashboard {
		args = append(args, "--dashboard.listen", "127.0.0.1:0")
	}
	return append(args, o.extra...)
}

// launch starts the process without waiting for it to listen.
func (n *node) launch() {
	n.t.Helper()
	cmd := exec.Command(mqttdBin, n.args()...)
	n.logs.Add(fmt.Sprintf("=== %s: start %s", time.Now().Format(time.TimeOnly), strings.Join(cmd.Args, " ")))
	listening := make(chan mqttdproc.Listening, 8)
	w := &mqttdproc.LineWriter{OnLine: func(line string) {
		n.logs.Add(line)
		if ev, ok := mqttdproc.ParseListening(line); ok {
			select {
			case listening <- ev:
			default:
			}
		}
	}}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("%s: start mqttd: %v", n.name(), err)
	}
	exited := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.exited, n.mqttAddr, n.apiAddr = cmd, exited, "", ""
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		w.Flush()
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		n.logs.Add(fmt.Sprintf("=== %s: exited: %v", time.Now().Format(time.TimeOnly), err))
		close(exited)
	}()
	n.pending = listening
}

// awaitListening waits for the "listening" log lines of the MQTT, API and cluster
// listeners of the process started last.
func (n *node) awaitListening() error {
	deadline := time.After(startTimeout)
	want := map[string]bool{"tcp": true, "api": true, "cluster": true}
	if n.opts.dashboard {
		want["dashboard"] = true
	}
	for len(want) > 0 {
		select {
		case ev := <-n.pending:
			if !want[ev.Listener] {
				continue
			}
			delete(want, ev.Listener)
			n.mu.Lock()
			switch ev.Listener {
			case "tcp":
				n.mqttAddr = ev.Address
			case "api":
				n.apiAddr = ev.Address
			case "dashboard":
				n.dashAddr = ev.Address
			case "cluster":
				if ev.Address != n.opts.clusterAddr {
					n.mu.Unlock()
					return fmt.Errorf("cluster listener on %s, want %s", ev.Address, n.opts.clusterAddr)
				}
			}
			n.mu.Unlock()
		case <-n.exitedChan():
			return fmt.Errorf("mqttd exited before listening: %w", n.exitError())
		case <-deadline:
			return fmt.Errorf("listeners %v not open within %v", keys(want), startTimeout)
		}
	}
	return nil
}

// restart starts a stopped node again with the same flags and data directory.
func (n *node) restart() {
	n.t.Helper()
	if n.running() {
		n.t.Fatalf("%s: restart of a running node", n.name())
	}
	n.launch()
	if err := n.awaitListening(); err != nil {
		n.t.Fatalf("%s: %v", n.name(), err)
	}
}

func (n *node) exitedChan() chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exited
}

func (n *node) exitError() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exitErr
}

func (n *node) running() bool {
	ch := n.exitedChan()
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for a clean exit (status 0); it kills the process and
// fails the test if it does not stop in time.
func (n *node) stop() {
	n.t.Helper()
	if !n.running() {
		return
	}
	n.signal(syscall.SIGTERM)
	select {
	case <-n.exitedChan():
		if err := n.exitError(); err != nil {
			n.t.Errorf("%s: exit after SIGTERM: %v", n.name(), err)
		}
	case <-time.After(stopTimeout):
		n.t.Errorf("%s: still running %v after SIGTERM; killing it", n.name(), stopTimeout)
		n.kill()
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *node) kill() {
	if !n.running() {
		return
	}
	n.signal(syscall.SIGKILL)
	<-n.exitedChan()
}

func (n *node) signal(sig os.Signal) {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	_ = cmd.Process.Signal(sig)
}

// clusterPorts are this package's cluster ports (test/lifecycle uses the range above).
var clusterPorts = mqttdproc.NewPorts(10000, 21000)

// clusterAddr returns a free loopback address for a node's cluster port, one that
// stays free while the node is down (see mqttdproc.Ports).
func clusterAddr(t testing.TB) string {
	t.Helper()
	addr, err := clusterPorts.Next()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// writeCookie writes a cookie file of the test's own.
func writeCookie(t testing.TB, cookie string) string {
	t.Helper()
	p := t.TempDir() + "/cookie"
	if err := os.WriteFile(p, []byte(cookie+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
