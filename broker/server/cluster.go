package server

import (
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// Cluster is what a server needs from the cluster it belongs to. A server without one
// is a single node. The cluster package implements it; the server calls it on the
// paths that cross nodes: subscriptions (routes), publishing, retained messages and
// connects (takeover).
type Cluster interface {
	// RouteAdded reports the first local subscription to a filter (per share group),
	// RouteRemoved the last one going away. Both are called in the order the changes
	// happen, one at a time and with no lock of the server held (see localroutes.go):
	// they may wait for a slow link, but every wait delays the next route change.
	RouteAdded(r Route)
	RouteRemoved(r Route)
	// Forward sends msg to the nodes in targets (node name -> the shared
	// subscriptions picked on that node) without waiting, and returns a wait that
	// reports how many sessions they queued it for: for QoS 1 and 2 once every node
	// acknowledged or failed.
	Forward(msg *session.Message, targets map[string][]Route) (wait func() int)
	// PeerUp reports whether node can be forwarded to now.
	PeerUp(node string) bool
	// Retain replicates a retained message (an empty payload clears the topic) to
	// every node; the cluster calls ApplyRetained on each. An error means it was not
	// replicated.
	Retain(msg *session.Message) error
	// Takeover runs before a client attaches to its session: it ends the sessions of
	// client id on other nodes and returns the state to continue, if any. A session
	// that claim may not take (another user's) is left alone and the error wraps
	// ErrClientIDOwned.
	Takeover(id string, clean bool, claim Claim) (Handover, error)
}

// Handover is the outcome of a takeover.
type Handover struct {
	// Session is the state to continue (nil: none).
	Session *session.Snapshot
	// Epoch orders connects of one client ID cluster-wide: a connect with a lower
	// epoch than a later takeover loses.
	Epoch uint64
	// Finish, when set, runs once Session is installed here and its routes have
	// reached the other nodes: it releases the old node's copy and returns what was
	// queued there meanwhile.
	Finish func() []*session.Delivery
	// GiveBack, when set, runs instead of Finish when the connect is refused after
	// the takeover and Session was not installed here: the old node keeps it.
	GiveBack func()
	// Done, when set, runs last, once what Finish returned is queued here (or after
	// GiveBack): the move is over, and the next one of this client ID may start.
	Done func()
}

// Route is a subscription filter as nodes exchange it: which filters (per share
// group) have subscribers on a node.
type Route struct {
	Group  string
	Filter string
}

// peerPrefix marks the pseudo-client a peer node's routes are subscribed under in the
// trie. MQTT strings cannot hold U+0000 (MQTT-1.5.4-2), so no client ID collides.
const peerPrefix = "\x00node:"

func peerClientID(node string) string { return peerPrefix + node }

func peerOf(clientID string) (string, bool) {
	if !strings.HasPrefix(clientID, peerPrefix) {
		return "", false
	}
	return clientID[len(peerPrefix):], true
}

// SetCluster connects the server to its cluster. Call it before serving clients.
func (s *Server) SetCluster(c Cluster) { s.cluster.Store(&c) }

// clusterOf returns the server's cluster, nil for a single node.
func (s *Server) clusterOf() Cluster {
	if c := s.cluster.Load(); c != nil {
		return *c
	}
	return nil
}

// SetRemoteRoutes applies a peer's routes: with full, they replace what the peer had.
func (s *Server) SetRemoteRoutes(node string, full bool, add, del []Route) {
	s.remoteMu.Lock()
	defer s.remoteMu.Unlock()
	id := peerClientID(node)
	have := s.remote[node]
	if have == nil {
		have = make(map[Route]struct{})
		s.remote[node] = have
	}
	if full {
		for r := range have {
			if !contains(add, r) {
				s.trie.Unsubscribe(id, r.Group, r.Filter)
				delete(have, r)
			}
		}
	}
	for _, r := range del {
		if _, ok := have[r]; ok {
			s.trie.Unsubscribe(id, r.Group, r.Filter)
			delete(have, r)
		}
	}
	for _, r := range add {
		if _, ok := have[r]; !ok {
			s.trie.Subscribe(topic.Subscription{ClientID: id, Filter: r.Filter, ShareGroup: r.Group, QoS: 2})
			have[r] = struct{}{}
		}
	}
}

func contains(rs []Route, r Route) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// DropRemoteRoutes forgets every route of a peer (it left or its link is down).
func (s *Server) DropRemoteRoutes(node string) {
	s.remoteMu.Lock()
	defer s.remoteMu.Unlock()
	id := peerClientID(node)
	for r := range s.remote[node] {
		s.trie.Unsubscribe(id, r.Group, r.Filter)
	}
	delete(s.remote, node)
}

// DeliverForwarded queues a message another node forwarded to this one for the local
// sessions: every matching subscription, and for shared subscriptions only the groups
// the sending node picked this node for. It returns the number of sessions.
func (s *Server) DeliverForwarded(msg *session.Message, shared []Route) int {
	n, _ := s.route(msg, true, shared)
	return n
}

// ApplyRetained stores or clears a retained message on this node (called by the
// cluster for every node once the change is replicated).
func (s *Server) ApplyRetained(msg *session.Message) { s.setRetained(msg) }

// RetainedMessages returns this node's retained messages (for cluster snapshots).
func (s *Server) RetainedMessages() []*session.Message {
	s.retainedMu.RLock()
	defer s.retainedMu.RUnlock()
	out := make([]*session.Message, 0, len(s.retained))
	for t, m := range s.retained {
		if !strings.HasPrefix(t, "$SYS/") {
			out = append(out, m)
		}
	}
	return out
}

// ReplaceRetained makes msgs the retained set (a cluster snapshot was restored).
func (s *Server) ReplaceRetained(msgs []*session.Message) {
	keep := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		keep[m.Topic] = true
		s.setRetained(m)
	}
	for _, m := range s.RetainedMessages() {
		if !keep[m.Topic] {
			s.setRetained(&session.Message{Topic: m.Topic})
		}
	}
}

// Kick ends client id's session on this node because a connect on another node takes
// it over with the given epoch. The connection, if any, is closed with 0x8E (session
// taken over). With want, a persistent session's state is returned for the new node:
// the session stays here, moving, with its routes, and keeps what arrives until the
// new node releases it (Release), so nothing published meanwhile is lost.
//
// A session that claim may not take (it belongs to another user) is left alone and
// ErrClientIDOwned returned.
func (s *Server) Kick(id string, epoch uint64, want bool, claim Claim) (*session.Snapshot, error) {
	return s.kick(id, epoch, want, claim, false)
}

// KickStale is Kick for a connect the cluster ordered while this node was out of reach
// (sent once it is back): a session whose last connect here came later (a higher
// epoch, connected or not) is newer and stays; an older one goes as with Kick.
func (s *Server) KickStale(id string, epoch uint64, want bool, claim Claim) (*session.Snapshot, error) {
	return s.kick(id, epoch, want, claim, true)
}

func (s *Server) kick(id string, epoch uint64, want bool, claim Claim, stale bool) (*session.Snapshot, error) {
	var wills []*session.Message
	defer func() { s.publishWills(wills) }()
	var routes uint64
	defer func() { s.flushRoutes(routes) }() // after the unlock, before the takeover is answered
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.sessions[id]
	if e != nil && !claim.Allows(e.sess.Owner()) { // a moving session still knows its owner
		s.log.Info("takeover from another node refused: the client ID's session belongs to another user", "client", id, "claimedBy", claim.Owner)
		return nil, ErrClientIDOwned
	}
	if e != nil && e.moving {
		// Handed over already and never released: that move has not ended (its answer
		// is late or was lost; it ends with Unmove, Release or the move timeout). No
		// second move of it starts meanwhile, or its state would be in two places.
		s.log.Info("takeover from another node refused: the session is still moving", "client", id)
		return nil, ErrSessionMoving
	}
	if stale && e != nil && e.epoch > epoch {
		return nil, nil // connected here after the connect that kicks (still or before): newer
	}
	if stale && e != nil && e.client != nil {
		s.log.Info("closing a connection that a newer connect elsewhere replaced while this node was out of reach", "client", id, "remote", e.client.addr)
	}
	if epoch > s.kicked[id] {
		s.kicked[id] = epoch
	}
	if e == nil {
		return nil, nil
	}
	expiry, disconnected := e.expiry, e.disconnected
	if old := e.client; old != nil {
		disconnected = time.Now()
		expiry = old.sessionExpiry
		e.client = nil
		old.takenOver.Store(true)
		e.sess.Detach(old.gen)
		if old.willDelay == 0 || !want || expiry == 0 { // the session ends: its will is due
			wills = append(wills, old.pendingWill())
		}
		old.shutdown(packet.SessionTakenOver, "a connection on another node took over the session")
		s.log.Info("session taken over by another node", "client", id, "old", old.addr)
	}
	stopTimer(e.expiryTimer)
	stopTimer(e.willTimer)
	if e.will != nil && !want {
		wills = append(wills, s.dueWill(e))
	}
	e.will = nil
	if !want || expiry == 0 {
		routes = s.dropSession(id, e)
		return nil, nil
	}
	snap := e.sess.Handover()
	snap.Expiry = expiry
	snap.Disconnected = disconnected
	e.moving = true
	e.moveEpoch = epoch
	if err := s.opts.Store.DeleteSession(id); err != nil { // the state is the new node's now
		s.stats.storeErrors.Add(1)
		s.log.Error("deleting session failed", "client", id, "error", err)
	}
	e.moveGen++
	handed, gen := snap, e.moveGen
	e.moveTimer = time.AfterFunc(s.moveTimeout, func() { s.moveExpired(id, e, gen, handed) })
	return &snap, nil
}

// movedDedupWindow is how long a moved session remembers the messages it held when
// its move finished, so that a copy still on its way from a third node (sent there
// because the node had routes for it) is not queued twice: longer than a forward's
// ack timeout.
const movedDedupWindow = 15 * time.Second

// moveTimeout bounds how long a moving session waits for its new node's release: well
// past the slowest move that still ends well (a kick answered within 8 s, the
// requester's wait of 15 s, a route barrier and a release of up to 15 s each).
const moveTimeout = 60 * time.Second

// moveExpired ends a move nobody released in time: the answer carrying the session
// was lost (its link broke, or it came after the takeover gave up and the way back
// failed too). The session stays here, as handed over plus what arrived since: a
// copy that did reach a new node all the same (its release failed) makes the two
// copies deliver some messages twice, which is better than losing them all.
func (s *Server) moveExpired(id string, e *entry, gen uint64, handed session.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[id] != e || !e.moving || e.moveGen != gen || s.closing {
		return
	}
	s.stats.movesExpired.Add(1)
	s.log.Warn("a moved session was never released: keeping it here", "client", id, "timeout", s.moveTimeout)
	s.unmoveLocked(e, handed)
}

// Release ends a moving session (its new node has it and its routes) and returns what
// was queued for it since it moved. A non-zero epoch names the move (its kick's
// epoch): the release of another move does nothing (a retry that comes late).
func (s *Server) Release(id string, epoch uint64) []*session.Delivery {
	var routes uint64
	defer func() { s.flushRoutes(routes) }() // after the unlock, before the answer
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.sessions[id]
	if e == nil || !e.moving || (epoch != 0 && e.moveEpoch != epoch) {
		return nil
	}
	stopTimer(e.moveTimer)
	extra := e.sess.Drain()
	delete(s.sessions, id)
	for _, sub := range e.sess.Subscriptions() {
		routes = max(routes, s.removeSub(id, sub.ShareGroup, sub.Filter))
	}
	return extra
}

// Unmove takes back a session whose move failed: its state plus what arrived since.
// A non-zero epoch names the move, as with Release.
func (s *Server) Unmove(snap session.Snapshot, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.sessions[snap.ID]
	if e == nil || !e.moving || (epoch != 0 && e.moveEpoch != epoch) {
		return
	}
	s.unmoveLocked(e, snap)
}

// unmoveLocked restores moving session e from snap and queues what arrived since it
// was handed over after it. s.mu held.
func (s *Server) unmoveLocked(e *entry, snap session.Snapshot) {
	stopTimer(e.moveTimer)
	extra := e.sess.Drain()
	e.sess = session.Restore(snap, s.sessionLimits())
	e.moving = false
	for _, d := range extra {
		e.sess.Enqueue(d)
	}
	e.expiry, e.disconnected = snap.Expiry, snap.Disconnected
	s.armExpiry(snap.ID, e, e.disconnected)
	s.saveSession(e)
}

// MergeMoved adds to a session moved here what its old node queued for it while it
// moved (session.Session.MergeMoved: in order, each message once).
func (s *Server) MergeMoved(id string, ds []*session.Delivery) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.sessions[id]
	if e == nil {
		if len(ds) > 0 {
			s.log.Warn("messages queued on a moved session's old node arrived after the session was gone", "client", id, "messages", len(ds))
		}
		return
	}
	_, dropped := e.sess.MergeMoved(s.readable(id, e, ds), movedDedupWindow)
	if dropped > 0 {
		s.stats.dropped.Add(uint64(dropped))
	}
	// Offline: stored whole before the move is reported done, even with nothing
	// added: merging numbers the queue afresh (StoreSeq), and the records must match.
	if e.client == nil && e.expiry != 0 && !e.moving {
		s.saveSession(e)
	}
}

// MergeStale takes in the copy of client id's session that a node out of reach held
// (KickStale there handed it over): its messages are queued in the session here after
// what it holds, each once (mergeCopy). It reports false, doing nothing, when there is
// no such session here to take it, or it is moving, or it is another user's (the
// copy then goes back).
func (s *Server) MergeStale(id string, other *session.Snapshot) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.sessions[id]
	if e == nil || e.moving || e.sess.Owner() != other.Owner {
		return false
	}
	mergeCopy(e.sess, &session.Snapshot{Queue: s.readable(id, e, other.Queue)})
	if e.client == nil && e.expiry != 0 {
		s.saveSession(e)
	}
	return true
}

// readable keeps of ds what session e's user may read: messages queued on another
// copy of the session (a move's old node, a copy out of reach) were matched by that
// copy's subscriptions and judged by its node's rules at its time. A session whose
// user is unknown keeps all; the client that claims it gets it rechecked.
func (s *Server) readable(id string, e *entry, ds []*session.Delivery) []*session.Delivery {
	a := s.opts.Auth
	if a == nil || len(ds) == 0 {
		return ds
	}
	p, ok := principalOf(id, e.sess.Owner())
	if !ok {
		return ds
	}
	out := ds[:0:0]
	for _, d := range ds {
		if d.Msg == nil || a.MayRead(p, d.Msg.Topic) {
			out = append(out, d)
		}
	}
	if n := len(ds) - len(out); n > 0 {
		s.stats.dropped.Add(uint64(n))
		s.log.Info("messages from another copy of a session dropped: the ACL does not let its user read them", "client", id, "username", p.Username, "messages", n)
	}
	return out
}

// Holds reports whether client id has a session here that is not moving away.
func (s *Server) Holds(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.sessions[id]
	return e != nil && !e.moving
}

// mergeCopy queues what another copy of a session held after sess's own (as a
// takeover merges copies): its inflight deliveries as new ones, except QoS 2 ones the
// client already received, each message once.
func mergeCopy(sess *session.Session, other *session.Snapshot) {
	ds := make([]*session.Delivery, 0, len(other.Queue))
	for _, d := range other.Queue {
		if d.Released {
			continue
		}
		q := *d
		q.PacketID, q.Dup = 0, false
		ds = append(ds, &q)
	}
	sess.MergeMoved(ds, movedDedupWindow)
}

// installSession makes a session handed over by another node this node's. Its
// subscriptions are judged by this node's rules first: nodes reload at different
// times. routes is the last route change it queued (see flushRoutes). Lock held.
func (s *Server) installSession(snap session.Snapshot) (e *entry, routes uint64) {
	e = &entry{sess: session.Restore(snap, s.sessionLimits()), expiry: snap.Expiry, disconnected: snap.Disconnected}
	if p, ok := principalOf(snap.ID, snap.Owner); ok {
		s.recheckEntry(snap.ID, e, p, false) // not routed yet: no route change
	}
	s.sessions[snap.ID] = e
	for _, sub := range e.sess.Subscriptions() {
		routes = max(routes, s.addSub(sub))
	}
	return e, routes
}

// AdoptSession takes a detached persistent session moved here from an evacuating
// node; a session already here (the client reconnected first) wins.
func (s *Server) AdoptSession(snap session.Snapshot) bool {
	var routes uint64
	defer func() { s.flushRoutes(routes) }() // after the unlock, before the cluster's route barrier
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[snap.ID] != nil || s.closing {
		return false
	}
	var e *entry
	e, routes = s.installSession(snap)
	// Newer than any connect before the move (a stale kick of one leaves it); two
	// copies, if the cluster held another, rather than none.
	e.epoch = uint64(time.Now().UnixNano())
	s.armExpiry(snap.ID, e, snap.Disconnected)
	s.saveSession(e)
	return true
}
