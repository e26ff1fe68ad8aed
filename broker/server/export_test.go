package server

import "time"

// SetMoveTimeout shortens how long a session handed to another node waits for its
// release. Call it before the server handles any session.
func SetMoveTimeout(s *Server, d time.Duration) { s.moveTimeout = d }

// SetParkAfter sets how long an idle reader waits before its connection parks. Call
// it before any server starts (TestMain).
func SetParkAfter(d time.Duration) { parkAfter = d }
