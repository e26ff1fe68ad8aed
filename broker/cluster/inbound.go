package cluster

import (
	"errors"
	"net"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// inbound is the accepted end of a peer's link.
type inbound struct{ cd *codec }

// serveInbound reads a peer's link: its routes, the messages it forwards and its
// requests.
func (r *routing) serveInbound(c net.Conn, peer string) {
	defer r.dialer.untrack(c)
	cd := newCodec(c)
	defer cd.close()
	var f frame
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	if err := cd.read(&f); err != nil || f.Kind != fHello || f.Hello == nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	ack := r.judge.judgeLink(peer, f.Hello)
	ack.Heartbeat = ack.Code == "" && f.Hello.Heartbeat // this end sends fPong keepalives
	if ack.Code == "" {
		ack.Proto = min(f.Hello.Proto, r.proto) // the dialer's highest, if this node speaks it
		if ack.Proto != protoBinary {
			ack.Proto = protoGob
		}
	}
	if err := cd.write(&frame{Kind: fHelloAck, Hello: ack}); err != nil || ack.Code != "" {
		if ack.Code != "" {
			r.log.Warn("cluster link refused", "peer", peer, "code", ack.Code, "reason", ack.Message)
		}
		return
	}
	cd.use(ack.Proto)
	hb := &heartbeat{}
	if ack.Heartbeat {
		done := make(chan struct{})
		defer close(done)
		go hb.watch(c, cd, fPong, done)
		defer func() {
			if hb.timedOut() {
				r.heartbeatTimeouts.Add(1)
				r.log.Info("cluster link from peer closed: nothing heard in time (heartbeat timeout)", "peer", peer, "timeout", heartbeatTimeout)
			}
		}()
	}
	in := &inbound{cd: cd}
	r.mu.Lock()
	old := r.inbound[peer]
	r.inbound[peer] = in
	r.mu.Unlock()
	if old != nil {
		// The peer reconnected: its previous connection is dead to it (a cut it noticed
		// first), and what it sends now comes on this one.
		_ = old.cd.conn.Close()
	}
	// The peer's routes stay when this connection ends: the peer is still a member
	// (setLinks forgets them when it leaves), so what its subscribers match still goes
	// to it, through the outbox while it is unreachable; its next connection's snapshot
	// replaces them.
	defer func() {
		r.mu.Lock()
		if r.inbound[peer] == in {
			delete(r.inbound, peer)
		}
		r.mu.Unlock()
	}()
	linkID := f.Hello.LinkID
	seen := r.deliveredFrom(peer, linkID)
	current := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.inbound[peer] == in
	}
	for {
		if err := cd.read(&f); err != nil {
			return
		}
		hb.heard()
		hb.busy(true)
		ok := r.inboundFrame(peer, cd, &f, seen, linkID, current)
		hb.busy(false)
		if !ok {
			return
		}
	}
}

// inboundFrame handles one frame of a peer's link; false ends the connection.
func (r *routing) inboundFrame(peer string, cd *codec, f *frame, seen *delivered, linkID uint64, current func() bool) bool {
	switch f.Kind {
	case fRoutes:
		if f.Routes != nil {
			// A connection the peer replaced may still hold frames it read before it was
			// closed: its route changes would undo the new connection's snapshot.
			seen.locked(func() {
				if current() {
					r.srv.SetRemoteRoutes(peer, f.Routes.Full, f.Routes.Add, f.Routes.Del)
				}
			})
		}
	case fForward:
		count := 0
		switch {
		case f.Seq == 0: // QoS 0: no ack, never written again
			count = r.deliverForward(peer, f)
		case seen.claim(linkID, f.Seq):
			count = r.deliverForward(peer, f)
			seen.release()
		default:
			r.duplicates.Add(1) // written again after a reconnect: delivered before
		}
		if f.Seq != 0 {
			if err := cd.write(&frame{Kind: fAck, Seq: f.Seq, Count: count}); err != nil {
				return false
			}
		}
	case fReq:
		if f.Req == nil {
			return true
		}
		req, seq := f.Req, f.Seq
		go func() {
			err := cd.write(&frame{Kind: fResp, Seq: seq, Resp: r.handle(peer, req)})
			if errors.Is(err, errFrameTooBig) { // the asker gets an answer all the same
				_ = cd.write(&frame{Kind: fResp, Seq: seq, Resp: errResponse(err)})
			}
		}()
	}
	return true
}

// deliverForward delivers a forwarded message here and returns how many sessions
// queued it.
func (r *routing) deliverForward(peer string, f *frame) int {
	r.forwardedIn.Add(1)
	m, err := store.DecodeMessage(f.Msg)
	if err != nil {
		r.forwardFailure.Add(1)
		r.log.Error("undecodable forwarded message", "peer", peer, "error", err)
		return 0
	}
	m.ID = f.MsgID
	return r.srv.DeliverForwarded(m, f.Shared)
}
