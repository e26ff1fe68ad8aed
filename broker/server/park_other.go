//go:build !linux

package server

import (
	"errors"
	"syscall"
)

// Connections park only on Linux (epoll); elsewhere readers keep waiting in Read.
func newParker(func(*client)) (*parker, error) {
	return nil, errors.New("parking idle connections needs Linux")
}

func epollAdd(int, syscall.RawConn, parkRef) error { return errors.ErrUnsupported }

func epollDel(int, syscall.RawConn) {}
