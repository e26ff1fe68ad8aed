package cluster

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// link is this node's outbound connection to one other member. It carries this
// node's routes (a full snapshot on every (re)connect, then deltas), forwarded
// messages and requests; the peer answers acks and responses on it.
type link struct {
	r    *routing
	peer string
	addr string

	up      atomic.Bool
	mu      lockorder.Mutex // guards cd, seq, pending, stopped; held while the snapshot is written
	cd      *codec
	seq     uint64
	pending map[uint64]chan *frame
	stop    chan struct{}
	stopped bool
}

func (l *link) close() {
	l.mu.Lock()
	if !l.stopped {
		l.stopped = true
		close(l.stop)
		if l.cd != nil {
			_ = l.cd.conn.Close()
		}
	}
	l.mu.Unlock()
}

// run connects and reconnects until the link is closed.
func (l *link) run() {
	defer l.r.wg.Done()
	for {
		err := l.session()
		select {
		case <-l.stop:
			return
		case <-l.r.done:
			return
		default:
		}
		if err != nil {
			l.r.log.Debug("cluster link down", "peer", l.peer, "error", err)
		}
		select {
		case <-l.stop:
			return
		case <-l.r.done:
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// session runs one connection of the link.
func (l *link) session() error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	c, err := l.r.dialer.dial(ctx, l.addr, chanLink)
	cancel()
	if err != nil {
		return err
	}
	defer l.r.dialer.untrack(c)
	cd := newCodec(c)
	defer cd.close()
	id, idx := l.r.judge.helloView()
	if err := cd.write(&frame{Kind: fHello, Hello: &hello{ClusterID: id, ConfigIndex: idx}}); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	var f frame
	if err := cd.read(&f); err != nil || f.Kind != fHelloAck || f.Hello == nil {
		return err
	}
	_ = c.SetReadDeadline(time.Time{})
	if f.Hello.Code != "" {
		l.r.judge.refused(l.peer, f.Hello, idx, id)
		return errorf(f.Hello.Code, "%s", f.Hello.Message)
	}
	stopped := false
	// The snapshot goes out before any delta: route changes wait meanwhile.
	l.r.srv.WithLocalRoutes(func(local []server.Route) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.stopped {
			stopped = true
			return
		}
		err = cd.write(&frame{Kind: fRoutes, Routes: &routes{Full: true, Add: local}})
		l.cd = cd
		l.up.Store(true)
	})
	if stopped {
		return nil
	}
	l.r.log.Info("cluster link up", "peer", l.peer, "address", l.addr)
	if err == nil {
		err = l.readLoop(cd)
	}
	l.mu.Lock()
	l.up.Store(false)
	l.cd = nil
	for seq, ch := range l.pending {
		close(ch)
		delete(l.pending, seq)
	}
	l.mu.Unlock()
	l.r.log.Info("cluster link down", "peer", l.peer, "error", err)
	return err
}

func (l *link) readLoop(cd *codec) error {
	var f frame
	for {
		if err := cd.read(&f); err != nil {
			return err
		}
		switch f.Kind {
		case fAck, fResp:
			l.mu.Lock()
			ch := l.pending[f.Seq]
			delete(l.pending, f.Seq)
			l.mu.Unlock()
			if ch != nil {
				fc := f
				ch <- &fc
			}
		}
	}
}

// send writes f, registering a reply channel when wantReply. It fails when the link
// is down.
func (l *link) send(f *frame, wantReply bool) (chan *frame, error) {
	l.mu.Lock()
	cd := l.cd
	var ch chan *frame
	if cd != nil && wantReply {
		l.seq++
		f.Seq = l.seq
		ch = make(chan *frame, 1)
		l.pending[f.Seq] = ch
	}
	l.mu.Unlock()
	if cd == nil {
		return nil, errorf(apiv1.CodeUnreachable, "no link to %s", l.peer)
	}
	if err := cd.write(f); err != nil {
		_ = cd.conn.Close()
		return nil, errorf(apiv1.CodeUnreachable, "%s: %v", l.peer, err)
	}
	return ch, nil
}

func (l *link) forget(seq uint64) {
	l.mu.Lock()
	delete(l.pending, seq)
	l.mu.Unlock()
}
