//go:build linux

package server

import (
	"syscall"
	"time"
)

// newParker starts a poller; onResume runs, in a goroutine of its own, for every
// connection that wakes.
func newParker(onResume func(*client)) (*parker, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var pipe [2]int
	if err := syscall.Pipe2(pipe[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = syscall.Close(epfd)
		return nil, err
	}
	// The pipe's events carry a generation of 0, which no parking has.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	setRef(&ev, parkRef{})
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pipe[0], &ev); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(pipe[0])
		_ = syscall.Close(pipe[1])
		return nil, err
	}
	p := &parker{epfd: epfd, wakeR: pipe[0], wakeW: pipe[1], done: make(chan struct{}),
		epoch: time.Now(), onResume: onResume}
	go p.loop()
	return p, nil
}

func setRef(ev *syscall.EpollEvent, ref parkRef) {
	ev.Fd = int32(ref.slot)
	ev.Pad = int32(ref.gen)
}

// loop waits for events (at most a second, the wheel's resolution) until stop.
func (p *parker) loop() {
	defer close(p.done)
	defer func() {
		_ = syscall.Close(p.epfd)
		_ = syscall.Close(p.wakeR)
		_ = syscall.Close(p.wakeW)
	}()
	events := make([]syscall.EpollEvent, 256)
	wait := time.Second
	for {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		n, err := syscall.EpollWait(p.epfd, events, int(max(wait/time.Millisecond, 1)))
		if err != nil && err != syscall.EINTR {
			// Not expected; keep the wheel turning rather than spin.
			n = 0
			time.Sleep(10 * time.Millisecond)
		}
		for _, ev := range events[:max(n, 0)] {
			ref := parkRef{slot: uint32(ev.Fd), gen: uint32(ev.Pad)}
			if ref.gen == 0 {
				return // stop
			}
			p.wake(ref)
		}
		wait = p.tick(time.Now()) + time.Millisecond // just after the next second ends
	}
}

// epollAdd watches the socket of rc for input, a hang-up or an error, once.
func epollAdd(epfd int, rc syscall.RawConn, ref parkRef) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	setRef(&ev, ref)
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	}); cerr != nil {
		return cerr
	}
	return err
}

// epollDel stops watching the socket of rc (after a wake; a closed socket has left
// the set by itself).
func epollDel(epfd int, rc syscall.RawConn) {
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
}
