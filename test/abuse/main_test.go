// Package abuse holds the acceptance tests of mqttd's abuse limits (issue 11): each
// test runs a real mqttd process on random loopback ports, reads its memory from
// /proc/<pid>/status (VmRSS) and its counters from /metrics, and talks to it with real
// MQTT clients (eclipse/paho.golang for v5, eclipse/paho.mqtt.golang for 3.1.1) or,
// where a test needs a misbehaving client (one that never sends CONNECT, never reads,
// or floods), with raw sockets.
//
// Nothing waits with a sleep: every wait polls with a deadline. Tests do not run in
// parallel: they measure memory and latency, which other tests would disturb. Sizes
// stay within 2 cores and 20,000 open files per process.
package abuse

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/mqtt-operator/mqtt-operator/test/mqttdproc"
)

// mqttdBin is the broker binary under test, built once by TestMain.
var mqttdBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mqttd-abuse-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if mqttdBin, err = mqttdproc.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	// Every client a test started must be gone: no goroutine outlives the tests.
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintf(os.Stderr, "goroutines left after the tests: %v\n", err)
		return 1
	}
	return code
}
