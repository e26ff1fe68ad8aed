package cluster

import (
	"cmp"
	"slices"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// A link's outbox holds the QoS 1 and 2 forwards the peer has not acknowledged, in
// the order of their Seq, and the ordered requests (a flush's sync) that must follow
// them. The link's sender writes them; each reconnect writes all of them again, in
// order, before anything newer (the peer skips the forwards it already delivered:
// dedup.go), so a message acknowledged to its publisher while the peer was unreachable
// reaches it after the heal. Bounded by outboxMaxMessages and outboxMaxBytes: while
// the peer is reachable a forward waits up to requestTimeout for room (back-pressure
// on the publisher, as a full link buffer was before); while it is unreachable, or
// after that wait, the forward is dropped, counted and logged. Held in memory: lost
// if this node stops.

// Outbox bounds, per peer.
const (
	outboxMaxMessages = 100_000
	outboxMaxBytes    = 64 << 20
	outboxOverhead    = 64 // bytes counted per message besides its record
)

// errOutboxFull: a forward was not kept for its peer.
var errOutboxFull = errorf(apiv1.CodeUnreachable, "the outbox for the peer is full")

func outboxSize(f *frame) int { return len(f.Msg) + outboxOverhead }

// forward queues f, a QoS 1 or 2 forward or an ordered request, in the outbox and
// returns the channel its answer will come on while the link is up: closed when the
// link goes down first (a forward then waits in the outbox for the next connection).
// With the link down it returns no channel: the message waits. It fails when the link
// is closed or the outbox stays full.
func (l *link) forward(f *frame) (chan *frame, error) {
	size := outboxSize(f)
	var timer *time.Timer // the wait for room, while the peer is reachable
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	l.mu.Lock()
	for {
		if l.stopped {
			l.mu.Unlock()
			return nil, errorf(apiv1.CodeUnreachable, "no link to %s", l.peer)
		}
		if len(l.out) < outboxMaxMessages && l.outBytes+size <= outboxMaxBytes {
			break
		}
		if l.cd != nil { // reachable: wait for the peer to take some
			if timer == nil {
				timer = time.NewTimer(requestTimeout)
			}
			room, stop := l.room, l.stop
			l.roomWaiters++
			l.mu.Unlock()
			expired := false
			select {
			case <-room:
			case <-stop:
			case <-timer.C:
				expired = true
			}
			l.mu.Lock()
			l.roomWaiters--
			if !expired {
				continue
			}
			if len(l.out) < outboxMaxMessages && l.outBytes+size <= outboxMaxBytes {
				break
			}
		}
		first := !l.outFull
		l.outFull = true
		held, bytes := len(l.out), l.outBytes
		l.mu.Unlock()
		if f.Kind == fForward {
			l.r.outboxDropped.Add(1)
		}
		if first {
			l.r.log.Error("outbox for a peer is full: messages for it are dropped and counted (mqttd_cluster_outbox_dropped_total) until it takes some",
				"peer", l.peer, "messages", held, "bytes", bytes)
		}
		return nil, errOutboxFull
	}
	l.seq++
	f.Seq = l.seq
	l.out = append(l.out, f)
	l.outBytes += size
	if f.Kind == fReq {
		l.reqs[f.Seq] = struct{}{}
	}
	var ch chan *frame
	if l.cd != nil {
		ch = make(chan *frame, 1)
		l.pending[f.Seq] = ch
	}
	kick := l.kick
	l.mu.Unlock()
	if f.Kind == fForward {
		l.r.outboxed.Add(1)
	}
	if kick != nil {
		select {
		case kick <- struct{}{}:
		default: // the sender is awake already
		}
	}
	return ch, nil
}

// sender writes the outbox's unsent frames on cd, in order, until done is closed or
// a write fails (the read loop then ends the connection). kick is this connection's.
func (l *link) sender(cd *codec, kick <-chan struct{}, done <-chan struct{}) {
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
		case <-kick:
		case <-done:
			return
		}
	}
}

// acked drops from the outbox what the peer's answer (kind, seq) shows it has read.
// An ack of a forward means every earlier frame of the outbox was read before it (the
// sender writes them in order, the peer delivers forwards in the order it reads them
// and acks each), so the head up to seq goes. A response to an ordered request
// removes only that request: the peer answers requests on their own goroutines. l.mu
// held.
func (l *link) acked(kind byte, seq uint64) {
	switch kind {
	case fAck:
		n := 0
		for n < l.unsent && l.out[n].Seq <= seq {
			n++
		}
		l.remove(0, n)
	case fResp:
		if _, ok := l.reqs[seq]; !ok {
			return
		}
		// Answered, so written: among out[:unsent], in Seq order.
		if i, found := slices.BinarySearchFunc(l.out[:l.unsent], seq, func(f *frame, s uint64) int {
			return cmp.Compare(f.Seq, s)
		}); found {
			l.remove(i, i+1)
		}
	}
}

// dropRequests removes the ordered requests from the outbox: the connection they were
// written on is gone, and their waiters were told so. l.mu held.
func (l *link) dropRequests() {
	if len(l.reqs) == 0 {
		return
	}
	for i := len(l.out) - 1; i >= 0; i-- {
		if l.out[i].Kind == fReq {
			l.remove(i, i+1)
		}
	}
}

// remove takes out[i:j] out of the outbox. l.mu held.
func (l *link) remove(i, j int) {
	if i >= j {
		return
	}
	forwards := 0
	for _, f := range l.out[i:j] {
		if f.Kind == fForward {
			forwards++
		} else {
			delete(l.reqs, f.Seq)
		}
		l.outBytes -= outboxSize(f)
	}
	if i == 0 {
		clear(l.out[:j])
		l.out = l.out[j:]
	} else {
		l.out = slices.Delete(l.out, i, j)
	}
	switch {
	case l.unsent >= j:
		l.unsent -= j - i
	case l.unsent > i:
		l.unsent = i
	}
	l.r.outboxed.Add(-int64(forwards))
	if l.outFull && len(l.out) < outboxMaxMessages/2 && l.outBytes < outboxMaxBytes/2 {
		l.outFull = false // the next refusal is logged again
	}
	if l.roomWaiters > 0 {
		close(l.room) // wake the forwards waiting for room
		l.room = make(chan struct{})
	}
}
