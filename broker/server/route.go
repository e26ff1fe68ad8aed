package server

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

var matchesPool = sync.Pool{New: func() any { return new(topic.Matches) }}

// publish routes msg to every matching session, on this node and through the
// cluster on the others, and updates the retained messages. It returns once the other
// nodes acknowledged (QoS 1 and 2) or failed. It is for the broker's own messages
// (wills, $SYS): one whose retained copy cannot be replicated is still delivered, not
// retained.
func (s *Server) publish(msg *session.Message) {
	if _, wait, _ := s.publishAsync(msg, true); wait != nil {
		wait()
	}
}

// publishAsync is publish without waiting for other nodes: it returns the sessions
// queued on this node and, when the message went to other nodes, a wait that returns
// theirs once they acknowledged. A QoS 1 publisher's acks are sent from it in order
// (client.queueAck), so one publisher keeps several messages in flight across nodes.
// A retained message over the retained limits is routed but not stored: retained is
// then packet.QuotaExceeded. One the cluster could not replicate (no raft majority)
// is neither stored nor, unless deliverUnreplicated, routed: retained is then
// packet.UnspecifiedError and the publisher must be refused. Otherwise it is
// packet.Success.
func (s *Server) publishAsync(msg *session.Message, deliverUnreplicated bool) (n int, wait func() int, retained packet.Code) {
	if msg.ID.IsZero() { // published here: the copies other nodes get carry the same ID
		msg.ID = session.MessageID{Origin: s.msgOrigin, Seq: s.msgSeq.Add(1)}
	}
	retained = packet.Success
	if msg.Retain {
		if retained = s.retain(msg); retained == packet.UnspecifiedError && !deliverUnreplicated {
			return 0, nil, retained
		}
	}
	n, targets := s.route(msg, false, nil)
	if len(targets) == 0 {
		return n, nil, retained
	}
	return n, s.clusterOf().Forward(msg, targets), retained
}

// retain records a retained message: through the cluster when there is one, so every
// node serves the same set; $SYS topics are each node's own. It returns
// packet.QuotaExceeded when the retained limits refused it, packet.UnspecifiedError
// when the cluster could not replicate it (no raft majority: it is not kept here
// either, or this node would serve a retained set the cluster never committed), both
// counted and logged, and packet.Success when it is stored.
func (s *Server) retain(msg *session.Message) packet.Code {
	if l, ok := s.admitRetained(msg); !ok {
		s.refuseRetained(msg, l)
		return packet.QuotaExceeded
	}
	cl := s.clusterOf()
	if cl == nil || strings.HasPrefix(msg.Topic, "$SYS/") {
		s.setRetained(msg)
		return packet.Success
	}
	if err := cl.Retain(msg); err != nil {
		s.stats.clusterErrors.Add(1)
		s.stats.retainedUnreplicated.Add(1)
		s.log.Warn("retained message refused: the cluster could not replicate it to a majority", "topic", msg.Topic, "publisher", msg.Publisher, "error", err)
		return packet.UnspecifiedError
	}
	return packet.Success
}

// route queues msg for the local sessions it matches. For a message published here,
// it also collects the peer nodes with matching routes (and the shared subscriptions
// picked on them); for one a peer forwarded (fromPeer), only the shared groups in
// shared are served: the peer picked this node for them.
func (s *Server) route(msg *session.Message, fromPeer bool, shared []Route) (int, map[string][]Route) {
	var dirty []queuedWrite
	defer func() { s.saveOffline(dirty) }() // after the read lock below is released
	m, ok := matchesPool.Get().(*topic.Matches)
	if !ok {
		m = new(topic.Matches)
	}
	defer matchesPool.Put(m)
	s.trie.Match(msg.Topic, m)
	forward := !fromPeer && s.clusterOf() != nil && !strings.HasPrefix(msg.Topic, "$SYS/")
	var targets map[string][]Route
	subs := m.Subs
	if len(subs) > 1 {
		slices.SortFunc(subs, func(a, b topic.Subscription) int { return cmp.Compare(a.ClientID, b.ClientID) })
	}
	n := 0
	s.mu.RLock()
	defer s.mu.RUnlock()
	// One delivery per client: overlapping subscriptions merge into the highest QoS and
	// carry all their identifiers (MQTT-3.3.4-2, 3.3.4-3).
	for i := 0; i < len(subs); {
		j := i + 1
		for j < len(subs) && subs[j].ClientID == subs[i].ClientID {
			j++
		}
		id := subs[i].ClientID
		group := subs[i:j]
		i = j
		if watcher, delivered := s.deliverWatch(id, msg); watcher {
			if delivered {
				n++ // a subscriber too: a publisher is not told there is none (PUBACK 0x10)
			}
			continue
		}
		if node, ok := peerOf(id); ok {
			if forward {
				targets = addTarget(targets, node, nil)
			}
			continue
		}
		d := mergeDelivery(msg, group)
		if d == nil {
			continue
		}
		if s.enqueue(id, d, &dirty) {
			n++
		}
	}
	for _, g := range m.Shared {
		if fromPeer && !slices.Contains(shared, Route{Group: g.Group, Filter: g.Filter}) {
			continue
		}
		node, ok := s.deliverShared(msg, g, forward, &dirty)
		switch {
		case node != "":
			targets = addTarget(targets, node, &Route{Group: g.Group, Filter: g.Filter})
		case ok:
			n++
		}
	}
	return n, targets
}

func addTarget(t map[string][]Route, node string, r *Route) map[string][]Route {
	if t == nil {
		t = make(map[string][]Route)
	}
	rs := t[node]
	if r != nil {
		rs = append(rs, *r)
	}
	t[node] = rs
	return t
}

// mergeDelivery builds the delivery for one client from its matching subscriptions, or
// nil when no-local excludes all of them.
func mergeDelivery(msg *session.Message, subs []topic.Subscription) *session.Delivery {
	var d *session.Delivery
	for _, sub := range subs {
		if sub.NoLocal && sub.ClientID == msg.Publisher {
			continue
		}
		if d == nil {
			d = &session.Delivery{Msg: msg}
		}
		d.QoS = max(d.QoS, min(msg.QoS, sub.QoS))
		if sub.RetainAsPublished && msg.Retain {
			d.Retain = true
		}
		if sub.Identifier != 0 {
			d.SubIDs = append(d.SubIDs, sub.Identifier)
		}
	}
	return d
}

// queuedWrite is a message's record handed to the store for an offline session.
type queuedWrite struct {
	e *entry
	c *store.Commit
}

// enqueue hands d to a session. Lock (read) held on entry. A message queued for a
// persistent session without a connection is handed to the store as its own record
// (and the ones the full queue dropped for it deleted), in the session's order; its
// Commit goes to dirty, waited for before the publisher's ack (see saveOffline): a
// crash must not lose what was acknowledged. A session whose last store write
// failed (storeStale) is saved whole instead, until that succeeds.
func (s *Server) enqueue(clientID string, d *session.Delivery, dirty *[]queuedWrite) bool {
	e := s.sessions[clientID]
	if e == nil {
		return false
	}
	var queued bool
	var dropped int
	switch {
	case d.QoS == 0 || e.client != nil || e.expiry == 0 || e.moving:
		queued, dropped = e.sess.Enqueue(d)
	case e.storeStale.Load():
		queued, dropped = e.sess.Enqueue(d)
		s.saveSession(e)
	default:
		queued, dropped = e.sess.EnqueueStored(d, func(added *session.Delivery, drops []uint64) {
			*dirty = append(*dirty, queuedWrite{e, s.opts.Store.WriteQueued(clientID, added, drops)})
		})
	}
	if dropped > 0 { // DropOldest drops too, while queueing d
		s.stats.dropped.Add(uint64(dropped))
	}
	return queued
}

// saveOffline waits, without Server.mu, until what enqueue handed to the store for
// offline sessions is durable: before the publisher is acknowledged. The store
// commits what many publishers hand it meanwhile as one batch. A session whose
// record failed is marked storeStale: its next queued message saves it whole.
func (s *Server) saveOffline(dirty []queuedWrite) {
	for _, w := range dirty {
		if err := w.c.Wait(); err != nil {
			w.e.storeStale.Store(true)
			s.stats.storeErrors.Add(1)
			s.log.Error("storing a message queued for an offline session failed", "client", w.e.sess.ID, "error", err)
		}
	}
}

// deliverShared gives msg to one member of a shared subscription, preferring connected
// members in round-robin order. A member may be a peer node (with peers): then the
// message is not queued here and the node is returned, to be forwarded to. Lock
// (read) held on entry.
func (s *Server) deliverShared(msg *session.Message, g *topic.SharedGroup, peers bool, dirty *[]queuedWrite) (node string, queued bool) {
	members := g.Members
	if !peers {
		members = localMembers(members)
	}
	if len(members) == 0 {
		return "", false
	}
	key := g.Group + "\x00" + g.Filter
	s.shareMu.Lock()
	start := s.shareRR[key]
	s.shareRR[key] = start + 1
	s.shareMu.Unlock()
	pick := -1
	for k := range members {
		i := (int(start) + k) % len(members)
		id := members[i].ClientID
		if peer, ok := peerOf(id); ok {
			if s.clusterOf().PeerUp(peer) {
				pick = i
				break
			}
			continue
		}
		if e := s.sessions[id]; e != nil && e.client != nil {
			pick = i
			break
		}
	}
	if pick < 0 {
		pick = int(start) % len(members) // nobody online: queue for a persistent member
	}
	sub := members[pick]
	if peer, ok := peerOf(sub.ClientID); ok {
		return peer, false
	}
	d := &session.Delivery{Msg: msg, QoS: min(msg.QoS, sub.QoS), Retain: msg.Retain && sub.RetainAsPublished, Shared: true}
	if sub.Identifier != 0 {
		d.SubIDs = []uint32{sub.Identifier}
	}
	return "", s.enqueue(sub.ClientID, d, dirty)
}

// localMembers returns the members of a shared group that are clients of this node.
func localMembers(ms []topic.Subscription) []topic.Subscription {
	for i, m := range ms {
		if _, ok := peerOf(m.ClientID); ok {
			out := slices.Clone(ms[:i])
			for _, m := range ms[i+1:] {
				if _, ok := peerOf(m.ClientID); !ok {
					out = append(out, m)
				}
			}
			return out
		}
	}
	return ms
}

// setRetained stores or clears (empty payload) the retained message of msg's topic.
func (s *Server) setRetained(msg *session.Message) {
	s.retainedMu.Lock()
	defer s.retainedMu.Unlock()
	// $SYS values are the broker's live state, not worth keeping across restarts.
	persist := !strings.HasPrefix(msg.Topic, "$SYS/")
	var err error
	if old, ok := s.retained[msg.Topic]; ok {
		s.retainedBytes -= retainedSize(old)
	}
	if len(msg.Payload) == 0 {
		delete(s.retained, msg.Topic)
		if persist {
			err = s.opts.Store.DeleteRetained(msg.Topic)
		}
	} else {
		s.retained[msg.Topic] = msg
		s.retainedBytes += retainedSize(msg)
		if persist {
			err = s.opts.Store.PutRetained(msg)
		}
	}
	if err != nil {
		s.stats.storeErrors.Add(1)
		s.log.Error("storing retained message failed", "topic", msg.Topic, "error", err)
	}
}

// deliverRetained queues the retained messages matching filter for a new subscription.
// They are sent with RETAIN set (MQTT-3.3.1-8).
func (s *Server) deliverRetained(sess *session.Session, filter string, sub topic.Subscription) {
	now := time.Now()
	s.retainedMu.RLock()
	var msgs []*session.Message
	for t, m := range s.retained {
		if topic.MatchFilter(filter, t) && !m.Expired(now) {
			msgs = append(msgs, m)
		}
	}
	s.retainedMu.RUnlock()
	slices.SortFunc(msgs, func(a, b *session.Message) int { return cmp.Compare(a.Topic, b.Topic) })
	for _, m := range msgs {
		if !m.ID.IsZero() {
			// A retained copy is its own delivery, not a copy of the live one: no ID, so
			// a moved session's duplicate check never takes it for one (MergeMoved).
			c := *m
			c.ID = session.MessageID{}
			m = &c
		}
		d := &session.Delivery{Msg: m, QoS: min(m.QoS, sub.QoS), Retain: true}
		if sub.Identifier != 0 {
			d.SubIDs = []uint32{sub.Identifier}
		}
		if _, dropped := sess.Enqueue(d); dropped > 0 {
			s.stats.dropped.Add(uint64(dropped))
		}
	}
}
