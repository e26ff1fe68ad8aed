package cluster

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"

	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
)

// link is this node's outbound connection to one other member. It carries this
// node's routes (a full snapshot on every (re)connect, then deltas), forwarded
// messages and requests; the peer answers acks and responses on it.
type link struct {
	n    *Node
	peer string
	addr string

	up      atomic.Bool
	mu      sync.Mutex
	cd      *codec
	seq     uint64
	pending map[uint64]chan *frame
	stop    chan struct{}
	stopped bool
}

// setLinks keeps exactly one link per other member of servers.
func (n *Node) setLinks(servers []raft.Server) {
	want := make(map[string]string, len(servers))
	for _, s := range servers {
		if string(s.ID) != n.cfg.Name {
			want[string(s.ID)] = string(s.Address)
		}
	}
	var stop []*link
	n.mu.Lock()
	for name, l := range n.links {
		if addr, ok := want[name]; !ok || addr != l.addr {
			stop = append(stop, l)
			delete(n.links, name)
		}
	}
	if !n.closed {
		for name, addr := range want {
			if n.links[name] == nil {
				l := &link{n: n, peer: name, addr: addr, pending: map[uint64]chan *frame{}, stop: make(chan struct{})}
				n.links[name] = l
				n.wg.Add(1)
				go l.run()
			}
		}
	}
	n.mu.Unlock()
	for _, l := range stop {
		l.close()
		n.srv.DropRemoteRoutes(l.peer)
	}
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
	defer l.n.wg.Done()
	for {
		err := l.session()
		select {
		case <-l.stop:
			return
		case <-l.n.done:
			return
		default:
		}
		if err != nil {
			l.n.log.Debug("cluster link down", "peer", l.peer, "error", err)
		}
		select {
		case <-l.stop:
			return
		case <-l.n.done:
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// session runs one connection of the link.
func (l *link) session() error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	c, err := l.n.dial(ctx, l.addr, chanLink)
	cancel()
	if err != nil {
		return err
	}
	defer l.n.untrack(c)
	cd := newCodec(c)
	defer cd.close()
	_, idx := l.n.configView()
	l.n.mu.Lock()
	id := l.n.clusterID
	l.n.mu.Unlock()
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
		l.refused(f.Hello, idx, id)
		return errorf(f.Hello.Code, "%s", f.Hello.Message)
	}
	stopped := false
	// The snapshot goes out before any delta: route changes wait meanwhile.
	l.n.srv.WithLocalRoutes(func(local []server.Route) {
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
	l.n.log.Info("cluster link up", "peer", l.peer, "address", l.addr)
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
	l.n.log.Info("cluster link down", "peer", l.peer, "error", err)
	return err
}

// refused handles a peer's refusal of the link: a member of this node's cluster that
// lists a later configuration without this node makes it stale (the cluster removed
// it). A peer with another cluster ID proves nothing about this node: one of the two
// holds a foreign store, and a single peer cannot tell which (a healthy member that
// links to a node restarted on another cluster's store must not wipe itself); the
// join and the raft log decide that.
func (l *link) refused(h *hello, myIndex uint64, myCluster string) {
	switch h.Code {
	case apiv1.CodeNotMember:
		// Unknown index 0: not enough to tell.
		if myIndex > 0 && h.ConfigIndex > myIndex && h.ClusterID != "" && h.ClusterID == myCluster {
			l.n.markStale("the cluster removed this node while it was away: " + l.peer + " does not list it")
		}
	case apiv1.CodeStaleStore:
		// Not linked; the refusing side logs it ("cluster link refused").
	}
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

// request sends req to a member over its link and waits for the response.
func (n *Node) request(peer string, req *request) (*response, error) {
	n.mu.Lock()
	l := n.links[peer]
	n.mu.Unlock()
	if l == nil {
		return nil, errorf(apiv1.CodeUnreachable, "no link to %s", peer)
	}
	f := &frame{Kind: fReq, Req: req}
	ch, err := l.send(f, true)
	if err != nil {
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok || r.Resp == nil {
			return nil, errorf(apiv1.CodeUnreachable, "%s went away before answering", peer)
		}
		return r.Resp, nil
	case <-time.After(requestTimeout + 5*time.Second):
		l.forget(f.Seq)
		return nil, errorf(apiv1.CodeUnreachable, "%s did not answer in time", peer)
	}
}

// inbound is the accepted end of a peer's link.
type inbound struct{ cd *codec }

// serveInbound reads a peer's link: its routes, the messages it forwards and its
// requests.
func (n *Node) serveInbound(c net.Conn, peer string) {
	defer n.untrack(c)
	cd := newCodec(c)
	defer cd.close()
	var f frame
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	if err := cd.read(&f); err != nil || f.Kind != fHello || f.Hello == nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	ack := n.checkPeer(peer, f.Hello)
	if err := cd.write(&frame{Kind: fHelloAck, Hello: ack}); err != nil || ack.Code != "" {
		if ack.Code != "" {
			n.log.Warn("cluster link refused", "peer", peer, "code", ack.Code, "reason", ack.Message)
		}
		return
	}
	in := &inbound{cd: cd}
	n.mu.Lock()
	n.inbound[peer] = in
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		current := n.inbound[peer] == in
		if current {
			delete(n.inbound, peer)
		}
		n.mu.Unlock()
		if current {
			n.srv.DropRemoteRoutes(peer)
		}
	}()
	for {
		if err := cd.read(&f); err != nil {
			return
		}
		switch f.Kind {
		case fRoutes:
			if f.Routes != nil {
				n.srv.SetRemoteRoutes(peer, f.Routes.Full, f.Routes.Add, f.Routes.Del)
			}
		case fForward:
			count := 0
			n.forwardedIn.Add(1)
			if m, err := store.DecodeMessage(f.Msg); err != nil {
				n.forwardFailure.Add(1)
				n.log.Error("undecodable forwarded message", "peer", peer, "error", err)
			} else {
				count = n.srv.DeliverForwarded(m, f.Shared)
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
				_ = cd.write(&frame{Kind: fResp, Seq: seq, Resp: n.handleRequest(peer, req)})
			}()
		}
	}
}

// checkPeer decides whether a member's link is accepted.
func (n *Node) checkPeer(peer string, h *hello) *hello {
	servers, idx := n.configView()
	n.mu.Lock()
	defer n.mu.Unlock()
	ack := &hello{ClusterID: n.clusterID, ConfigIndex: idx}
	switch {
	case n.state != apiv1.StoreMember || !n.wasMember:
		ack.Code, ack.Message, ack.ClusterID, ack.ConfigIndex = apiv1.CodeNotMember, n.cfg.Name+" is not a member", "", 0
	case servers == nil: // raft is stopping: no view to judge by
		ack.Code, ack.Message, ack.ConfigIndex = apiv1.CodeNotMember, n.cfg.Name+" has no configuration to check against now", 0
	case h.ClusterID != "" && h.ClusterID != n.clusterID:
		ack.Code, ack.Message = apiv1.CodeStaleStore, "the store of "+peer+" belongs to cluster "+h.ClusterID+"; this cluster is "+n.clusterID
	case !containsServer(servers, peer):
		ack.Code, ack.Message = apiv1.CodeNotMember, peer+" is not a member of this cluster"
	}
	return ack
}

func containsServer(ss []raft.Server, name string) bool {
	for _, s := range ss {
		if string(s.ID) == name {
			return true
		}
	}
	return false
}

// handleRequest answers a request from peer (or from this node itself).
func (n *Node) handleRequest(peer string, req *request) *response {
	switch req.Op {
	case opJoin, opRemove, opApply:
		return n.handleLeaderOp(req)
	case opTakeover:
		snap, source, epoch, err := n.ownerTakeover(req.ClientID, req.Clean, peer, req.claim())
		if err != nil {
			return errResponse(err)
		}
		return sessionResponse(&response{Epoch: epoch, Node: source}, snap)
	case opKick:
		snap, err := n.srv.Kick(req.ClientID, req.Epoch, !req.Clean, req.claim())
		if err != nil {
			return errResponse(ownedError(err))
		}
		return sessionResponse(&response{}, snap)
	case opRelease:
		extra := n.srv.Release(req.ClientID)
		return sessionResponse(&response{}, &session.Snapshot{ID: req.ClientID, Queue: extra})
	case opSync:
		return &response{}
	case opAdopt:
		snap, err := store.DecodeSession(req.Data)
		if err != nil {
			return errResponse(errorf(apiv1.CodeBadRequest, "undecodable session: %v", err))
		}
		if !n.srv.AdoptSession(snap) {
			return &response{}
		}
		n.srv.AppendDeliveries(snap.ID, n.settle(snap.ID, peer))
		return &response{OK: true}
	case opUnmove:
		snap, err := store.DecodeSession(req.Data)
		if err != nil {
			return errResponse(errorf(apiv1.CodeBadRequest, "undecodable session: %v", err))
		}
		n.srv.Unmove(snap)
		return &response{}
	}
	return errResponse(errorf(apiv1.CodeBadRequest, "unknown request %q", req.Op))
}

func sessionResponse(resp *response, snap *session.Snapshot) *response {
	if snap == nil {
		return resp
	}
	b, err := store.EncodeSession(*snap)
	if err != nil {
		return errResponse(err)
	}
	resp.Data = b
	return resp
}

// RouteAdded implements server.Cluster.
func (n *Node) RouteAdded(r server.Route) { n.sendRoutes(&routes{Add: []server.Route{r}}) }

// RouteRemoved implements server.Cluster.
func (n *Node) RouteRemoved(r server.Route) { n.sendRoutes(&routes{Del: []server.Route{r}}) }

func (n *Node) sendRoutes(rs *routes) {
	n.mu.Lock()
	links := make([]*link, 0, len(n.links))
	for _, l := range n.links {
		links = append(links, l)
	}
	n.mu.Unlock()
	for _, l := range links {
		_, _ = l.send(&frame{Kind: fRoutes, Routes: rs}, false) // a down link gets a snapshot on reconnect
	}
}

// PeerUp implements server.Cluster.
func (n *Node) PeerUp(node string) bool {
	n.mu.Lock()
	l := n.links[node]
	n.mu.Unlock()
	return l != nil && l.up.Load()
}

// Forward implements server.Cluster: one frame per interested node, sent at once; the
// returned wait collects every node's ack for QoS 1 and 2, so the publisher's ack
// (sent after it) means they all queued the message.
func (n *Node) Forward(msg *session.Message, targets map[string][]server.Route) func() int {
	data := store.EncodeMessage(msg)
	type wait struct {
		l   *link
		seq uint64
		ch  chan *frame
	}
	var waits []wait
	count := 0
	for node, shared := range targets {
		n.mu.Lock()
		l := n.links[node]
		n.mu.Unlock()
		if l == nil {
			continue
		}
		f := &frame{Kind: fForward, Msg: data, Shared: shared}
		ch, err := l.send(f, msg.QoS > 0)
		if err != nil {
			n.forwardFailure.Add(1)
			n.log.Warn("message not forwarded", "peer", node, "topic", msg.Topic, "error", err)
			continue
		}
		n.forwardedOut.Add(1)
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
				case r, ok := <-w.ch:
					if ok {
						count += r.Count
					}
					continue
				case <-deadline.C:
					expired = true
				}
			}
			w.l.forget(w.seq)
			n.forwardFailure.Add(1)
			n.log.Warn("forwarded message not acknowledged in time", "peer", w.l.peer, "topic", msg.Topic)
		}
		return count
	}
}

// Retain implements server.Cluster: retained messages go through the raft log.
func (n *Node) Retain(msg *session.Message) error {
	if !n.isMember() {
		n.srv.ApplyRetained(msg)
		return nil
	}
	return n.apply(command{Op: "retain", Msg: store.EncodeMessage(msg)})
}
