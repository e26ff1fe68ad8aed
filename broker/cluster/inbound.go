package cluster

import (
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
	if err := cd.write(&frame{Kind: fHelloAck, Hello: ack}); err != nil || ack.Code != "" {
		if ack.Code != "" {
			r.log.Warn("cluster link refused", "peer", peer, "code", ack.Code, "reason", ack.Message)
		}
		return
	}
	in := &inbound{cd: cd}
	r.mu.Lock()
	r.inbound[peer] = in
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		current := r.inbound[peer] == in
		if current {
			delete(r.inbound, peer)
		}
		r.mu.Unlock()
		if current {
			r.srv.DropRemoteRoutes(peer)
		}
	}()
	for {
		if err := cd.read(&f); err != nil {
			return
		}
		switch f.Kind {
		case fRoutes:
			if f.Routes != nil {
				r.srv.SetRemoteRoutes(peer, f.Routes.Full, f.Routes.Add, f.Routes.Del)
			}
		case fForward:
			count := 0
			r.forwardedIn.Add(1)
			if m, err := store.DecodeMessage(f.Msg); err != nil {
				r.forwardFailure.Add(1)
				r.log.Error("undecodable forwarded message", "peer", peer, "error", err)
			} else {
				m.ID = f.MsgID
				count = r.srv.DeliverForwarded(m, f.Shared)
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
