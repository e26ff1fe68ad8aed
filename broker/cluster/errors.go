package cluster

import (
	"errors"
	"fmt"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// Error is a cluster error with a stable code (one of apiv1.Code*: the HTTP API returns
// it and the operator acts on it).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the stable code of err (apiv1.CodeInternal when it has none).
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, ErrCookieMismatch) {
		return apiv1.CodeCookieMismatch
	}
	return apiv1.CodeInternal
}
