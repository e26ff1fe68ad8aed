package cluster

import (
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// forward sends msg to the nodes in targets: one frame per interested node, sent at once; the
// returned wait collects every node's ack for QoS 1 and 2, so the publisher's ack
// (sent after it) means they all queued the message.
func (r *routing) forward(msg *session.Message, targets map[string][]server.Route) func() int {
	data := store.EncodeMessage(msg)
	type wait struct {
		l   *link
		seq uint64
		ch  chan *frame
	}
	var waits []wait
	count := 0
	for node, shared := range targets {
		l := r.link(node)
		if l == nil {
			continue
		}
		f := &frame{Kind: fForward, Msg: data, MsgID: msg.ID, Shared: shared}
		ch, err := l.send(f, msg.QoS > 0)
		if err != nil {
			r.forwardFailure.Add(1)
			r.log.Warn("message not forwarded", "peer", node, "topic", msg.Topic, "error", err)
			continue
		}
		r.forwardedOut.Add(1)
		if ch != nil {
			waits = append(waits, wait{l, f.Seq, ch})
		}
	}
	if len(waits) == 0 {
		return func() int { return 0 }
	}
	sent := time.Now()
	return func() int {
		deadline := time.NewTimer(max(requestTimeout-time.Since(sent), 0))
		defer deadline.Stop()
		expired := false
		for _, w := range waits {
			if !expired {
				select {
				case resp, ok := <-w.ch:
					if ok {
						count += resp.Count
					}
					continue
				case <-deadline.C:
					expired = true
				}
			}
			w.l.forget(w.seq)
			r.forwardFailure.Add(1)
			r.log.Warn("forwarded message not acknowledged in time", "peer", w.l.peer, "topic", msg.Topic)
		}
		return count
	}
}
