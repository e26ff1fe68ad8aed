// Package cluster holds the acceptance tests of mqttd clustering (issue 5): each test
// runs real mqttd processes on 127.0.0.1 and talks to them with real MQTT clients
// (eclipse/paho.golang for v5, eclipse/paho.mqtt.golang for v3.1.1) and through the
// HTTP API, as an operator or a user would.
//
// Conventions: ports are random, except each node's cluster port, which is fixed per
// node for the life of a test because raft remembers member addresses and a restarted
// node must come back on the same one. Nothing waits with a sleep: every wait polls
// with a deadline. Each node keeps its whole log in memory; a failed test prints the
// tail of every node's log. Tests do not run in parallel: the machines that run them
// have few cores, and timing-sensitive cluster traffic suffers under contention.
package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
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
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mqttd-cluster-test")
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
