// Package partition holds network-partition tests of mqttd clustering, in the manner
// of Jepsen: each test runs three real mqttd processes, each in a Linux network
// namespace of its own, joined by a bridge in a switch namespace, and cuts and heals
// the network between them while real MQTT clients (eclipse/paho.golang, MQTT 5) in
// the test process publish and subscribe. Every message a publisher had acknowledged
// is accounted for at every subscriber.
//
// The tests need root and `ip netns` (iproute2); without them the package fails (it
// never skips: a skipped partition test must not pass for a green one). A cut is
// silent: packets between the two nodes vanish, with no reset and no ICMP, while the
// test process still reaches both (see network.cut).
//
// Conventions as in test/cluster: nothing waits with a sleep, every wait polls with a
// deadline; a failed test prints the tail of each node's log (and with
// MQTTD_TEST_LOG_DIR=dir writes each node's whole log there); tests do not run in
// parallel.
package partition

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/test/mqttdproc"
)

var (
	// mqttdBin is the broker binary under test, built once by TestMain.
	mqttdBin string
	// apiToken is the bearer token of every node's /api/v1, kept in tokenFile.
	apiToken  string
	tokenFile string
	// cookieFile holds the cookie of the clusters the tests form.
	cookieFile string
)

func TestMain(m *testing.M) {
	if os.Getenv(probeEnv) != "" {
		os.Exit(runProbe()) // the test binary re-executed inside a namespace (probe_test.go)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := preflight(); err != nil {
		fmt.Fprintf(os.Stderr, "test/partition cannot run here: %v\n", err)
		return 1
	}
	removeLeftovers()
	// A test binary stopped by a signal still removes what it set up (a panic or a
	// `go test -timeout` kill cannot be caught: the next run removes those leftovers).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		teardownAll()
		fmt.Fprintf(os.Stderr, "test/partition: stopped by %v; namespaces removed\n", sig)
		os.Exit(2)
	}()
	defer teardownAll()

	dir, err := os.MkdirTemp("", "mqttd-partition-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if mqttdBin, err = mqttdproc.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	apiToken = randomHex(16)
	tokenFile = filepath.Join(dir, "api-token")
	cookieFile = filepath.Join(dir, "cookie")
	for file, content := range map[string]string{tokenFile: apiToken, cookieFile: randomHex(24)} {
		if err := os.WriteFile(file, []byte(content+"\n"), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}
