//go:build lockorder

// Package lockorder provides the mutex types used across broker/; in this build (tag
// lockorder) they are go-deadlock's, which check the lock order (see lockorder.go).
package lockorder

import (
	"fmt"
	"os"
	"time"

	deadlock "github.com/sasha-s/go-deadlock"
)

// Mutex records its acquisitions' order (build tag lockorder).
type Mutex = deadlock.Mutex

// RWMutex records its acquisitions' order (build tag lockorder).
type RWMutex = deadlock.RWMutex

// Enabled reports whether lock order is being checked.
const Enabled = true

func init() {
	// A loaded CI machine running -race can hold a lock for seconds; a minute is a
	// deadlock, not slowness.
	deadlock.Opts.DeadlockTimeout = time.Minute
	deadlock.Opts.OnPotentialDeadlock = func() {
		fmt.Fprintln(os.Stderr, "lockorder: potential deadlock (see broker/LOCKS.md)")
		os.Exit(66)
	}
}
