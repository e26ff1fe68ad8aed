package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when any goroutine outlives the tests: every broker,
// connection and client a test starts must be gone once its cleanup ran.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
