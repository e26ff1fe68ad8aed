package cluster

import (
	"context"
	"fmt"
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

	// id names this link object in its hellos: the peer's duplicate check (dedup.go)
	// starts over when it changes (this node restarted, or the link was re-created).
	id uint64

	up      atomic.Bool
	proto   atomic.Int32    // the link protocol version of the current connection
	mu      lockorder.Mutex // guards the fields below; held while the snapshot is written
	cd      *codec
	seq     uint64
	pending map[uint64]chan *frame
	// late are the requests whose waiter gave up (a timeout) while the link stayed
	// up: an answer that still comes is handed to its function (a moved session goes
	// back, for one). Dropped with the connection the request went out on.
	late    map[uint64]func(*response)
	stop    chan struct{}
	stopped bool

	// The outbox (outbox.go): the QoS 1 and 2 forwards (and ordered requests) the
	// peer has not acknowledged, in the order of their Seq.
	out         []*frame
	outBytes    int
	unsent      int                 // out[unsent:] are not written on the current connection
	outFull     bool                // a forward was refused since the outbox was last below half full (logged once)
	reqs        map[uint64]struct{} // Seqs of the ordered requests in out
	kick        chan struct{}       // wakes the current connection's sender; nil while down
	room        chan struct{}       // closed (and replaced) when entries leave the outbox while roomWaiters > 0
	roomWaiters int
}

func newLink(r *routing, peer, addr string) *link {
	return &link{r: r, peer: peer, addr: addr, id: randomID(), pending: map[uint64]chan *frame{},
		late: map[uint64]func(*response){}, stop: make(chan struct{}), reqs: map[uint64]struct{}{}, room: make(chan struct{})}
}

// close stops the link for good (the peer left the configuration, or this node
// stops); what its outbox still held is dropped, counted and logged.
func (l *link) close() {
	l.mu.Lock()
	dropped := 0
	if !l.stopped {
		l.stopped = true
		close(l.stop)
		if l.cd != nil {
			_ = l.cd.conn.Close()
		}
		for _, f := range l.out {
			if f.Kind == fForward {
				dropped++
			}
		}
		clear(l.out)
		l.out, l.outBytes, l.unsent = nil, 0, 0
	}
	l.mu.Unlock()
	l.r.outboxed.Add(-int64(dropped))
	if dropped > 0 {
		l.r.outboxDropped.Add(uint64(dropped))
		l.r.log.Warn("messages held for a peer dropped: its link closed (it left the cluster, or this node stops)", "peer", l.peer, "messages", dropped)
	}
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
	if err := cd.write(&frame{Kind: fHello, Hello: &hello{ClusterID: id, ConfigIndex: idx, Heartbeat: true, LinkID: l.id, Proto: l.r.proto}}); err != nil {
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
	if p := f.Hello.Proto; p != protoGob && (p != protoBinary || p > l.r.proto) {
		return errorf(apiv1.CodeInternal, "%s answered link protocol version %d; this node offered %d", l.peer, p, l.r.proto)
	}
	cd.use(f.Hello.Proto)
	l.proto.Store(int32(f.Hello.Proto))
	// Heartbeats start at once: the snapshot below may wait for the server's route
	// flush, and the peer's watchdog runs from its hello ack.
	hb := &heartbeat{}
	if f.Hello.Heartbeat {
		done := make(chan struct{})
		defer close(done)
		go hb.watch(c, cd, fPing, done)
	}
	stopped := false
	kick := make(chan struct{}, 1)
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
		l.kick = kick
		l.unsent = 0 // the sender writes the whole outbox again, first
		l.up.Store(true)
	})
	if stopped {
		return nil
	}
	l.r.log.Info("cluster link up", "peer", l.peer, "address", l.addr, "protocol", f.Hello.Proto)
	if up := l.r.onUp; up != nil {
		l.r.wg.Add(1) // run holds one already: no race with the final Wait
		go func() {
			defer l.r.wg.Done()
			up(l.peer)
		}()
	}
	senderDone := make(chan struct{})
	defer close(senderDone)
	go l.sender(cd, kick, senderDone)
	if err == nil {
		err = l.readLoop(cd, hb)
	}
	if hb.timedOut() {
		l.r.heartbeatTimeouts.Add(1)
		err = fmt.Errorf("nothing heard from %s in %s (heartbeat timeout): %w", l.peer, heartbeatTimeout, err)
	}
	l.mu.Lock()
	l.up.Store(false)
	l.cd = nil
	l.kick = nil
	for seq, ch := range l.pending {
		close(ch)
		delete(l.pending, seq)
	}
	if n := len(l.late); n > 0 {
		l.r.log.Warn("the answers to requests given up on will not come: their link is down", "peer", l.peer, "requests", n)
		clear(l.late)
	}
	l.dropRequests()
	l.mu.Unlock()
	l.r.log.Info("cluster link down", "peer", l.peer, "error", err)
	return err
}

func (l *link) readLoop(cd *codec, hb *heartbeat) error {
	var f frame
	for {
		if err := cd.read(&f); err != nil {
			return err
		}
		hb.heard()
		switch f.Kind {
		case fAck, fResp:
			l.mu.Lock()
			ch := l.pending[f.Seq]
			delete(l.pending, f.Seq)
			var late func(*response)
			if ch == nil && f.Kind == fResp {
				late = l.late[f.Seq]
				delete(l.late, f.Seq)
			}
			l.acked(f.Kind, f.Seq)
			l.mu.Unlock()
			switch {
			case ch != nil:
				fc := f
				ch <- &fc
			case late != nil && f.Resp != nil:
				select {
				case <-l.r.done: // the node stops: nothing is undone any more
				default:
					resp := f.Resp // f is read into again
					l.r.wg.Add(1)  // run holds one already: no race with the final Wait
					go func() {
						defer l.r.wg.Done()
						late(resp)
					}()
				}
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

// giveUp stops waiting for the answer to request seq. An answer that arrived
// meanwhile is returned; otherwise, with late, one that comes later on the same
// connection is handed to it.
func (l *link) giveUp(seq uint64, ch chan *frame, late func(*response)) *response {
	l.mu.Lock()
	_, waiting := l.pending[seq]
	if waiting {
		delete(l.pending, seq)
		if late != nil {
			l.late[seq] = late
		}
	}
	l.mu.Unlock()
	if waiting {
		return nil
	}
	// Taken out of pending by the read loop, which sends the answer right after, or
	// by the connection's end, which closes ch: either comes at once.
	if f, ok := <-ch; ok && f.Resp != nil {
		return f.Resp
	}
	return nil
}
