package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/store"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// connect handles CONNECT: it negotiates limits, takes over or creates the session and
// queues CONNACK. It reports false when the connection was refused.
func (c *client) connect(p *packet.Packet) bool {
	s := c.s
	cf := &p.Connect
	props := &p.Properties
	c.version = cf.ProtocolVersion
	ack := packet.Packet{Type: packet.Connack}

	c.id = cf.ClientID
	if c.id == "" {
		if c.version == packet.V5 || (c.version == packet.V311 && cf.CleanStart) {
			c.id = "auto-" + randomHex(12)
			ack.Properties.AssignedClientID = c.id
			ack.Properties.Set(packet.PropAssignedClientID)
		} else {
			return c.refuse(packet.ClientIdentifierNotValid, "empty client identifier needs a clean session")
		}
	}

	ka := cf.KeepAlive
	if c.version == packet.V5 && s.opts.MaxKeepAlive > 0 && (ka == 0 || ka > s.opts.MaxKeepAlive) {
		ka = s.opts.MaxKeepAlive
		ack.Properties.ServerKeepAlive = ka
		ack.Properties.Set(packet.PropServerKeepAlive)
	}
	c.keepAlive = time.Duration(ka) * time.Second

	// Session expiry: v3 persistent sessions never expire unless capped.
	switch {
	case c.version == packet.V5:
		c.sessionExpiry = props.SessionExpiry
	case cf.CleanStart:
		c.sessionExpiry = 0
	default:
		c.sessionExpiry = ExpiryNever
	}
	if s.opts.MaxSessionExpiry > 0 && c.sessionExpiry > s.opts.MaxSessionExpiry {
		c.sessionExpiry = s.opts.MaxSessionExpiry
		if c.version == packet.V5 {
			ack.Properties.SessionExpiry = c.sessionExpiry
			ack.Properties.Set(packet.PropSessionExpiry)
		}
	}

	c.window = s.opts.MaxInflight
	c.requestProblemInfo = true
	if c.version == packet.V5 {
		if props.Has(packet.PropReceiveMaximum) {
			c.window = min(c.window, int(props.ReceiveMaximum))
		}
		if props.Has(packet.PropMaximumPacketSize) {
			c.maxOut = props.MaximumPacketSize
		}
		c.aliasMaxOut = props.TopicAliasMaximum
		if props.Has(packet.PropRequestProblemInfo) {
			c.requestProblemInfo = props.RequestProblemInfo == 1
		}
		if props.Has(packet.PropAuthMethod) {
			// Enhanced authentication is not offered (MQTT-4.12.0-1: may refuse).
			return c.refuse(packet.BadAuthenticationMethod, "enhanced authentication is not supported")
		}
	}

	if code, why := c.authenticate(cf); code != packet.Success {
		return c.refuse(code, why)
	}

	if cf.WillFlag {
		wp := &cf.WillProperties
		c.will = &session.Message{Topic: cf.WillTopic, Payload: cf.WillPayload, QoS: cf.WillQoS,
			Retain: cf.WillRetain, Properties: session.ForwardedProperties(wp), Publisher: c.id}
		c.willDelay = wp.WillDelay
		c.willExpiry, c.willHasExpiry = wp.MessageExpiry, wp.Has(packet.PropMessageExpiry)
	}

	present, code, why := s.attach(c, cf.CleanStart)
	if code != packet.Success {
		return c.refuse(code, why)
	}
	ack.SessionPresent = present
	if c.version == packet.V5 {
		ack.Properties.ReceiveMaximum = s.opts.ReceiveMaximum
		ack.Properties.Set(packet.PropReceiveMaximum)
		ack.Properties.MaximumPacketSize = s.opts.MaxPacketSize
		ack.Properties.Set(packet.PropMaximumPacketSize)
		ack.Properties.TopicAliasMaximum = s.opts.TopicAliasMaximum
		ack.Properties.Set(packet.PropTopicAliasMaximum)
	}
	c.send(ack)
	s.stats.connectsTotal.Add(1)
	s.log.Debug("client connected", "client", c.id, "remote", c.addr, "version", c.version,
		"clean", cf.CleanStart, "sessionPresent", present, "keepalive", ka)
	return true
}

// refuse writes a failing CONNACK and logs why.
func (c *client) refuse(code packet.Code, why string) bool {
	s := c.s
	s.log.Log(context.Background(), c.refuseLevel, "connection refused", "client", c.id, "remote", c.addr, "reason", code.Error(), "detail", why)
	ack := packet.Packet{Type: packet.Connack, ReasonCode: code}
	c.explain(&ack, why)
	if c.version != packet.V5 {
		ack.ReasonCode = packet.Code(packet.ConnackV3(code))
	}
	c.writeNow(ack.Encode(nil, c.version))
	return false
}

// pendingWill is the will to publish now that the connection ended without a
// DISCONNECT that discards it.
func (c *client) pendingWill() *session.Message {
	if !c.sendWill || c.will == nil {
		return nil
	}
	return c.willMessage()
}

// willMessage builds the will as it is published now (its expiry counts from now);
// nil when there is none or the ACL no longer allows it.
func (c *client) willMessage() *session.Message {
	if c.will == nil || !c.willAllowed(c.will) {
		return nil
	}
	w := *c.will
	if c.willHasExpiry {
		w.Expiry = time.Now().Add(time.Duration(c.willExpiry) * time.Second)
	}
	return &w
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// attach binds client c to its session, taking over a live connection with the same
// client ID (MQTT-3.1.4-3). It returns whether a session was present, or why not.
func (s *Server) attach(c *client, clean bool) (present bool, code packet.Code, why string) {
	var wills []*session.Message
	defer func() { s.publishWills(wills) }()
	// Refuse before touching the cluster: a takeover moves the session here.
	if code, why := s.refusal(); code != packet.Success {
		return false, code, why
	}
	claim := c.claim()
	if code, why := s.ownershipRefusal(c.id, claim); code != packet.Success {
		return false, code, why
	}
	// In a cluster, sessions of this client ID on other nodes end first; a persistent
	// one comes here with its subscriptions and queue.
	var ho Handover
	if cl := s.clusterOf(); cl != nil {
		var err error
		ho, err = cl.Takeover(c.id, clean, claim)
		switch {
		case errors.Is(err, ErrClientIDOwned):
			s.opts.Auth.CountClientIDRefused()
			s.log.Info("connect refused: the client ID's session on another node belongs to another user", "client", c.id, "username", c.principal.Username, "remote", c.addr)
			return false, packet.NotAuthorized, "this client ID belongs to another user"
		case errors.Is(err, ErrSessionMoving):
			s.stats.clusterErrors.Add(1)
			s.log.Info("connect refused: the client ID's session is still moving between nodes", "client", c.id, "remote", c.addr)
			return false, packet.ServerBusy, "this client ID's session is moving between nodes; try again"
		case errors.Is(err, ErrNoMajority):
			s.stats.clusterErrors.Add(1)
			s.log.Info("connect refused: this node reaches no majority of the cluster", "client", c.id, "remote", c.addr)
			return false, packet.ServerUnavailable, "this node is cut off from the majority of the cluster; connect to another node"
		case errors.Is(err, ErrTakeoverUnanswered):
			s.stats.clusterErrors.Add(1)
			s.log.Warn("connect refused: the client ID's owner did not answer the takeover", "client", c.id, "error", err)
			return false, packet.ServerUnavailable, "the cluster could not order this connect; try again"
		case err != nil && claim.Check:
			// Without the owner's answer nobody can tell whose client ID this is.
			s.stats.clusterErrors.Add(1)
			s.log.Warn("connect refused: the cluster could not check the client ID's owner", "client", c.id, "error", err)
			return false, packet.ServerUnavailable, "the cluster could not check this client ID; try again"
		case err != nil:
			s.stats.clusterErrors.Add(1)
			s.log.Warn("cluster takeover failed; connecting on this node only", "client", c.id, "error", err)
		}
	}
	moved, epoch := ho.Session, ho.Epoch
	installed, refused := false, false
	var localExtra []*session.Delivery // queued on a local moving copy the cluster's copy replaces
	defer func() {                     // after the unlock below
		if ho.Done != nil {
			defer ho.Done()
		}
		switch {
		case refused && moved != nil && !installed && ho.GiveBack != nil:
			ho.GiveBack() // nobody here took it: its old node keeps it
		case ho.Finish != nil:
			if extra := ho.Finish(); installed {
				s.MergeMoved(c.id, append(localExtra, extra...))
			}
		}
	}()
	var routes uint64
	defer func() { s.flushRoutes(routes) }() // after the unlock, before Finish: its route barrier needs them
	s.mu.Lock()
	defer s.mu.Unlock()
	code, why = s.refusalLocked()
	if code == packet.Success {
		code, why = s.ownershipRefusalLocked(c.id, claim)
	}
	if code == packet.Success && moved != nil && !claim.Allows(moved.Owner) {
		s.opts.Auth.CountClientIDRefused()
		code, why = packet.NotAuthorized, "this client ID belongs to another user"
	}
	if k, ok := s.kicked[c.id]; ok && code == packet.Success {
		if epoch != 0 && epoch < k {
			code, why = packet.ServerBusy, "a newer connection with this client ID won on another node"
		} else {
			delete(s.kicked, c.id)
		}
	}
	if code != packet.Success {
		refused = true
		// Refused after the takeover: a session that came here stays, detached, so
		// nothing it held is lost (unless it is another user's: that one goes back).
		if moved != nil && !clean && s.sessions[c.id] == nil && !s.closing && claim.Allows(moved.Owner) {
			var e *entry
			e, routes = s.installSession(*moved)
			e.epoch = epoch // this connect's: a stale kick of an earlier one leaves it
			s.armExpiry(c.id, e, moved.Disconnected)
			s.saveSession(e)
			installed = true
		}
		return false, code, why
	}
	e := s.sessions[c.id]
	if e != nil && e.moving && moved == nil && !clean {
		// Handed to another node by a move whose answer was late or lost, and no node
		// had it for this connect: it comes back here (Unmove, or the move timeout)
		// before the client may continue it.
		refused = true
		s.stats.clusterErrors.Add(1)
		s.log.Info("connect refused: the client ID's session is still moving between nodes", "client", c.id, "remote", c.addr)
		return false, packet.ServerBusy, "this client ID's session is moving between nodes; try again"
	}
	var kept []topic.Subscription // the moving copy's subscriptions left in the trie
	if e != nil && e.moving {     // handed away meanwhile: the cluster's copy wins
		stopTimer(e.moveTimer)
		delete(s.sessions, c.id)
		localExtra = e.sess.Drain() // what it queued since: merged into the cluster's copy
		// A subscription the moved copy has too stays in the trie (installSession
		// updates it): removed and added again, its route would flap at the peers,
		// and a message published in between would find no subscriber.
		var keep map[string]topic.Subscription
		if moved != nil && !clean {
			keep = moved.Subscriptions
		}
		for key, sub := range e.sess.SubscriptionsByKey() {
			if k, ok := keep[key]; ok && k.ShareGroup == sub.ShareGroup && k.Filter == sub.Filter {
				kept = append(kept, sub)
				continue
			}
			routes = max(routes, s.removeSub(c.id, sub.ShareGroup, sub.Filter))
		}
		e = nil
	}
	foreign := false // the session holds another user's copy's messages: rechecked below
	if e != nil && moved != nil && !clean && (e.client == nil || e.client.sessionExpiry != 0) {
		// Two copies (a node was out of reach, or an answer lost): this node's
		// continues and the other's messages are queued after it, each once; what its
		// old node queued meanwhile follows (Finish). (A local copy that ends with its
		// connection, expiry 0, takes nothing: known limits in docs/clustering.md.)
		mergeCopy(e.sess, &session.Snapshot{Queue: s.readable(c.id, e, moved.Queue)})
		installed = true
		foreign = moved.Owner != e.sess.Owner()
	}
	if e == nil && moved != nil && !clean {
		var r uint64
		e, r = s.installSession(*moved)
		routes = max(routes, r)
		installed = true
		// One the rules in force here refused at the install goes after all.
		now := map[Route]bool{}
		for _, sub := range e.sess.Subscriptions() {
			now[Route{Group: sub.ShareGroup, Filter: sub.Filter}] = true
		}
		for _, sub := range kept {
			if !now[Route{Group: sub.ShareGroup, Filter: sub.Filter}] {
				routes = max(routes, s.removeSub(c.id, sub.ShareGroup, sub.Filter))
			}
		}
	}
	if e != nil {
		ends := clean // the session ends here rather than continuing on c
		if old := e.client; old != nil {
			e.client = nil
			old.takenOver.Store(true)
			e.sess.Detach(old.gen)
			// A session with expiry 0 (MQTT 3.1.1 Clean Session 1, MQTT 5 Session Expiry
			// 0) ends when its network connection closes, which this takeover does: it is
			// never resumed, whether or not the old connection's DISCONNECT was read
			// before this CONNECT (the same rule as a takeover from another node, Kick).
			ends = ends || old.sessionExpiry == 0
			// The old connection ends without DISCONNECT: its will goes out now unless
			// it is delayed and the session continues (MQTT-3.1.3-9).
			if old.willDelay == 0 || ends {
				wills = append(wills, old.pendingWill())
			}
			old.shutdown(packet.SessionTakenOver, "another connection took over the session")
			s.log.Info("session taken over", "client", c.id, "old", old.addr, "new", c.addr)
		}
		stopTimer(e.expiryTimer)
		stopTimer(e.willTimer)
		if e.will != nil && ends {
			wills = append(wills, s.dueWill(e)) // the session ends: a delayed will is due
		}
		e.will = nil
		if ends {
			routes = max(routes, s.dropSession(c.id, e))
			e = nil
		}
	}
	present = e != nil
	if e == nil {
		e = &entry{sess: session.New(c.id, s.sessionLimits())}
		s.sessions[c.id] = e
	}
	if e.sess.Owner() != claim.Owner || foreign {
		// A session changing hands (owner unknown or anonymous, or ownership off):
		// it keeps only the subscriptions and messages its new user may read.
		_, r := s.recheckEntry(c.id, e, c.principal, true)
		routes = max(routes, r)
		e.sess.SetOwner(claim.Owner)
	}
	e.client = c
	c.entry = e
	if epoch == 0 && s.clusterOf() != nil {
		// Not ordered by the cluster (a node before its first membership check, or a
		// takeover that failed): stamped with the clock the owners use, so a stale
		// kick of an earlier connect does not take it for older.
		epoch = uint64(time.Now().UnixNano())
	}
	e.epoch = epoch
	c.sess = e.sess
	c.gen = e.sess.Attach(c.notify, c.window)
	return present, packet.Success, ""
}

// ownershipRefusal refuses a connect whose client ID has a session here that belongs
// to another user (checked again under the lock in attach).
func (s *Server) ownershipRefusal(id string, claim Claim) (packet.Code, string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ownershipRefusalLocked(id, claim)
}

func (s *Server) ownershipRefusalLocked(id string, claim Claim) (packet.Code, string) {
	e := s.sessions[id]
	if e == nil || claim.Allows(e.sess.Owner()) { // a moving session still knows its owner
		return packet.Success, ""
	}
	s.opts.Auth.CountClientIDRefused()
	s.log.Info("connect refused: the client ID's session belongs to another user", "client", id, "claimedBy", claim.Owner)
	return packet.NotAuthorized, "this client ID belongs to another user"
}

// publishWills publishes wills collected under the lock; nil ones (refused by the
// ACL) are skipped.
func (s *Server) publishWills(wills []*session.Message) {
	for _, w := range wills {
		if w != nil {
			s.publish(w)
		}
	}
}

// refusal says why a new connection is refused now (packet.Success: it is not).
func (s *Server) refusal() (packet.Code, string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.refusalLocked()
}

func (s *Server) refusalLocked() (packet.Code, string) {
	switch {
	case s.closing:
		return packet.ServerUnavailable, "the server is shutting down"
	case s.draining:
		return packet.UseAnotherServer, "this node is being evacuated: connect to another node"
	}
	return packet.Success, ""
}

// disconnected runs after a connection ended: it publishes or schedules the will and
// ends or keeps the session according to its expiry interval.
func (s *Server) disconnected(c *client) {
	var wills []*session.Message
	defer func() { s.publishWills(wills) }()
	var routes uint64
	defer func() { s.flushRoutes(routes) }() // a session that ends takes its routes along
	s.mu.Lock()
	defer s.mu.Unlock()
	e := c.entry
	if e == nil || e.client != c {
		return // taken over: the new connection owns the session now
	}
	e.client = nil
	e.sess.Detach(c.gen)
	expiry := c.sessionExpiry
	if w := c.pendingWill(); w != nil && !s.closing {
		if c.willDelay > 0 && expiry > 0 {
			e.will, e.willBy = w, c.principal
			delay := time.Duration(min(c.willDelay, expiry)) * time.Second
			e.willTimer = time.AfterFunc(delay, func() { s.fireWill(c.id, e, w) })
		} else {
			wills = append(wills, w)
		}
	}
	if expiry == 0 {
		routes = s.dropSession(c.id, e)
		if e.will != nil {
			stopTimer(e.willTimer)
			wills = append(wills, s.dueWill(e))
			e.will = nil
		}
		return
	}
	e.expiry = expiry
	e.disconnected = time.Now()
	s.armExpiry(c.id, e, e.disconnected)
	s.saveSession(e)
}

// saveSession writes a detached persistent session to the store, replacing what it
// held, and waits for it. Lock held on entry.
func (s *Server) saveSession(e *entry) {
	var c *store.Commit
	e.sess.StoreSnapshot(func(snap session.Snapshot) {
		snap.Expiry = e.expiry
		snap.Disconnected = e.disconnected
		c = s.opts.Store.WriteSession(snap)
	})
	if err := c.Wait(); err != nil {
		e.storeStale.Store(true)
		s.stats.storeErrors.Add(1)
		s.log.Error("saving session failed", "client", e.sess.ID, "error", err)
		return
	}
	e.storeStale.Store(false)
}

// fireWill publishes a delayed will unless the client came back or it was replaced.
func (s *Server) fireWill(id string, e *entry, w *session.Message) {
	s.mu.Lock()
	due := s.sessions[id] == e && e.will == w
	if due {
		w = s.dueWill(e)
		e.will = nil
	}
	s.mu.Unlock()
	if due && w != nil {
		s.publish(w)
	}
}

// armExpiry starts the expiry timer of a detached session. Lock held on entry.
func (s *Server) armExpiry(id string, e *entry, since time.Time) {
	if e.expiry == ExpiryNever {
		return
	}
	left := time.Duration(e.expiry)*time.Second - time.Since(since)
	e.expiryTimer = time.AfterFunc(max(left, 0), func() { s.expire(id, e) })
}

// expire ends a session whose expiry interval passed while it was offline.
func (s *Server) expire(id string, e *entry) {
	s.mu.Lock()
	if s.sessions[id] != e || e.client != nil {
		s.mu.Unlock()
		return
	}
	routes := s.dropSession(id, e)
	var w *session.Message
	if e.will != nil {
		w = s.dueWill(e)
	}
	e.will = nil
	stopTimer(e.willTimer)
	s.mu.Unlock()
	s.flushRoutes(routes)
	s.log.Debug("session expired", "client", id)
	if w != nil {
		s.publish(w)
	}
}

// dropSession removes a session and its subscriptions; routes is the last route change
// it queued (see flushRoutes). Lock held on entry.
func (s *Server) dropSession(id string, e *entry) (routes uint64) {
	delete(s.sessions, id)
	for _, sub := range e.sess.Subscriptions() {
		routes = max(routes, s.removeSub(id, sub.ShareGroup, sub.Filter))
	}
	if err := s.opts.Store.DeleteSession(id); err != nil {
		s.stats.storeErrors.Add(1)
		s.log.Error("deleting session failed", "client", id, "error", err)
	}
	return routes
}
