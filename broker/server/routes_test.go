package server_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// fakeCluster is a server.Cluster without peers: it records the routes handed to it
// and can hold a route change (as a full link buffer would) until released. The
// cluster is outside what these tests check: the server's locking around it.
type fakeCluster struct {
	srv *server.Server

	mu       sync.Mutex
	routes   map[server.Route]bool
	block    string        // the removal of a route to this filter waits on gate
	blockAdd string        // so does the addition of a route to this filter
	gate     chan struct{} // closed (release) to let blocked changes go
	gateOnce sync.Once
	blocked  chan struct{} // receives once a change is blocked
	handover server.Handover
	history  []string // "+filter" and "-filter", in the order the changes came
	noQuorum bool     // Retain fails, as without a raft majority
}

func newFakeCluster(b *broker) *fakeCluster {
	f := &fakeCluster{srv: b.Server, routes: make(map[server.Route]bool),
		gate: make(chan struct{}), blocked: make(chan struct{}, 1)}
	b.SetCluster(f)
	return f
}

// release lets the blocked route changes go (and every later one); idempotent.
func (f *fakeCluster) release() { f.gateOnce.Do(func() { close(f.gate) }) }

func (f *fakeCluster) RouteAdded(r server.Route)   { f.route(r, true) }
func (f *fakeCluster) RouteRemoved(r server.Route) { f.route(r, false) }

func (f *fakeCluster) route(r server.Route, add bool) {
	f.mu.Lock()
	block := (!add && r.Filter == f.block) || (add && r.Filter == f.blockAdd)
	f.mu.Unlock()
	if block {
		select {
		case f.blocked <- struct{}{}:
		default:
		}
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		f.routes[r] = true
		f.history = append(f.history, "+"+r.Filter)
	} else {
		delete(f.routes, r)
		f.history = append(f.history, "-"+r.Filter)
	}
}

// has reports whether the cluster was told of a route to filter.
func (f *fakeCluster) has(filter string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routes[server.Route{Filter: filter}]
}

func (f *fakeCluster) Forward(*session.Message, map[string][]server.Route) func() int { return nil }
func (f *fakeCluster) PeerUp(string) bool                                             { return false }

func (f *fakeCluster) Retain(msg *session.Message) error {
	f.mu.Lock()
	noQuorum := f.noQuorum
	f.mu.Unlock()
	if noQuorum {
		return errors.New("no_leader: the cluster has no leader now")
	}
	f.srv.ApplyRetained(msg)
	return nil
}

func (f *fakeCluster) Takeover(string, bool, server.Claim) (server.Handover, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ho := f.handover
	f.handover = server.Handover{} // once
	return ho, nil
}

// TestRouteSendDoesNotBlockServer holds the cluster's RouteRemoved of a session that
// ends (as a slow peer's full link buffer would): other clients still connect,
// subscribe and get messages meanwhile. When the route was sent under Server.mu,
// every connect and publish waited for the slow peer.
func TestRouteSendDoesNotBlockServer(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	f := newFakeCluster(b)
	f.block = "slow/t"
	t.Cleanup(f.release)

	staying, _ := connectRaw(t, b, "staying", 0, nil)
	rawSubscribe(t, staying, 1, 0, packet.Subscription{Filter: "fast/t"})
	leaving, _ := connectRaw(t, b, "leaving", 0, nil)
	rawSubscribe(t, leaving, 1, 0, packet.Subscription{Filter: "other/t"}, packet.Subscription{Filter: "slow/t"})
	leaving.send(&packet.Packet{Type: packet.Disconnect}) // clean session: its routes go
	select {
	case <-f.blocked:
	case <-time.After(waitFor):
		t.Fatal("the route change of the ending session never reached the cluster")
	}

	// The route is being sent: the server still connects clients and routes messages
	// (both take Server.mu). A SUBSCRIBE would wait: SUBACK follows its route.
	newcomer, _ := connectRaw(t, b, "newcomer", 0, nil)
	newcomer.send(&packet.Packet{Type: packet.Publish, Topic: "fast/t", Payload: []byte("served")})
	if p := staying.expect(packet.Publish); string(p.Payload) != "served" {
		t.Fatalf("got %q", p.Payload)
	}

	f.release()
	eventually(t, waitFor, "the ending session's routes to be removed", func() bool {
		return !f.has("slow/t") && !f.has("other/t")
	})
}

// TestRoutesSentBeforeTakeoverFinishes hands a session over from another node:
// Finish (which waits for the peers to have the new routes, then releases the old
// node's copy) must run after the session's routes reached the cluster.
func TestRoutesSentBeforeTakeoverFinishes(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	f := newFakeCluster(b)
	var routedAtFinish, finished bool
	f.handover = server.Handover{
		Session: &session.Snapshot{ID: "mover", Expiry: 3600,
			Subscriptions: map[string]topic.Subscription{"moved/t": {ClientID: "mover", Filter: "moved/t", QoS: 1}}},
		Epoch: 1,
		Finish: func() []*session.Delivery {
			routedAtFinish, finished = f.has("moved/t"), true
			return nil
		},
	}
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	props := &packet.Properties{SessionExpiry: 3600}
	props.Set(packet.PropSessionExpiry)
	ack := rc.connect("mover", false, 0, props)
	if ack.ReasonCode != packet.Success || !ack.SessionPresent {
		t.Fatalf("CONNACK 0x%02X, session present %v: the handed-over session was not taken", byte(ack.ReasonCode), ack.SessionPresent)
	}
	// Finish runs before CONNACK is queued (attach returns after it).
	if !finished || !routedAtFinish {
		t.Fatalf("Finish ran %v, with the moved session's route at the cluster %v", finished, routedAtFinish)
	}
}

// TestKickSendsRoutesBeforeReturning: the node that took a session over asks its old
// node to end it (Kick); the routes it leaves are handed to the cluster before the
// answer, not whenever another route change comes by.
func TestKickSendsRoutesBeforeReturning(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	f := newFakeCluster(b)
	rc, _ := connectRaw(t, b, "kicked", 0, nil)
	rawSubscribe(t, rc, 1, 0, packet.Subscription{Filter: "kicked/t"})
	eventually(t, waitFor, "the route to reach the cluster", func() bool { return f.has("kicked/t") })
	if _, err := b.Kick("kicked", 1, false, server.Claim{}); err != nil {
		t.Fatal(err)
	}
	if f.has("kicked/t") {
		t.Fatal("Kick returned before the session's route removal reached the cluster")
	}
	expectServerDisconnect(t, rc, packet.SessionTakenOver, waitFor)
}

// TestSubackFollowsItsRoute: a SUBSCRIBE's SUBACK is queued only once its new route
// was handed to the cluster (as when routes were sent under the lock), so a client
// that saw SUBACK and publishes through another node finds the route there.
func TestSubackFollowsItsRoute(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	f := newFakeCluster(b)
	f.blockAdd = "held/t"
	t.Cleanup(f.release)

	rc, _ := connectRaw(t, b, "subscriber", 0, nil)
	rc.send(&packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "held/t"}}})
	select {
	case <-f.blocked:
	case <-time.After(waitFor):
		t.Fatal("the new route never reached the cluster")
	}
	// The route is being handed over and waits: SUBACK must not be out yet. (Before,
	// SUBACK was queued first and would be readable here.)
	if p, err := rc.tryRead(300 * time.Millisecond); err == nil {
		t.Fatalf("got %v while the route was still being handed to the cluster", p.Type)
	}
	f.release()
	rc.expect(packet.Suback)
	if !f.has("held/t") {
		t.Fatal("SUBACK came before the route reached the cluster")
	}
}

// TestMovingCopyReplacedWithoutRouteFlap: a session handed to another node (moving
// here) is replaced by the cluster's copy when its client connects here again: a
// subscription both copies have keeps its route (no removal and re-add, which peers
// would see as a moment without a subscriber, answering publishers "no matching
// subscribers"); one only the moving copy had goes.
func TestMovingCopyReplacedWithoutRouteFlap(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	f := newFakeCluster(b)
	t.Cleanup(f.release)
	expiry := &packet.Properties{SessionExpiry: 300}
	expiry.Set(packet.PropSessionExpiry)

	rc := dialRaw(t, b.TCPAddr, packet.V5)
	if ack := rc.connect("roamer", true, 0, expiry); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	rawSubscribe(t, rc, 1, 0, packet.Subscription{Filter: "keep/t", QoS: 1}, packet.Subscription{Filter: "drop/t", QoS: 1})
	rc.send(&packet.Packet{Type: packet.Disconnect})
	eventually(t, waitFor, "the routes reach the cluster", func() bool { return f.has("keep/t") && f.has("drop/t") })

	snap, err := b.Kick("roamer", 1, true, server.Claim{}) // handed to another node: moving here
	if err != nil || snap == nil {
		t.Fatalf("kick: %v %v", snap, err)
	}
	back := *snap
	back.Subscriptions = map[string]topic.Subscription{"keep/t": snap.Subscriptions["keep/t"]}
	f.mu.Lock()
	f.handover = server.Handover{Session: &back, Epoch: 2}
	f.history = nil
	f.mu.Unlock()

	again := dialRaw(t, b.TCPAddr, packet.V5)
	ack := again.connect("roamer", false, 0, expiry)
	if ack.ReasonCode != packet.Success || !ack.SessionPresent {
		t.Fatalf("CONNACK 0x%02X, session present %v", byte(ack.ReasonCode), ack.SessionPresent)
	}
	eventually(t, waitFor, "the dropped subscription's route goes", func() bool { return !f.has("drop/t") })
	f.mu.Lock()
	history := append([]string(nil), f.history...)
	f.mu.Unlock()
	for _, h := range history {
		if h == "-keep/t" {
			t.Fatalf("the route both copies have was removed and added again: %v", history)
		}
	}
	if !f.has("keep/t") {
		t.Fatalf("the kept route is gone: %v", history)
	}
}

// offlinePersistent connects id with a session expiry, subscribes it to filter at
// QoS 1 and disconnects it normally (the session stays, offline). It returns the
// CONNECT properties to resume it with and a connected publisher whose publish sends
// a QoS 1 message to topic and waits for its PUBACK.
func offlinePersistent(t *testing.T, b *broker, id, filter, topic string) (*packet.Properties, func(packetID uint16, payload string)) {
	t.Helper()
	expiry := &packet.Properties{SessionExpiry: 300}
	expiry.Set(packet.PropSessionExpiry)
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	if ack := rc.connect(id, true, 0, expiry); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	rawSubscribe(t, rc, 1, 0, packet.Subscription{Filter: filter, QoS: 1})
	rc.send(&packet.Packet{Type: packet.Disconnect})
	eventually(t, waitFor, "the session is offline", func() bool { return b.Stats().ClientsConnected == 0 })
	pub, _ := connectRaw(t, b, id+"-pub", 0, nil)
	return expiry, func(packetID uint16, payload string) {
		t.Helper()
		pub.send(&packet.Packet{Type: packet.Publish, Topic: topic, QoS: 1, PacketID: packetID, Payload: []byte(payload)})
		if ack := pub.expect(packet.Puback); ack.ReasonCode != packet.Success {
			t.Fatalf("PUBACK 0x%02X", byte(ack.ReasonCode))
		}
	}
}

// TestMoveNeverReleasedKeepsSession: a session handed to another node whose release
// never comes (the answer carrying it was lost) stays on this node after the move
// timeout, with what it held and what arrived meanwhile, and is counted. Before, it was
// dropped with its queue.
func TestMoveNeverReleasedKeepsSession(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	server.SetMoveTimeout(b.Server, 200*time.Millisecond)
	f := newFakeCluster(b)
	t.Cleanup(f.release)
	expiry, publish := offlinePersistent(t, b, "lost-answer", "mv/t", "mv/t")
	publish(1, "before")
	if snap, err := b.Kick("lost-answer", 1, true, server.Claim{}); err != nil || snap == nil || len(snap.Queue) != 1 {
		t.Fatalf("kick: %+v %v, want the session with its one message", snap, err)
	}
	publish(2, "during") // queued on the moving copy
	eventually(t, waitFor, "the move expires", func() bool { return b.Stats().MovesExpired == 1 })

	again := dialRaw(t, b.TCPAddr, packet.V5)
	if ack := again.connect("lost-answer", false, 0, expiry); ack.ReasonCode != packet.Success || !ack.SessionPresent {
		t.Fatalf("CONNACK 0x%02X, session present %v: the session was not kept", byte(ack.ReasonCode), ack.SessionPresent)
	}
	for _, want := range []string{"before", "during"} {
		p := again.expect(packet.Publish)
		if string(p.Payload) != want {
			t.Fatalf("got %q, want %q (in order)", p.Payload, want)
		}
		again.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
	}
}

// TestKickStale: a stale kick (a connect ordered while this node was out of reach,
// sent once it is back) leaves a connection made here after that connect, and closes
// an older one with 0x8E, handing a persistent session over.
func TestKickStale(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	f := newFakeCluster(b)
	t.Cleanup(f.release)
	expiry := &packet.Properties{SessionExpiry: 300}
	expiry.Set(packet.PropSessionExpiry)
	f.mu.Lock()
	f.handover = server.Handover{Epoch: 500} // the cluster ordered this connect at 500
	f.mu.Unlock()
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	if ack := rc.connect("roamer", true, 0, expiry); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	rawSubscribe(t, rc, 1, 0, packet.Subscription{Filter: "st/t", QoS: 1})

	if snap, err := b.KickStale("roamer", 400, true, server.Claim{}); err != nil || snap != nil {
		t.Fatalf("stale kick older than the connection: %+v %v, want nothing done", snap, err)
	}
	rc.send(&packet.Packet{Type: packet.Pingreq})
	rc.expect(packet.Pingresp) // still connected
	snap, err := b.KickStale("roamer", 600, true, server.Claim{})
	if err != nil || snap == nil || len(snap.Subscriptions) != 1 {
		t.Fatalf("stale kick newer than the connection: %+v %v, want the session handed over", snap, err)
	}
	expectServerDisconnect(t, rc, packet.SessionTakenOver, waitFor)
}

// TestMovingSessionNotMovedTwice: a session handed to another node whose move has not
// ended (its answer late or lost) refuses a second kick, and a connect on its own node
// that no other node brought a copy to is refused (0x89) rather than starting without
// it; once the copy is back (Unmove) the client continues it with what it held.
// Before, the second kick handed over only what arrived since the first (a partial
// copy), and a release then dropped the state the first move carried.
func TestMovingSessionNotMovedTwice(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	f := newFakeCluster(b)
	t.Cleanup(f.release)
	expiry, publish := offlinePersistent(t, b, "twice", "tw/t", "tw/t")
	publish(1, "held")

	snap, err := b.Kick("twice", 1, true, server.Claim{})
	if err != nil || snap == nil {
		t.Fatalf("first kick: %v %v", snap, err)
	}
	if again, err := b.Kick("twice", 2, true, server.Claim{}); !errors.Is(err, server.ErrSessionMoving) || again != nil {
		t.Fatalf("second kick of a moving session: %+v %v, want ErrSessionMoving", again, err)
	}
	busy := dialRaw(t, b.TCPAddr, packet.V5)
	if ack := busy.connect("twice", false, 0, expiry); ack.ReasonCode != packet.ServerBusy {
		t.Fatalf("connect while the session's copy is away: CONNACK 0x%02X, want 0x89", byte(ack.ReasonCode))
	}
	b.Unmove(*snap, 7) // the give-back of another move (its kick's epoch 7): nothing happens
	still := dialRaw(t, b.TCPAddr, packet.V5)
	if ack := still.connect("twice", false, 0, expiry); ack.ReasonCode != packet.ServerBusy {
		t.Fatalf("after another move's give-back: CONNACK 0x%02X, want 0x89 (still moving)", byte(ack.ReasonCode))
	}
	if extra := b.Release("twice", 7); extra != nil || b.Holds("twice") {
		t.Fatalf("another move's release acted: %v", extra)
	}
	b.Unmove(*snap, 1) // the late answer gives it back
	back := dialRaw(t, b.TCPAddr, packet.V5)
	if ack := back.connect("twice", false, 0, expiry); ack.ReasonCode != packet.Success || !ack.SessionPresent {
		t.Fatalf("after the copy is back: CONNACK 0x%02X, session present %v", byte(ack.ReasonCode), ack.SessionPresent)
	}
	if p := back.expect(packet.Publish); string(p.Payload) != "held" {
		t.Fatalf("got %q, want the message the session held", p.Payload)
	}
}

// TestLocalCopyTakesInOtherCopy: a connect on a node that holds a copy of the session
// while another node's copy comes with the takeover (two copies: a node was out of
// reach) continues the local copy and queues what the other held, each message once.
// Before, the other copy was ignored and its messages lost.
func TestLocalCopyTakesInOtherCopy(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	f := newFakeCluster(b)
	t.Cleanup(f.release)
	expiry, publish := offlinePersistent(t, b, "two-copies", "tc/t", "tc/t")
	publish(1, "local")

	remote := func(payload string, seq uint64) *session.Delivery {
		return &session.Delivery{QoS: 1, Msg: &session.Message{Topic: "tc/t", QoS: 1, Payload: []byte(payload),
			ID: session.MessageID{Origin: 77, Seq: seq}}}
	}
	f.mu.Lock()
	f.handover = server.Handover{Epoch: 9, Session: &session.Snapshot{ID: "two-copies", Expiry: 300,
		Queue: []*session.Delivery{remote("other-1", 1), remote("other-2", 2), remote("other-1", 1)}}}
	f.mu.Unlock()
	again := dialRaw(t, b.TCPAddr, packet.V5)
	if ack := again.connect("two-copies", false, 0, expiry); ack.ReasonCode != packet.Success || !ack.SessionPresent {
		t.Fatalf("CONNACK 0x%02X, session present %v", byte(ack.ReasonCode), ack.SessionPresent)
	}
	var got []string
	for range 3 {
		p := again.expect(packet.Publish)
		got = append(got, string(p.Payload))
		again.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"local", "other-1", "other-2"}) {
		t.Fatalf("delivered %v, want the local copy's message and each of the other copy's once", got)
	}
	if p, err := again.tryRead(300 * time.Millisecond); err == nil {
		t.Fatalf("one more delivery: %q (a duplicate)", p.Payload)
	}
}

// TestRetainedRefusedWithoutMajority: a retained publish the cluster cannot replicate
// (no raft majority) is refused and nothing of it happens: MQTT 5 gets PUBACK/PUBREC
// 0x80 with a reason, a 3.1.1 connection closes without an ack (so the client sends it
// again), it reaches no subscriber and is not retained, and it is counted. Before,
// it was acknowledged, delivered and kept on this node only: a retained set the
// cluster never committed.
func TestRetainedRefusedWithoutMajority(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	f := newFakeCluster(b)
	t.Cleanup(f.release)
	sub, _ := connectRaw(t, b, "watcher", 0, nil)
	rawSubscribe(t, sub, 1, 0, packet.Subscription{Filter: "maj/#", QoS: 1})
	f.mu.Lock()
	f.noQuorum = true
	f.mu.Unlock()

	pub, _ := connectRaw(t, b, "pub", 0, nil)
	pub.send(&packet.Packet{Type: packet.Publish, Topic: "maj/q1", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("x")})
	if ack := pub.expect(packet.Puback); ack.ReasonCode != packet.UnspecifiedError || ack.Properties.ReasonString == "" {
		t.Fatalf("v5 QoS 1: PUBACK 0x%02X %q, want 0x80 with a reason", byte(ack.ReasonCode), ack.Properties.ReasonString)
	}
	pub.send(&packet.Packet{Type: packet.Publish, Topic: "maj/q2", QoS: 2, PacketID: 2, Retain: true, Payload: []byte("x")})
	if ack := pub.expect(packet.Pubrec); ack.ReasonCode != packet.UnspecifiedError {
		t.Fatalf("v5 QoS 2: PUBREC 0x%02X, want 0x80", byte(ack.ReasonCode))
	}
	pub.send(&packet.Packet{Type: packet.Publish, Topic: "maj/q0", QoS: 0, Retain: true, Payload: []byte("x")})

	v3 := v3RawConnect(t, b, "pub3", true, 0, false)
	v3.send(&packet.Packet{Type: packet.Publish, Topic: "maj/v3", QoS: 1, PacketID: 3, Retain: true, Payload: []byte("x")})
	if p, err := v3.tryRead(waitFor); err == nil {
		t.Fatalf("3.1.1: got %s, want the connection closed without an ack", p.Type)
	}

	// A live probe after them: once the watcher has it, it has everything before it.
	pub.send(&packet.Packet{Type: packet.Publish, Topic: "maj/probe", QoS: 1, PacketID: 4, Payload: []byte("probe")})
	pub.expect(packet.Puback)
	if p := sub.expect(packet.Publish); p.Topic != "maj/probe" {
		t.Fatalf("the watcher got %s first: a refused message was delivered", p.Topic)
	}
	late, _ := connectRaw(t, b, "late", 0, nil)
	rawSubscribe(t, late, 1, 0, packet.Subscription{Filter: "maj/#", QoS: 1})
	pub.send(&packet.Packet{Type: packet.Publish, Topic: "maj/probe", QoS: 1, PacketID: 5, Payload: []byte("probe")})
	pub.expect(packet.Puback)
	if p := late.expect(packet.Publish); p.Topic != "maj/probe" {
		t.Fatalf("a new subscriber got retained %s: a refused message was kept", p.Topic)
	}
	if got := b.Stats().RetainedRefused; got != 4 {
		t.Fatalf("%d refusals counted, want 4", got)
	}

	// With a majority again the same QoS 2 packet ID is a new message.
	f.mu.Lock()
	f.noQuorum = false
	f.mu.Unlock()
	pub.send(&packet.Packet{Type: packet.Publish, Topic: "maj/q2", QoS: 2, PacketID: 2, Retain: true, Payload: []byte("x")})
	if ack := pub.expect(packet.Pubrec); ack.ReasonCode != packet.Success {
		t.Fatalf("after the majority came back: PUBREC 0x%02X", byte(ack.ReasonCode))
	}
}
