//go:build !lockorder

// Package lockorder provides the mutex types used across broker/. A normal build uses
// sync's; built with the tag `lockorder` (make test-lockorder) they are
// github.com/sasha-s/go-deadlock's, which record the order in which every goroutine
// takes locks and stop the process when two locks are ever taken in both orders (a
// potential deadlock) or a lock waits longer than DeadlockTimeout. See broker/LOCKS.md.
package lockorder

import "sync"

// Mutex is sync.Mutex in a normal build.
type Mutex = sync.Mutex

// RWMutex is sync.RWMutex in a normal build.
type RWMutex = sync.RWMutex

// Enabled reports whether lock order is being checked.
const Enabled = false
