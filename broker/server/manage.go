package server

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// This file is the node-local half of the management API (GET /api/v1/clients and
// the like): what this node holds, in the contract's types. The API asks every node of
// the cluster and merges the answers.

// MaxPayload is the largest payload Publish takes (the maximum packet size).
func (s *Server) MaxPayload() int { return int(s.opts.MaxPacketSize) }

// ErrBadPublish is a management publish with an invalid topic, QoS or payload.
var ErrBadPublish = errors.New("invalid publish")

// ErrNotReplicated is a retained change the cluster could not replicate (no raft
// majority): nothing was changed.
var ErrNotReplicated = errors.New("the cluster could not replicate the retained change to a majority")

// sessionView is what LocalClients needs of one entry, copied under Server.mu so the
// sessions are described after it is released (their own locks only).
type sessionView struct {
	id           string
	sess         *session.Session
	client       *client // nil: disconnected
	expiry       uint32  // the entry's (disconnected) or the client's session expiry interval
	disconnected time.Time
}

// views copies the entries that match keep (nil: all), except those handed to another
// node and not yet released there (the other node's). Server.mu is held only while
// copying.
func (s *Server) views(keep func(id string) bool) []sessionView {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []sessionView
	if keep == nil {
		out = make([]sessionView, 0, len(s.sessions))
	}
	for id, e := range s.sessions {
		if e.moving || (keep != nil && !keep(id)) {
			continue
		}
		v := sessionView{id: id, sess: e.sess, client: e.client, expiry: e.expiry, disconnected: e.disconnected}
		if e.client != nil {
			v.expiry = e.client.sessionExpiry // guarded by s.mu (a DISCONNECT may change it)
		}
		out = append(out, v)
	}
	return out
}

// LocalClients returns the sessions on this node whose client ID keep accepts (nil:
// all) — connected clients and the sessions kept for absent ones — with Node empty,
// sorted by client ID. A session handed to another node and not yet released there is
// the other node's and left out.
func (s *Server) LocalClients(keep func(id string) bool) []apiv1.Client {
	views := s.views(keep)
	out := make([]apiv1.Client, 0, len(views))
	for _, v := range views {
		out = append(out, clientOf(v))
	}
	slices.SortFunc(out, func(a, b apiv1.Client) int { return cmp.Compare(a.ClientID, b.ClientID) })
	return out
}

// LocalClient returns the session id on this node and its subscriptions (Node empty).
func (s *Server) LocalClient(id string) (apiv1.ClientDetail, bool) {
	s.mu.RLock()
	e := s.sessions[id]
	if e == nil || e.moving {
		s.mu.RUnlock()
		return apiv1.ClientDetail{}, false
	}
	v := sessionView{id: id, sess: e.sess, client: e.client, expiry: e.expiry, disconnected: e.disconnected}
	if e.client != nil {
		v.expiry = e.client.sessionExpiry
	}
	s.mu.RUnlock()
	return apiv1.ClientDetail{Client: clientOf(v), SubscriptionList: subscriptionsOf(id, v.sess)}, true
}

// clientOf describes one session (its fields are immutable once connected, or read
// under the session's own lock).
func clientOf(v sessionView) apiv1.Client {
	queued, inflight := v.sess.Pending()
	owner := v.sess.Owner()
	if owner == session.OwnerAnonymous {
		owner = ""
	}
	cl := apiv1.Client{ClientID: v.id, Username: owner, ExpiryInterval: v.expiry,
		Subscriptions: v.sess.SubscriptionCount(), Queued: queued, Inflight: inflight, Dropped: v.sess.Dropped()}
	if c := v.client; c != nil { // fields set before the client attached, never changed
		cl.Connected, cl.Username, cl.Remote, cl.Listener = true, c.principal.Username, c.addr, c.listener
		cl.ProtocolVersion, cl.TLSVersion, cl.ConnectedAt = c.version, tlsVersionOf(c), c.connectedAt.UTC().Format(time.RFC3339)
	} else if !v.disconnected.IsZero() {
		cl.DisconnectedAt = v.disconnected.UTC().Format(time.RFC3339)
	}
	return cl
}

// subscriptionsOf lists a session's subscriptions (Node empty), sorted by topic.
func subscriptionsOf(id string, sess *session.Session) []apiv1.Subscription {
	subs := sess.Subscriptions()
	out := make([]apiv1.Subscription, 0, len(subs))
	for _, sub := range subs {
		out = append(out, subscriptionOf(id, sub))
	}
	slices.SortFunc(out, func(a, b apiv1.Subscription) int { return cmp.Compare(a.Topic, b.Topic) })
	return out
}

func subscriptionOf(id string, sub topic.Subscription) apiv1.Subscription {
	t := sub.Filter
	if sub.ShareGroup != "" {
		t = "$share/" + sub.ShareGroup + "/" + sub.Filter
	}
	return apiv1.Subscription{ClientID: id, Topic: t, QoS: sub.QoS, NoLocal: sub.NoLocal,
		RetainAsPublished: sub.RetainAsPublished, RetainHandling: sub.RetainHandling, Identifier: sub.Identifier}
}

// LocalSubscriptions returns the subscriptions of the sessions on this node (Node
// empty), sorted by client ID and topic.
func (s *Server) LocalSubscriptions() []apiv1.Subscription {
	var out []apiv1.Subscription
	for _, v := range s.views(nil) {
		out = append(out, subscriptionsOf(v.id, v.sess)...)
	}
	slices.SortFunc(out, func(a, b apiv1.Subscription) int {
		return cmp.Or(cmp.Compare(a.ClientID, b.ClientID), cmp.Compare(a.Topic, b.Topic))
	})
	return out
}

// Routes returns the topic filters this node routes: its own sessions' (under self)
// and those its peers told it of, with the nodes that have them, sorted by topic.
func (s *Server) Routes(self string) []apiv1.Route {
	nodes := map[string][]string{}
	name := func(r Route) string {
		if r.Group != "" {
			return "$share/" + r.Group + "/" + r.Filter
		}
		return r.Filter
	}
	s.routesMu.Lock()
	for r, n := range s.routeRefs {
		if n > 0 {
			nodes[name(r)] = append(nodes[name(r)], self)
		}
	}
	s.routesMu.Unlock()
	s.remoteMu.Lock()
	for peer, rs := range s.remote {
		for r := range rs {
			nodes[name(r)] = append(nodes[name(r)], peer)
		}
	}
	s.remoteMu.Unlock()
	out := make([]apiv1.Route, 0, len(nodes))
	for t, ns := range nodes {
		slices.Sort(ns)
		out = append(out, apiv1.Route{Topic: t, Nodes: slices.Compact(ns)})
	}
	slices.SortFunc(out, func(a, b apiv1.Route) int { return cmp.Compare(a.Topic, b.Topic) })
	return out
}

// KickClient closes the connection of client id on this node with reason 0x98
// (administrative action); its session stays or ends as its expiry interval says.
// It reports whether the client was connected here.
func (s *Server) KickClient(id string) bool {
	s.mu.RLock()
	e := s.sessions[id]
	var c *client
	if e != nil && !e.moving {
		c = e.client
	}
	s.mu.RUnlock()
	if c == nil {
		return false
	}
	s.log.Info("client disconnected by an administrator", "client", id)
	c.shutdown(packet.AdministrativeAction, "disconnected by an administrator")
	return true
}

// Retained returns the retained message on topic ($SYS topics included).
func (s *Server) Retained(topic string) (*session.Message, bool) {
	s.retainedMu.RLock()
	defer s.retainedMu.RUnlock()
	m, ok := s.retained[topic]
	return m, ok
}

// DeleteRetained removes the retained message on topic, on every node of the cluster
// (replicated like a retained publish with an empty payload, without delivering
// anything). It reports whether there was one; ErrNotReplicated when the cluster
// could not replicate the change.
func (s *Server) DeleteRetained(topic string) (bool, error) {
	if _, ok := s.Retained(topic); !ok {
		return false, nil
	}
	if s.retain(&session.Message{Topic: topic, Retain: true}) != packet.Success {
		return true, ErrNotReplicated
	}
	return true, nil
}

// Publish publishes msg as the broker (an administrator's message: no ACL applies)
// to every matching subscriber of the cluster and returns how many got it, once the
// other nodes acknowledged. Topics starting with '$' or over the topic limits are
// refused (ErrBadPublish), as is a retained message the cluster could not replicate
// (ErrNotReplicated: neither stored nor delivered). A retained message over the
// retained limits is delivered, not stored: notRetained says why.
func (s *Server) Publish(msg *session.Message) (n int, notRetained string, err error) {
	switch {
	case !topic.ValidTopicName(msg.Topic):
		return 0, "", fmt.Errorf("%w: %q is not a valid topic name", ErrBadPublish, msg.Topic)
	case strings.HasPrefix(msg.Topic, "$"):
		return 0, "", fmt.Errorf("%w: topics starting with '$' are the broker's", ErrBadPublish)
	case msg.QoS > 2:
		return 0, "", fmt.Errorf("%w: QoS %d", ErrBadPublish, msg.QoS)
	case len(msg.Payload) > int(s.opts.MaxPacketSize):
		return 0, "", fmt.Errorf("%w: the payload is larger than the maximum packet size (%d bytes)", ErrBadPublish, s.opts.MaxPacketSize)
	case s.opts.MaxTopicLength > 0 && len(msg.Topic) > s.opts.MaxTopicLength:
		return 0, "", fmt.Errorf("%w: the topic is longer than %d bytes", ErrBadPublish, s.opts.MaxTopicLength)
	case s.opts.MaxTopicLevels > 0 && strings.Count(msg.Topic, "/")+1 > s.opts.MaxTopicLevels:
		return 0, "", fmt.Errorf("%w: the topic is deeper than %d levels", ErrBadPublish, s.opts.MaxTopicLevels)
	}
	msg.Publisher = ""
	s.stats.msgsIn.Add(1)
	n, wait, retained := s.publishAsync(msg, false)
	switch retained {
	case packet.UnspecifiedError:
		return 0, "", ErrNotReplicated
	case packet.QuotaExceeded:
		notRetained = "the retained message limits refuse it: delivered, not retained"
	}
	if wait != nil {
		n += wait()
	}
	return n, notRetained, nil
}
