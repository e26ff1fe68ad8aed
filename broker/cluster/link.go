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
	mu      lockorder.Mutex // guards the fields below; held while the snapshot is written
	cd      *codec
	seq     uint64
	pending map[uint64]chan *frame
	stop    chan struct{}
	stopped bool

	// The outbox: the QoS 1 and 2 forwards (and ordered requests) the peer has not
	// acknowledged, in the order of their Seq. The link's sender writes them; each
	// reconnect writes all of them again, in order, before anything newer (the peer
	// skips the ones it already delivered: dedup.go), so a message acknowledged to its
	// publisher while the peer was unreachable reaches it after the heal. Bounded by
	// outboxMaxMessages and outboxMaxBytes; past that a forward is refused, counted and
	// logged (outboxFull). Held in memory: lost if this node stops.
	out      []*frame
	outBytes int
	unsent   int  // out[unsent:] are not written on the current connection
	outFull  bool // a forward was refused since the outbox last took one (logged once)
	kick     chan struct{}
}

// Outbox bounds, per peer.
const (
	outboxMaxMessages = 100_000
	outboxMaxBytes    = 64 << 20
	outboxOverhead    = 64 // bytes counted per message besides its record
)

// errOutboxFull: a forward was not kept for an unreachable peer.
var errOutboxFull = errorf(apiv1.CodeUnreachable, "the outbox for the unreachable peer is full")

func newLink(r *routing, peer, addr string) *link {
	return &link{r: r, peer: peer, addr: addr, id: randomID(), pending: map[uint64]chan *frame{},
		stop: make(chan struct{}), kick: make(chan struct{}, 1)}
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
	if err := cd.write(&frame{Kind: fHello, Hello: &hello{ClusterID: id, ConfigIndex: idx, Heartbeat: true, LinkID: l.id}}); err != nil {
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
		l.unsent = 0 // the sender writes the whole outbox again, first
		l.up.Store(true)
	})
	if stopped {
		return nil
	}
	l.r.log.Info("cluster link up", "peer", l.peer, "address", l.addr)
	senderDone := make(chan struct{})
	defer close(senderDone)
	go l.sender(cd, senderDone)
	var heard atomic.Bool
	var silent atomic.Bool
	if err == nil && f.Hello.Heartbeat {
		done := make(chan struct{})
		defer close(done)
		go func() {
			silent.Store(watchdog(c, &heard, done, func() { _ = cd.tryWrite(&frame{Kind: fPing}) }))
		}()
	}
	if err == nil {
		err = l.readLoop(cd, &heard)
	}
	if silent.Load() {
		l.r.heartbeatTimeouts.Add(1)
		err = fmt.Errorf("no frame from %s in %s (heartbeat timeout): %w", l.peer, heartbeatTimeout, err)
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

func (l *link) readLoop(cd *codec, heard *atomic.Bool) error {
	var f frame
	for {
		if err := cd.read(&f); err != nil {
			return err
		}
		heard.Store(true)
		switch f.Kind {
		case fAck, fResp:
			l.mu.Lock()
			ch := l.pending[f.Seq]
			delete(l.pending, f.Seq)
			l.acked(f.Kind, f.Seq)
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

// forward queues f, a QoS 1 or 2 forward or an ordered request, in the outbox and
// returns the channel its answer will come on while the link is up: closed when the
// link goes down first (the message then waits in the outbox for the next
// connection). With the link down it returns no channel: the message waits. It
// fails only when the link is closed or the outbox is full (the message is not kept).
func (l *link) forward(f *frame) (chan *frame, error) {
	size := len(f.Msg) + outboxOverhead
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return nil, errorf(apiv1.CodeUnreachable, "no link to %s", l.peer)
	}
	if len(l.out) >= outboxMaxMessages || l.outBytes+size > outboxMaxBytes {
		first := !l.outFull
		l.outFull = true
		held, bytes := len(l.out), l.outBytes
		l.mu.Unlock()
		if f.Kind == fForward {
			l.r.outboxDropped.Add(1)
		}
		if first {
			l.r.log.Error("outbox for an unreachable peer is full: messages for it are dropped and counted until it takes them", "peer", l.peer, "messages", held, "bytes", bytes)
		}
		return nil, errOutboxFull
	}
	l.outFull = false
	l.seq++
	f.Seq = l.seq
	l.out = append(l.out, f)
	l.outBytes += size
	var ch chan *frame
	if l.cd != nil {
		ch = make(chan *frame, 1)
		l.pending[f.Seq] = ch
	}
	l.mu.Unlock()
	if f.Kind == fForward {
		l.r.outboxed.Add(1)
	}
	select {
	case l.kick <- struct{}{}:
	default: // the sender is awake already
	}
	return ch, nil
}

// sender writes the outbox's unsent frames on cd, in order, until done is closed or a
// write fails (the read loop then ends the connection).
func (l *link) sender(cd *codec, done <-chan struct{}) {
	var batch []*frame
	for {
		l.mu.Lock()
		if l.cd == cd {
			batch = append(batch[:0], l.out[l.unsent:]...)
			l.unsent = len(l.out)
		}
		l.mu.Unlock()
		for _, f := range batch {
			if cd.write(f) != nil {
				return
			}
		}
		clear(batch)
		batch = batch[:0]
		select {
		case <-l.kick:
		case <-done:
			return
		}
	}
}

// acked drops from the outbox what the peer's answer (kind, seq) shows it has read:
// an ack of a forward means every earlier frame of the outbox was read before it (the
// sender writes them in order, the peer delivers forwards in the order it reads them
// and acks each), so the outbox's head up to seq goes. A response is to a request the
// peer answers on its own goroutine, perhaps before earlier forwards are acked: it
// drops only itself, when at the head. l.mu held.
func (l *link) acked(kind byte, seq uint64) {
	n := 0
	switch {
	case kind == fAck:
		for n < l.unsent && l.out[n].Seq <= seq {
			n++
		}
	case len(l.out) > 0 && l.unsent > 0 && l.out[0].Seq == seq:
		n = 1
	}
	if n == 0 {
		return
	}
	forwards := 0
	for i := range n {
		if l.out[i].Kind == fForward {
			forwards++
		}
		l.outBytes -= len(l.out[i].Msg) + outboxOverhead
		l.out[i] = nil
	}
	l.out = l.out[n:]
	l.unsent -= n
	l.r.outboxed.Add(-int64(forwards))
}
