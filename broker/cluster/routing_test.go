package cluster

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

func TestDiffLinks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		have    map[string]string
		servers []string
		stop    []string
		start   map[string]string
	}{
		{"first configuration", nil, []string{"a", "b", "c"}, nil, map[string]string{"b": "b:4370", "c": "c:4370"}},
		{"unchanged", map[string]string{"b": "b:4370"}, []string{"a", "b"}, nil, map[string]string{}},
		{"a member left", map[string]string{"b": "b:4370", "c": "c:4370"}, []string{"a", "b"}, []string{"c"}, map[string]string{}},
		{"a member moved", map[string]string{"b": "old:4370"}, []string{"a", "b"}, []string{"b"}, map[string]string{"b": "b:4370"}},
		{"stale or closed: no links", map[string]string{"b": "b:4370", "c": "c:4370"}, nil, []string{"b", "c"}, map[string]string{}},
		{"this node is never linked to", nil, []string{"a"}, nil, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop, start := diffLinks("a", tc.have, servers(tc.servers...))
			slices.Sort(stop)
			if !slices.Equal(stop, tc.stop) || !maps.Equal(start, tc.start) {
				t.Fatalf("stop %v start %v, want %v %v", stop, start, tc.stop, tc.start)
			}
		})
	}
}

// routeCall is one call of the fake server's route API.
type routeCall struct {
	node      string
	full      bool
	add, del  []string
	dropped   bool
	delivered string
}

type fakeRouteServer struct {
	mu    sync.Mutex
	local []server.Route
	calls chan routeCall
	// slow, when set, holds the delivery of messages on topic "slow" until it is
	// closed.
	slow chan struct{}
}

func newFakeRouteServer(local ...string) *fakeRouteServer {
	s := &fakeRouteServer{calls: make(chan routeCall, 64)}
	for _, f := range local {
		s.local = append(s.local, server.Route{Filter: f})
	}
	return s
}

func filters(rs []server.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Filter)
	}
	return out
}

func (s *fakeRouteServer) WithLocalRoutes(fn func([]server.Route)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.local)
}
func (s *fakeRouteServer) SetRemoteRoutes(node string, full bool, add, del []server.Route) {
	s.calls <- routeCall{node: node, full: full, add: filters(add), del: filters(del)}
}
func (s *fakeRouteServer) DropRemoteRoutes(node string) {
	s.calls <- routeCall{node: node, dropped: true}
}
func (s *fakeRouteServer) DeliverForwarded(msg *session.Message, _ []server.Route) int {
	if msg.Topic == "slow" && s.slow != nil {
		<-s.slow
	}
	s.calls <- routeCall{delivered: msg.Topic}
	return 2
}

func (s *fakeRouteServer) next(t *testing.T) routeCall {
	t.Helper()
	select {
	case c := <-s.calls:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no route call")
		return routeCall{}
	}
}

// fakeJudge accepts every link as a member of cluster c1, or refuses with ack.
type fakeJudge struct {
	refuse  *hello
	refusal chan *hello
}

func (j *fakeJudge) helloView() (string, uint64) { return "c1", 5 }
func (j *fakeJudge) judgeLink(string, *hello) *hello {
	if j.refuse != nil {
		return j.refuse
	}
	return &hello{ClusterID: "c1", ConfigIndex: 5}
}
func (j *fakeJudge) refused(peer string, h *hello, myIndex uint64, myCluster string) {
	if peer == "b" && myIndex == 5 && myCluster == "c1" {
		select {
		case j.refusal <- h:
		default: // the link retries: the first refusals are enough
		}
	}
}

// pipeDialer connects a's links to b's inbound side over net.Pipe: no sockets.
type pipeDialer struct {
	to    *routing
	from  string
	mu    sync.Mutex
	conns []net.Conn
	cut   bool // dials fail (set with setCut)
}

func (d *pipeDialer) setCut(cut bool) {
	d.mu.Lock()
	d.cut = cut
	d.mu.Unlock()
}

func (d *pipeDialer) dial(_ context.Context, _ string, _ byte) (net.Conn, error) {
	d.mu.Lock()
	cut := d.cut
	d.mu.Unlock()
	if cut {
		return nil, errorf(apiv1.CodeUnreachable, "cut")
	}
	c1, c2 := net.Pipe()
	d.mu.Lock()
	d.conns = append(d.conns, c1)
	d.mu.Unlock()
	go d.to.serveInbound(c2, d.from)
	return c1, nil
}
func (d *pipeDialer) untrack(c net.Conn) { _ = c.Close() }

func (d *pipeDialer) dropAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
}

// linkedPair returns node a's routing linked (once setLinks runs) to node b's.
func linkedPair(t *testing.T, aLocal []string, bJudge *fakeJudge) (a, b *routing, as, bs *fakeRouteServer, d *pipeDialer, aJudge *fakeJudge) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	log := slog.New(slog.DiscardHandler)
	answer := func(string, *request) *response { return &response{ClusterID: "c1"} }
	as, bs = newFakeRouteServer(aLocal...), newFakeRouteServer()
	b = newRouting("b", log, done, &wg)
	b.srv, b.judge, b.handle, b.dialer = bs, bJudge, answer, &pipeDialer{}
	a = newRouting("a", log, done, &wg)
	d = &pipeDialer{to: b, from: "a"}
	aJudge = &fakeJudge{refusal: make(chan *hello, 4)}
	a.srv, a.judge, a.handle, a.dialer = as, aJudge, answer, d
	t.Cleanup(func() {
		close(done)
		a.close()
		d.dropAll()
		wg.Wait()
	})
	return a, b, as, bs, d, aJudge
}

// TestLinkRouteReplication: a link sends the full snapshot of local routes first, then
// deltas in the order they happen; when it breaks the peer keeps the routes, and the
// reconnect sends a fresh snapshot that replaces them with what changed while it was
// down; when the peer leaves the configuration, its routes are dropped.
func TestLinkRouteReplication(t *testing.T) {
	a, b, as, bs, d, _ := linkedPair(t, []string{"x/#", "y"}, &fakeJudge{})
	a.sendRoutes(&routes{Add: []server.Route{{Filter: "lost"}}}) // no link yet: nobody gets it
	a.setLinks(servers("a", "b"))
	if c := bs.next(t); c.node != "a" || !c.full || !slices.Equal(c.add, []string{"x/#", "y"}) {
		t.Fatalf("first route call %+v, want a's full snapshot", c)
	}
	waitFor(t, func() bool { return a.peerUp("b") })
	a.sendRoutes(&routes{Add: []server.Route{{Filter: "z"}}})
	a.sendRoutes(&routes{Del: []server.Route{{Filter: "y"}}})
	if c := bs.next(t); c.full || !slices.Equal(c.add, []string{"z"}) {
		t.Fatalf("second call %+v, want the delta adding z", c)
	}
	if c := bs.next(t); c.full || !slices.Equal(c.del, []string{"y"}) {
		t.Fatalf("third call %+v, want the delta removing y", c)
	}
	// A request on the link is answered after the routes before it (the barrier).
	resp, err := a.request("b", &request{Op: opSync})
	if err != nil || resp.ClusterID != "c1" {
		t.Fatalf("request: %v %v", resp, err)
	}
	if b.linkedBothWays("a") || a.linkedBothWays("b") {
		t.Fatal("a one-way link counts as both ways")
	}

	as.mu.Lock()
	as.local = []server.Route{{Filter: "x/#"}, {Filter: "z"}, {Filter: "w"}}
	as.mu.Unlock()
	d.dropAll()
	// a's routes stay while it is unreachable (what they match waits in the outbox);
	// the reconnect's snapshot replaces them.
	if c := bs.next(t); !c.full || !slices.Equal(c.add, []string{"x/#", "z", "w"}) {
		t.Fatalf("after the break and reconnect %+v, want a fresh full snapshot (and no drop)", c)
	}

	a.setLinks(servers("a")) // b left the configuration
	if c := as.next(t); !c.dropped || c.node != "b" {
		t.Fatalf("a did not drop b's routes when b left: %+v", c)
	}
	if a.peerUp("b") || len(a.upPeers()) != 0 {
		t.Fatal("link to a removed member still up")
	}
	if _, err := a.request("b", &request{Op: opSync}); CodeOf(err) != apiv1.CodeUnreachable {
		t.Fatalf("request to a removed member: %v", err)
	}
}

// TestLinkForward: a forwarded QoS 1 message is acknowledged with the receiver's
// count; counters on both sides.
func TestLinkForward(t *testing.T) {
	a, b, _, bs, _, _ := linkedPair(t, nil, &fakeJudge{})
	a.setLinks(servers("a", "b"))
	if c := bs.next(t); !c.full {
		t.Fatalf("%+v, want the snapshot", c)
	}
	waitFor(t, func() bool { return a.peerUp("b") })
	wait := a.forward(&session.Message{Topic: "t", QoS: 1}, map[string][]server.Route{"b": nil, "gone": nil})
	if c := bs.next(t); c.delivered != "t" {
		t.Fatalf("%+v, want t delivered", c)
	}
	if n := wait(); n != 2 {
		t.Fatalf("acknowledged count %d, want 2", n)
	}
	if a.forwardedOut.Load() != 1 || b.forwardedIn.Load() != 1 || a.forwardFailure.Load() != 0 {
		t.Fatalf("counters out %d in %d failures %d", a.forwardedOut.Load(), b.forwardedIn.Load(), a.forwardFailure.Load())
	}
}

// TestLinkOutbox: QoS 1 forwards to an unreachable peer wait in the link's outbox
// (each counts as one session for the publisher's ack, at once) and reach the peer in
// order after the reconnect; a forward the peer delivered but whose ack was lost with
// the connection is written again and skipped there, so it is delivered once.
func TestLinkOutbox(t *testing.T) {
	a, b, _, bs, d, _ := linkedPair(t, nil, &fakeJudge{})
	a.setLinks(servers("a", "b"))
	if c := bs.next(t); !c.full {
		t.Fatalf("%+v, want the snapshot", c)
	}
	waitFor(t, func() bool { return a.peerUp("b") })

	d.setCut(true)
	d.dropAll()
	waitFor(t, func() bool { return !a.peerUp("b") })
	for _, topic := range []string{"m1", "m2", "m3"} {
		if n := a.forward(&session.Message{Topic: topic, QoS: 1}, map[string][]server.Route{"b": nil})(); n != 1 {
			t.Fatalf("%s to an unreachable peer: count %d, want 1 (held)", topic, n)
		}
	}
	if a.forward(&session.Message{Topic: "q0", QoS: 0}, map[string][]server.Route{"b": nil})() != 0 {
		t.Fatal("a QoS 0 message to an unreachable peer counted")
	}
	if got := a.outboxed.Load(); got != 3 {
		t.Fatalf("outbox holds %d, want 3", got)
	}
	d.setCut(false)
	if c := bs.next(t); !c.full {
		t.Fatalf("%+v, want the snapshot first after the reconnect", c)
	}
	for _, want := range []string{"m1", "m2", "m3"} {
		if c := bs.next(t); c.delivered != want {
			t.Fatalf("%+v, want %s delivered (in order)", c, want)
		}
	}
	waitFor(t, func() bool { return a.outboxed.Load() == 0 })

	// b delivers "slow" only after the connection broke: its ack is lost.
	bs.slow = make(chan struct{})
	wait := a.forward(&session.Message{Topic: "slow", QoS: 1}, map[string][]server.Route{"b": nil})
	waitFor(t, func() bool { return b.forwardedIn.Load() == 4 })
	d.dropAll()
	if n := wait(); n != 1 {
		t.Fatalf("count %d, want 1 (held: the link went down before the ack)", n)
	}
	close(bs.slow)
	// The old connection's delivery and the new connection's snapshot, in either order.
	slowThenFull := func(c1, c2 routeCall) bool { return c1.delivered == "slow" && c2.full }
	if c1, c2 := bs.next(t), bs.next(t); !slowThenFull(c1, c2) && !slowThenFull(c2, c1) {
		t.Fatalf("%+v, %+v: want slow delivered and the reconnect's snapshot", c1, c2)
	}
	waitFor(t, func() bool { return a.outboxed.Load() == 0 && b.duplicates.Load() == 1 })
	a.forward(&session.Message{Topic: "after", QoS: 1}, map[string][]server.Route{"b": nil})()
	if c := bs.next(t); c.delivered != "after" {
		t.Fatalf("%+v, want after delivered next (slow was delivered twice?)", c)
	}

	// An ordered request goes through the outbox and leaves it once answered.
	if resp, err := a.requestOn("b", &request{Op: opSync}, true); err != nil || resp.err() != nil {
		t.Fatalf("ordered request: %v %v", resp, err)
	}
	l := a.link("b")
	waitFor(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.out) == 0 && len(l.reqs) == 0 && l.outBytes == 0
	})
}

// TestOutboxFull: with the peer unreachable, the outbox keeps outboxMaxMessages
// forwards; the next one is not kept (count 0), and is counted as dropped.
func TestOutboxFull(t *testing.T) {
	a, _, _, bs, d, _ := linkedPair(t, nil, &fakeJudge{})
	d.setCut(true)
	a.setLinks(servers("a", "b"))
	targets := map[string][]server.Route{"b": nil}
	for i := range outboxMaxMessages {
		if n := a.forward(&session.Message{Topic: "t", QoS: 1}, targets)(); n != 1 {
			t.Fatalf("forward %d: count %d, want 1 (held)", i, n)
		}
	}
	if n := a.forward(&session.Message{Topic: "t", QoS: 1}, targets)(); n != 0 {
		t.Fatalf("forward past the bound: count %d, want 0", n)
	}
	if got, dropped := a.outboxed.Load(), a.outboxDropped.Load(); got != outboxMaxMessages || dropped != 1 {
		t.Fatalf("outbox %d dropped %d, want %d and 1", got, dropped, outboxMaxMessages)
	}
	a.setLinks(servers("a")) // b leaves: what waited for it is dropped and counted
	if got, dropped := a.outboxed.Load(), a.outboxDropped.Load(); got != 0 || dropped != outboxMaxMessages+1 {
		t.Fatalf("after b left: outbox %d dropped %d, want 0 and %d", got, dropped, outboxMaxMessages+1)
	}
	select {
	case c := <-bs.calls:
		t.Fatalf("an unreachable peer got %+v", c)
	default:
	}
}

// TestHeartbeat: a connection on which nothing is heard is closed after
// heartbeatTimeout; one whose reader is busy handling a frame is not, and each end's
// keepalive goes out on its own.
func TestHeartbeat(t *testing.T) {
	watch := func(keepalive byte) (*heartbeat, net.Conn) {
		near, far := net.Pipe()
		cd := newCodec(near)
		hb := &heartbeat{}
		done := make(chan struct{})
		go hb.watch(near, cd, keepalive, done)
		t.Cleanup(func() {
			close(done)
			cd.close()
			_ = near.Close()
			_ = far.Close()
		})
		return hb, far
	}
	silent, silentFar := watch(fPing)
	busy, busyFar := watch(fPong)
	busy.busy(true)
	// The far ends read the keepalives (a pipe blocks the writer otherwise).
	kinds := make(chan byte, 64)
	for _, far := range []net.Conn{silentFar, busyFar} {
		go func() {
			dec := newCodec(far)
			var f frame
			for dec.read(&f) == nil {
				select {
				case kinds <- f.Kind:
				default:
				}
			}
		}()
	}
	deadline := time.After(heartbeatTimeout + 3*heartbeatInterval)
	for !silent.timedOut() {
		select {
		case <-deadline:
			t.Fatal("a connection with nothing heard was not closed")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if busy.timedOut() {
		t.Fatal("a connection whose reader is busy was closed")
	}
	seen := map[byte]bool{}
	for len(kinds) > 0 {
		seen[<-kinds] = true
	}
	if !seen[fPing] || !seen[fPong] {
		t.Fatalf("keepalives seen %v, want fPing and fPong", seen)
	}
}

// TestDeliveredOnce: the duplicate check of a peer's forwards.
func TestDeliveredOnce(t *testing.T) {
	var d delivered
	n := 0
	once := func(link, seq uint64) bool {
		if !d.claim(link, seq) {
			return false
		}
		n++
		d.release()
		return true
	}
	d.linkID = 7
	for _, tc := range []struct {
		link, seq uint64
		want      bool
	}{
		{7, 1, true}, {7, 2, true}, {7, 2, false}, {7, 1, false}, {7, 5, true}, {7, 4, false},
		{0, 1, true}, {0, 1, true}, // an older peer's link: not checked
	} {
		if got := once(tc.link, tc.seq); got != tc.want {
			t.Fatalf("link %d seq %d: delivered %v, want %v", tc.link, tc.seq, got, tc.want)
		}
	}
	if n != 5 {
		t.Fatalf("delivered %d times, want 5", n)
	}
	r := newRouting("b", slog.New(slog.DiscardHandler), nil, nil)
	if got := r.deliveredFrom("a", 7); got.linkID != 7 || got.last != 0 {
		t.Fatalf("new record %+v", got)
	}
	if d := r.deliveredFrom("a", 7); d.claim(7, 9) {
		d.release()
	}
	if got := r.deliveredFrom("a", 7); got.last != 9 {
		t.Fatalf("same link: last %d, want 9", got.last)
	}
	if got := r.deliveredFrom("a", 8); got.linkID != 8 || got.last != 0 {
		t.Fatalf("a new link ID (the peer restarted) keeps %+v, want a fresh record", got)
	}
}

// TestLinkRefused: a refused hello goes to membership's judgement with this node's
// own view, and the link does not come up.
func TestLinkRefused(t *testing.T) {
	refusal := &hello{Code: apiv1.CodeNotMember, ClusterID: "c1", ConfigIndex: 9, Message: "a is not a member of this cluster"}
	a, _, _, bs, _, aJudge := linkedPair(t, []string{"x"}, &fakeJudge{refuse: refusal})
	a.setLinks(servers("a", "b"))
	select {
	case h := <-aJudge.refusal:
		if h.Code != apiv1.CodeNotMember || h.ConfigIndex != 9 {
			t.Fatalf("refusal %+v", h)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the refusal was not judged")
	}
	if a.peerUp("b") {
		t.Fatal("a refused link is up")
	}
	select {
	case c := <-bs.calls:
		t.Fatalf("a refused link carried routes: %+v", c)
	default:
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatal("condition not met in 5s")
		case <-tick.C:
		}
	}
}

// TestLateAnswer: an answer that comes after its request's wait goes to the request's
// late function (a kick's session goes back that way); within the wait it is the
// request's result.
func TestLateAnswer(t *testing.T) {
	a, b, _, _, _, _ := linkedPair(t, nil, &fakeJudge{})
	hold := make(chan struct{})
	b.handle = func(_ string, req *request) *response {
		if req.Op == opKick {
			<-hold
		}
		return &response{ClusterID: "c1", Node: req.ClientID}
	}
	a.setLinks(servers("a", "b"))
	waitFor(t, func() bool { return a.peerUp("b") })
	if resp, err := a.requestLate("b", &request{Op: opSync, ClientID: "quick"}, 10*time.Second, func(*response) {
		t.Error("an answer within the wait went to late")
	}); err != nil || resp.Node != "quick" {
		t.Fatalf("answer within the wait: %+v %v", resp, err)
	}
	late := make(chan *response, 1)
	_, err := a.requestLate("b", &request{Op: opKick, ClientID: "slow"}, 50*time.Millisecond, func(r *response) { late <- r })
	if CodeOf(err) != apiv1.CodeUnreachable {
		t.Fatalf("a request past its wait: %v, want unreachable", err)
	}
	close(hold)
	select {
	case r := <-late:
		if r.Node != "slow" {
			t.Fatalf("late answer %+v, want the slow request's", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the late answer never reached late")
	}
}
