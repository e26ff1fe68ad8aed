package partition

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	logTail      = 80               // log lines printed per node when a test fails
)

// Each node listens on fixed ports of its own namespace's address: the namespace and
// its address belong to this run alone, so nothing else can hold them.
const (
	mqttPort    = 1883
	apiPort     = 8080
	clusterPort = 4370
)

// node is one mqttd process running in the network namespace of node index.
type node struct {
	t     *testing.T
	index int
	ip    string
	logs  *mqttdproc.Log

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	exitErr error         // valid once exited is closed
}

// nodeName is the name of the i-th node (its raft server ID).
func nodeName(i int) string { return fmt.Sprintf("node-%d", i) }

func (n *node) name() string        { return nodeName(n.index) }
func (n *node) mqttAddress() string { return net.JoinHostPort(n.ip, strconv.Itoa(mqttPort)) }
func (n *node) apiAddress() string  { return net.JoinHostPort(n.ip, strconv.Itoa(apiPort)) }
func (n *node) clusterAddr() string { return net.JoinHostPort(n.ip, strconv.Itoa(clusterPort)) }

// startNode starts mqttd in node i's namespace and waits until its listeners are
// open. The process is killed when the test ends; when the test fails, the tail of
// its log is printed.
func startNode(t *testing.T, nw *network, i int) *node {
	t.Helper()
	n := &node{t: t, index: i, ip: nw.ip(i), logs: &mqttdproc.Log{}}
	dataDir := t.TempDir()
	t.Cleanup(func() {
		if !n.running() {
			t.Errorf("%s: mqttd exited during the test: %v", n.name(), n.exitError())
		}
		n.kill()
		if r := n.logs.Race(); r != "" {
			t.Errorf("%s: the mqttd process reported a data race:\n%s", n.name(), r)
		}
		if t.Failed() {
			t.Logf("--- last %d log lines of %s ---\n%s", logTail, n.name(), n.logs.Tail(logTail))
			if dir := os.Getenv("MQTTD_TEST_LOG_DIR"); dir != "" {
				file := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+n.name()+".log")
				if err := os.WriteFile(file, []byte(n.logs.String()), 0o600); err != nil {
					t.Logf("keeping the log of %s: %v", n.name(), err)
				}
			}
		}
	})
	args := []string{
		"netns", "exec", nsName(i), mqttdBin,
		"--listeners.tcp", n.mqttAddress(),
		"--listeners.websocket", "",
		"--api.listen", n.apiAddress(),
		"--api.token-file", tokenFile,
		"--store.dir", dataDir,
		"--log.format", "json",
		"--log.level", "debug",
		// The advertised cluster address defaults to cluster.listen when that names
		// one address, as here: the peers dial the node's namespace address.
		"--cluster.listen", n.clusterAddr(),
		"--cluster.cookie-file", cookieFile,
		"--cluster.node-name", n.name(),
	}
	// `ip netns exec` enters the namespace and execs mqttd in place: the child's PID
	// is mqttd's, so signals reach it directly.
	cmd := exec.Command("ip", args...)
	// If the test binary dies without its cleanups (a panic in a goroutine, a
	// timeout), the kernel kills the broker; the next run removes the namespaces.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	n.logs.Add(fmt.Sprintf("=== %s: start ip %s", time.Now().Format(time.TimeOnly), strings.Join(args, " ")))
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
		t.Fatalf("%s: start mqttd: %v", n.name(), err)
	}
	live.Lock()
	live.procs = append(live.procs, cmd.Process)
	live.Unlock()
	n.cmd, n.exited = cmd, make(chan struct{})
	go func() {
		err := cmd.Wait()
		w.Flush()
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		n.logs.Add(fmt.Sprintf("=== %s: exited: %v", time.Now().Format(time.TimeOnly), err))
		close(n.exited)
	}()

	deadline := time.After(startTimeout)
	want := map[string]bool{"tcp": true, "api": true, "cluster": true}
	for len(want) > 0 {
		select {
		case ev := <-listening:
			delete(want, ev.Listener)
		case <-n.exited:
			t.Fatalf("%s: mqttd exited before listening: %v", n.name(), n.exitError())
		case <-deadline:
			t.Fatalf("%s: listeners not open within %v: %v", n.name(), startTimeout, want)
		}
	}
	return n
}

func (n *node) exitError() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exitErr
}

// running reports whether the process has not exited.
func (n *node) running() bool {
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *node) kill() {
	if n.cmd == nil || !n.running() {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
}
