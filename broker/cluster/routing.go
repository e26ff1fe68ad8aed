package cluster

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// routing keeps one outbound link to every other member (link.go) and serves their
// links to this node (inbound.go): route replication (a full snapshot on every
// (re)connect, then deltas in order), forwarded messages (forward.go) and requests
// between members. It decides nothing about membership: the configuration it links
// to comes from setLinks, and a peer's hello is judged by membership (linkJudge).
type routing struct {
	self   string
	log    *slog.Logger
	srv    routeServer
	dialer linkDialer
	judge  linkJudge
	handle func(peer string, req *request) *response // answers a peer's request
	// onUp runs (on its own goroutine) each time a link to a peer comes up; onGone
	// when a peer leaves the configuration. Either may be nil.
	onUp, onGone func(peer string)
	// proto is the highest link protocol version this node offers and accepts
	// (protoLatest; tests set protoGob to play a node of an older release).
	proto int

	done <-chan struct{}
	wg   *sync.WaitGroup

	mu      lockorder.Mutex     // guards the fields below; a leaf (links are copied out)
	links   map[string]*link    // outbound links to the other members by name
	inbound map[string]*inbound // the current inbound link of each peer
	closed  bool
	// delivered: per peer, what its link delivered here (dedup.go); kept while this
	// node runs, so a reconnect's repeated forwards are skipped.
	delivered map[string]*delivered

	forwardedOut   atomic.Uint64
	forwardedIn    atomic.Uint64
	forwardFailure atomic.Uint64
	// heartbeatTimeouts counts links (either direction) closed because the peer sent
	// nothing for heartbeatTimeout.
	heartbeatTimeouts atomic.Uint64
	// outboxed: forwards waiting in the links' outboxes for their peer's ack;
	// outboxDropped: forwards not kept for a peer (its outbox was full, or its link
	// closed for good with them in it); duplicates: forwards from a peer that were
	// delivered here already (written again after a reconnect), acknowledged only.
	outboxed      atomic.Int64
	outboxDropped atomic.Uint64
	duplicates    atomic.Uint64
}

// routeServer is what routing needs of the broker: its routes and deliveries.
type routeServer interface {
	WithLocalRoutes(fn func([]server.Route))
	SetRemoteRoutes(node string, full bool, add, del []server.Route)
	DropRemoteRoutes(node string)
	DeliverForwarded(msg *session.Message, shared []server.Route) int
}

// linkDialer opens a link's connection (the transport).
type linkDialer interface {
	dial(ctx context.Context, addr string, ch byte) (net.Conn, error)
	untrack(c net.Conn)
}

// linkJudge is membership's side of a link's hello.
type linkJudge interface {
	helloView() (clusterID string, idx uint64)
	judgeLink(peer string, h *hello) *hello
	refused(peer string, h *hello, myIndex uint64, myCluster string)
}

func newRouting(self string, log *slog.Logger, done <-chan struct{}, wg *sync.WaitGroup) *routing {
	return &routing{self: self, log: log, done: done, wg: wg, links: map[string]*link{}, inbound: map[string]*inbound{},
		delivered: map[string]*delivered{}, proto: protoLatest}
}

// diffLinks compares the links a node has (peer name -> address) with the members of
// a configuration: the links to stop (the peer left, or moved to another address)
// and the ones to start (peer name -> address). self gets no link.
func diffLinks(self string, have map[string]string, servers []raft.Server) (stop []string, start map[string]string) {
	want := make(map[string]string, len(servers))
	for _, s := range servers {
		if string(s.ID) != self {
			want[string(s.ID)] = string(s.Address)
		}
	}
	for name, addr := range have {
		if w, ok := want[name]; !ok || w != addr {
			stop = append(stop, name)
		}
	}
	start = map[string]string{}
	for name, addr := range want {
		if a, ok := have[name]; !ok || a != addr {
			start[name] = addr
		}
	}
	return stop, start
}

// setLinks keeps exactly one link per other member of servers.
func (r *routing) setLinks(servers []raft.Server) {
	var stop []*link
	r.mu.Lock()
	have := make(map[string]string, len(r.links))
	for name, l := range r.links {
		have[name] = l.addr
	}
	stopNames, start := diffLinks(r.self, have, servers)
	for _, name := range stopNames {
		stop = append(stop, r.links[name])
		delete(r.links, name)
	}
	if !r.closed {
		for name, addr := range start {
			l := newLink(r, name, addr)
			r.links[name] = l
			r.wg.Add(1)
			go l.run()
		}
	}
	r.mu.Unlock()
	for _, l := range stop {
		l.close()
		r.srv.DropRemoteRoutes(l.peer)
		if _, again := start[l.peer]; !again && r.onGone != nil {
			r.onGone(l.peer)
		}
	}
}

// close stops every link; setLinks starts none after it.
func (r *routing) close() {
	r.mu.Lock()
	r.closed = true
	links := r.links
	r.links = map[string]*link{}
	r.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

func (r *routing) link(peer string) *link {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.links[peer]
}

// peerUp reports whether the link to node is up.
func (r *routing) peerUp(node string) bool {
	l := r.link(node)
	return l != nil && l.up.Load()
}

// upPeers returns the names of the members whose link is up.
func (r *routing) upPeers() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for name, l := range r.links {
		if l.up.Load() {
			out = append(out, name)
		}
	}
	return out
}

// linkedBothWays reports whether peer's link is up and peer's own link to this node
// is being served (readiness).
func (r *routing) linkedBothWays(peer string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.links[peer]
	return l != nil && l.up.Load() && r.inbound[peer] != nil
}

// sendRoutes sends a route delta on every link, in the order of the calls.
func (r *routing) sendRoutes(rs *routes) {
	r.mu.Lock()
	links := make([]*link, 0, len(r.links))
	for _, l := range r.links {
		links = append(links, l)
	}
	r.mu.Unlock()
	for _, l := range links {
		_, _ = l.send(&frame{Kind: fRoutes, Routes: rs}, false) // a down link gets a snapshot on reconnect
	}
}

// request sends req to a member over its link and waits for the response.
func (r *routing) request(peer string, req *request) (*response, error) {
	return r.call(peer, req, false, requestTimeout+5*time.Second, nil)
}

// requestOn is request; an ordered one goes behind the forwards waiting in the link's
// outbox (a flush's sync must come after them) and fails at once when the link is
// down.
func (r *routing) requestOn(peer string, req *request, ordered bool) (*response, error) {
	return r.call(peer, req, ordered, requestTimeout+5*time.Second, nil)
}

// requestLate is request with its own wait; when the wait ends first, an answer that
// still comes on the same connection goes to late (which undoes what the request did
// at the peer, when that matters).
func (r *routing) requestLate(peer string, req *request, wait time.Duration, late func(*response)) (*response, error) {
	return r.call(peer, req, false, wait, late)
}

func (r *routing) call(peer string, req *request, ordered bool, wait time.Duration, late func(*response)) (*response, error) {
	l := r.link(peer)
	if l == nil {
		return nil, errorf(apiv1.CodeUnreachable, "no link to %s", peer)
	}
	f := &frame{Kind: fReq, Req: req}
	var ch chan *frame
	var err error
	if ordered {
		if !l.up.Load() {
			return nil, errorf(apiv1.CodeUnreachable, "no link to %s", peer)
		}
		if ch, err = l.forward(f); err == nil && ch == nil {
			err = errorf(apiv1.CodeUnreachable, "no link to %s", peer)
		}
	} else {
		ch, err = l.send(f, true)
	}
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case resp, ok := <-ch:
		if !ok || resp.Resp == nil {
			return nil, errorf(apiv1.CodeUnreachable, "%s went away before answering", peer)
		}
		return resp.Resp, nil
	case <-timer.C:
		if resp := l.giveUp(f.Seq, ch, late); resp != nil {
			return resp, nil
		}
		return nil, errorf(apiv1.CodeUnreachable, "%s did not answer in time", peer)
	}
}

// drainInbound returns once what every reachable peer forwarded to this node before
// now has been delivered here: each peer sends a sync over its own link to this node
// (flush), which this node answers only after the forwards ahead of it. A session
// moving away is released after it, so a message a third node sent to the old node
// just before it learned the new node's routes is not lost.
func (r *routing) drainInbound() {
	peers := r.upPeers()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := r.request(p, &request{Op: opFlush})
			if err == nil {
				err = resp.err()
			}
			if err != nil {
				r.log.Info("inbound drain: peer did not answer", "peer", p, "error", err)
			}
		}()
	}
	wg.Wait()
}

// barrier returns once every reachable peer has applied the routes this node sent so
// far (links are ordered: an answered request follows them).
func (r *routing) barrier() {
	peers := r.upPeers()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.request(p, &request{Op: opSync}); err != nil {
				r.log.Debug("route barrier: peer did not answer", "peer", p, "error", err)
			}
		}()
	}
	wg.Wait()
}
