package server

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

var matchesPool = sync.Pool{New: func() any { return new(topic.Matches) }}

// publish routes msg to every matching session and updates the retained store. It
// returns the number of sessions the message was queued for.
func (s *Server) publish(msg *session.Message) int {
	if msg.Retain {
		s.setRetained(msg)
	}
	m, ok := matchesPool.Get().(*topic.Matches)
	if !ok {
		m = new(topic.Matches)
	}
	defer matchesPool.Put(m)
	s.trie.Match(msg.Topic, m)
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
		d := mergeDelivery(msg, subs[i:j])
		i = j
		if d == nil {
			continue
		}
		if s.enqueue(subs[i-1].ClientID, d) {
			n++
		}
	}
	for _, g := range m.Shared {
		if s.deliverShared(msg, g) {
			n++
		}
	}
	return n
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

// enqueue hands d to a session. Lock (read) held on entry.
func (s *Server) enqueue(clientID string, d *session.Delivery) bool {
	e := s.sessions[clientID]
	if e == nil {
		return false
	}
	queued, dropped := e.sess.Enqueue(d)
	if dropped { // DropOldest drops too, while queueing d
		s.stats.dropped.Add(1)
	}
	return queued
}

// deliverShared gives msg to one member of a shared subscription, preferring connected
// members in round-robin order. Lock (read) held on entry.
func (s *Server) deliverShared(msg *session.Message, g *topic.SharedGroup) bool {
	members := g.Members
	if len(members) == 0 {
		return false
	}
	key := g.Group + "\x00" + g.Filter
	s.shareMu.Lock()
	start := s.shareRR[key]
	s.shareRR[key] = start + 1
	s.shareMu.Unlock()
	pick := -1
	for k := range members {
		i := (int(start) + k) % len(members)
		if e := s.sessions[members[i].ClientID]; e != nil && e.client != nil {
			pick = i
			break
		}
	}
	if pick < 0 {
		pick = int(start) % len(members) // nobody online: queue for a persistent member
	}
	sub := members[pick]
	d := &session.Delivery{Msg: msg, QoS: min(msg.QoS, sub.QoS), Retain: msg.Retain && sub.RetainAsPublished}
	if sub.Identifier != 0 {
		d.SubIDs = []uint32{sub.Identifier}
	}
	return s.enqueue(sub.ClientID, d)
}

// setRetained stores or clears (empty payload) the retained message of msg's topic.
func (s *Server) setRetained(msg *session.Message) {
	s.retainedMu.Lock()
	defer s.retainedMu.Unlock()
	// $SYS values are the broker's live state, not worth keeping across restarts.
	persist := !strings.HasPrefix(msg.Topic, "$SYS/")
	var err error
	if len(msg.Payload) == 0 {
		delete(s.retained, msg.Topic)
		if persist {
			err = s.opts.Store.DeleteRetained(msg.Topic)
		}
	} else {
		s.retained[msg.Topic] = msg
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
		d := &session.Delivery{Msg: m, QoS: min(m.QoS, sub.QoS), Retain: true}
		if sub.Identifier != 0 {
			d.SubIDs = []uint32{sub.Identifier}
		}
		if _, dropped := sess.Enqueue(d); dropped {
			s.stats.dropped.Add(1)
		}
	}
}
