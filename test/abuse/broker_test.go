package abuse

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/test/mqttdproc"
)

const (
	startTimeout = 20 * time.Second
	stopTimeout  = 15 * time.Second
	logTail      = 40
)

// broker is one mqttd process.
type broker struct {
	t      testing.TB
	cmd    *exec.Cmd
	logs   *mqttdproc.Log
	exited chan struct{}
	tcp    string // MQTT over TCP, host:port
	ws     string // MQTT over WebSocket, host:port
	api    string // HTTP API, host:port
}

// startBroker starts mqttd with the given extra flags on random loopback ports and
// waits until it listens. It is stopped (SIGTERM, then SIGKILL) when the test ends.
func startBroker(t testing.TB, flags ...string) *broker {
	t.Helper()
	args := append([]string{
		"--listeners.tcp", "127.0.0.1:0",
		"--listeners.websocket", "127.0.0.1:0",
		"--api.listen", "127.0.0.1:0",
		"--log.format", "json",
		"--log.level", "info",
		"--sys-interval", "0s",
	}, flags...)
	b := &broker{t: t, cmd: exec.Command(mqttdBin, args...), logs: &mqttdproc.Log{}, exited: make(chan struct{})}
	listening := make(chan mqttdproc.Listening, 8)
	w := &mqttdproc.LineWriter{OnLine: func(line string) {
		b.logs.Add(line)
		if ev, ok := mqttdproc.ParseListening(line); ok {
			listening <- ev
		}
	}}
	b.cmd.Stdout, b.cmd.Stderr = w, w
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start mqttd: %v", err)
	}
	go func() {
		_ = b.cmd.Wait()
		w.Flush()
		close(b.exited)
	}()
	t.Cleanup(func() {
		b.stop()
		if r := b.logs.Race(); r != "" {
			t.Errorf("the mqttd process reported a data race:\n%s", r)
		}
		if t.Failed() {
			t.Logf("--- last %d log lines of mqttd ---\n%s", logTail, b.logs.Tail(logTail))
		}
	})
	deadline := time.After(startTimeout)
	for b.tcp == "" || b.ws == "" || b.api == "" {
		select {
		case ev := <-listening:
			switch ev.Listener {
			case "tcp":
				b.tcp = ev.Address
			case "websocket":
				b.ws = ev.Address
			case "api":
				b.api = ev.Address
			}
		case <-b.exited:
			t.Fatalf("mqttd exited before listening:\n%s", b.logs.Tail(logTail))
		case <-deadline:
			t.Fatalf("mqttd not listening within %v:\n%s", startTimeout, b.logs.Tail(logTail))
		}
	}
	return b
}

func (b *broker) stop() {
	select {
	case <-b.exited:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(stopTimeout):
		b.t.Errorf("mqttd still running %v after SIGTERM; killing it", stopTimeout)
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
}

// rss returns the process's resident memory (VmRSS) in bytes.
func (b *broker) rss() int64 {
	b.t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid))
	if err != nil {
		b.t.Fatalf("reading mqttd's memory: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	b.t.Fatal("no VmRSS in /proc/<pid>/status")
	return 0
}

// metric returns the value of one sample of /metrics, such as
// `mqttd_limit_refusals_total{limit="connections"}` or `mqttd_clients_connected`.
func (b *broker) metric(sample string) float64 {
	b.t.Helper()
	resp, err := http.Get("http://" + b.api + "/metrics")
	if err != nil {
		b.t.Fatalf("GET /metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("GET /metrics: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	b.t.Fatalf("no sample %s in /metrics", sample)
	return 0
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
