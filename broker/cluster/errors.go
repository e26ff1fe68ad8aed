package cluster

import (
	"errors"
	"fmt"
)

// Stable error codes: the HTTP API returns them and the operator acts on them.
const (
	CodeStaleStore     = "stale_store"     // this node's store belongs to another cluster or it was removed
	CodeCookieMismatch = "cookie_mismatch" // the peer does not know our cookie
	CodeNotMember      = "not_member"      // the node is not (or no longer) in the cluster
	CodeNoLeader       = "no_leader"       // the cluster has no leader right now
	CodeAlreadyMember  = "already_member"  // bootstrap or join on a member
	CodeUnknownNode    = "unknown_node"    // force-leave of a node the cluster does not list
	CodeUnreachable    = "unreachable"     // the seed or leader cannot be reached
	CodeBadRequest     = "bad_request"     // malformed input
	CodeEvacuating     = "evacuating"      // the node is being evacuated
	CodeClientIDOwned  = "client_id_owned" // a takeover of another user's client ID
	CodeInternal       = "internal"        // anything else
)

// Error is a cluster error with a stable code.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the stable code of err (CodeInternal when it has none).
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, ErrCookieMismatch) {
		return CodeCookieMismatch
	}
	return CodeInternal
}
