package server_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// TestMain fails the package when any goroutine outlives the tests: every broker,
// connection and client a test starts must be gone once its cleanup ran.
//
// MQTTD_TEST_PARK_AFTER (a duration) sets how soon idle connections park: `make test`
// runs the package once more with 1ms, so that every test's connections park and
// resume between nearly all of their packets.
func TestMain(m *testing.M) {
	if v := os.Getenv("MQTTD_TEST_PARK_AFTER"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "MQTTD_TEST_PARK_AFTER:", err)
			os.Exit(2)
		}
		server.SetParkAfter(d)
	}
	goleak.VerifyTestMain(m)
}
