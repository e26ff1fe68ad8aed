package cluster

import (
	"net"
	"sync/atomic"
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
	ack.Heartbeat = ack.Code == "" && f.Hello.Heartbeat // answered with fPong below
	if err := cd.write(&frame{Kind: fHelloAck, Hello: ack}); err != nil || ack.Code != "" {
		if ack.Code != "" {
			r.log.Warn("cluster link refused", "peer", peer, "code", ack.Code, "reason", ack.Message)
		}
		return
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
	var heard atomic.Bool
	if f.Hello.Heartbeat {
		done := make(chan struct{})
		defer close(done)
		go func() {
			if watchdog(c, &heard, done, nil) {
				r.heartbeatTimeouts.Add(1)
				r.log.Info("cluster link from peer closed: no frame in time (heartbeat timeout)", "peer", peer, "timeout", heartbeatTimeout)
			}
		}()
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
	var seen *delivered
	if linkID != 0 {
		seen = r.deliveredFrom(peer, linkID)
	}
	for {
		if err := cd.read(&f); err != nil {
			return
		}
		heard.Store(true)
		switch f.Kind {
		case fPing:
			if err := cd.tryWrite(&frame{Kind: fPong}); err != nil {
				return
			}
		case fRoutes:
			if f.Routes != nil {
				r.srv.SetRemoteRoutes(peer, f.Routes.Full, f.Routes.Add, f.Routes.Del)
			}
		case fForward:
			count := 0
			deliver := func() {
				r.forwardedIn.Add(1)
				if m, err := store.DecodeMessage(f.Msg); err != nil {
					r.forwardFailure.Add(1)
					r.log.Error("undecodable forwarded message", "peer", peer, "error", err)
				} else {
					m.ID = f.MsgID
					count = r.srv.DeliverForwarded(m, f.Shared)
				}
			}
			if seen == nil || f.Seq == 0 {
				deliver()
			} else if !seen.once(linkID, f.Seq, deliver) {
				r.duplicates.Add(1) // written again after a reconnect: delivered before
			}
			if f.Seq != 0 {
				if err := cd.write(&frame{Kind: fAck, Seq: f.Seq, Count: count}); err != nil {
					return
				}
			}
		case fReq:
			if f.Req == nil {
				continue
			}
			req, seq := f.Req, f.Seq
			go func() {
				_ = cd.write(&frame{Kind: fResp, Seq: seq, Resp: r.handle(peer, req)})
			}()
		}
	}
}
