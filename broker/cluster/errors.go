package cluster

import (
	"errors"
	"fmt"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// Stable error codes: the HTTP API returns them and the operator acts on them.
const (
	CodeStaleStore     = apiv1.CodeStaleStore
	CodeCookieMismatch = apiv1.CodeCookieMismatch
	CodeNotMember      = apiv1.CodeNotMember
	CodeNoLeader       = apiv1.CodeNoLeader
	CodeAlreadyMember  = apiv1.CodeAlreadyMember
	CodeUnknownNode    = apiv1.CodeUnknownNode
	CodeUnreachable    = apiv1.CodeUnreachable
	CodeBadRequest     = apiv1.CodeBadRequest
	CodeEvacuating     = apiv1.CodeEvacuating
	CodeClientIDOwned  = apiv1.CodeClientIDOwned
	CodeInternal       = apiv1.CodeInternal
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
