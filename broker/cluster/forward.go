package cluster

import (
	"errors"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// forward sends msg to the nodes in targets: one frame per interested node, sent at
// once. QoS 1 and 2 go through each link's outbox (link.forward), which keeps them
// until the peer acknowledges them, across reconnects; the returned wait collects the
// acks of the peers that are reachable, so the publisher's ack (sent after it) means
// every interested node queued the message or, for a peer that is unreachable or
// slower than requestTimeout, that the message waits in its outbox for it (counted as
// one session: it is delivered when the peer is back). QoS 0 goes only to reachable
// peers, written at once.
func (r *routing) forward(msg *session.Message, targets map[string][]server.Route) func() int {
	data := store.EncodeMessage(msg)
	type wait struct {
		l  *link
		ch chan *frame
	}
	var waits []wait
	held := 0 // messages kept in an outbox for an unreachable peer: one session each
	for node, shared := range targets {
		l := r.link(node)
		if l == nil {
			continue
		}
		f := &frame{Kind: fForward, Msg: data, MsgID: msg.ID, Shared: shared}
		var ch chan *frame
		var err error
		switch {
		case msg.QoS > 0:
			ch, err = l.forward(f)
		case !l.up.Load():
			r.forwardFailure.Add(1) // QoS 0 is at most once: not kept, not logged per message
			continue
		default:
			_, err = l.send(f, false)
		}
		if err != nil {
			r.forwardFailure.Add(1)
			if !errors.Is(err, errOutboxFull) { // logged once per episode by the link
				r.log.Warn("message not forwarded", "peer", node, "topic", msg.Topic, "error", err)
			}
			continue
		}
		r.forwardedOut.Add(1)
		switch {
		case ch != nil:
			waits = append(waits, wait{l, ch})
		case msg.QoS > 0:
			held++ // the peer is unreachable: the message waits in the outbox
		}
	}
	if len(waits) == 0 {
		return constWait(held)
	}
	sent, base := time.Now(), held
	return func() int {
		count := base
		deadline := time.NewTimer(max(requestTimeout-time.Since(sent), 0))
		defer deadline.Stop()
		expired := false
		for _, w := range waits {
			if !expired {
				select {
				case resp, ok := <-w.ch:
					if !ok {
						count++ // the link went down first: the message waits in the outbox
					} else {
						count += resp.Count
					}
					continue
				case <-deadline.C:
					expired = true
				}
			}
			count++ // no ack in time: the message stays in the outbox until acked
			r.log.Debug("forwarded message not acknowledged in time: kept in the outbox until the peer acknowledges it", "peer", w.l.peer, "topic", msg.Topic)
		}
		return count
	}
}

func zeroWait() int { return 0 }

// constWait returns a wait that returns n (no allocation for 0: the QoS 0 path).
func constWait(n int) func() int {
	if n == 0 {
		return zeroWait
	}
	return func() int { return n }
}
