package server

import (
	"context"
	"errors"
	"strings"

	"github.com/mqtt-operator/mqtt-operator/broker/auth"
	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// ErrClientIDOwned refuses a connect whose client ID has a session of another user.
var ErrClientIDOwned = errors.New("the client ID's session belongs to another user")

// ErrSessionMoving refuses a connect while another move of its client ID's session
// between nodes is still running: the client tries again.
var ErrSessionMoving = errors.New("the client ID's session is moving between nodes")

// ErrTakeoverUnanswered refuses a connect whose client ID's owner did not answer the
// takeover: it may have moved the session meanwhile, so a new session here could
// leave the client's state behind. The client tries again.
var ErrTakeoverUnanswered = errors.New("the client ID's owner did not answer the takeover")

// ErrNoMajority refuses a connect on a node that reaches no majority of the cluster's
// voters (a partition's minority side): it cannot order connects with the rest of the
// cluster, so accepting would allow a second connection of the client ID on the
// majority side, and its messages could not reach the others. The client tries
// another node.
var ErrNoMajority = errors.New("this node reaches no majority of the cluster")

// Claim is a connect's claim on a client ID: the user it comes from (a username or
// session.OwnerAnonymous) and whether client IDs belong to their session's user.
type Claim struct {
	Owner string
	Check bool
}

// Allows reports whether the claim may take over a session owned by owner. A session
// whose owner is unknown (stored before owners were recorded) goes to the first client
// that claims it. So does an anonymous client's session: anyone may connect
// anonymously with its client ID anyway, and when anonymous clients are turned off
// later, their users must be able to take their sessions back.
func (c Claim) Allows(owner string) bool {
	return !c.Check || owner == "" || owner == session.OwnerAnonymous || owner == c.Owner
}

func ownerOf(p auth.Principal) string {
	if p.Anonymous {
		return session.OwnerAnonymous
	}
	return p.Username
}

// principalOf is the principal of a session's owner; false when the owner is unknown.
func principalOf(clientID, owner string) (auth.Principal, bool) {
	switch owner {
	case "":
		return auth.Principal{}, false
	case session.OwnerAnonymous:
		return auth.Principal{Anonymous: true, ClientID: clientID}, true
	}
	return auth.Principal{Username: owner, ClientID: clientID}, true
}

// claim is the client's claim on its client ID.
func (c *client) claim() Claim {
	a := c.s.opts.Auth
	return Claim{Owner: ownerOf(c.principal), Check: a != nil && a.OwnershipEnforced()}
}

// authenticate checks the CONNECT's credentials and the will's topic, and records who
// the client is. It returns the refusal's reason code, or packet.Success.
func (c *client) authenticate(cf *packet.ConnectFields) (packet.Code, string) {
	a := c.s.opts.Auth
	if a == nil {
		c.principal = auth.Principal{Anonymous: true, ClientID: c.id}
		if c.certUser != "" {
			c.principal = auth.Principal{Username: c.certUser, ClientID: c.id}
		}
		return packet.Success, ""
	}
	var (
		p   auth.Principal
		res auth.Result
	)
	if c.certUser != "" {
		// The listener took the username from a verified client certificate: it
		// replaces the CONNECT's username and password (as Mosquitto's
		// use_identity_as_username and EMQX's peer_cert_as_username do).
		p, res = a.AuthenticateCertificate(c.id, c.certUser)
	} else {
		p, res = a.Authenticate(c.id, cf.UsernameFlag, cf.Username, cf.PasswordFlag, cf.Password)
	}
	if res != auth.OK {
		// A flood of bad logins must not flood the log: info level at most every
		// logEvery, debug otherwise; the counters count every one.
		c.refuseLevel = c.s.authLog.level()
	}
	ctx := context.Background()
	switch res {
	case auth.BadCredentials:
		if c.certUser != "" {
			c.s.log.Log(ctx, c.refuseLevel, "authentication failed", "client", c.id, "username", c.certUser, "remote", c.addr, "reason", "the client certificate's username is reserved")
			return packet.BadUserNameOrPassword, "the client certificate's username may not start with $"
		}
		c.s.log.Log(ctx, c.refuseLevel, "authentication failed", "client", c.id, "username", cf.Username, "remote", c.addr, "reason", "bad username or password")
		return packet.BadUserNameOrPassword, "bad user name or password"
	case auth.Busy:
		c.s.log.Log(ctx, c.refuseLevel, "authentication postponed: every bcrypt slot is busy", "client", c.id, "remote", c.addr)
		return packet.ServerBusy, "too many logins at once: try again"
	case auth.AnonymousRefused:
		c.s.log.Log(ctx, c.refuseLevel, "authentication failed", "client", c.id, "remote", c.addr, "reason", "anonymous clients are not allowed")
		return packet.NotAuthorized, "anonymous clients are not allowed: connect with a username and password"
	}
	c.principal = p
	if cf.WillFlag && strings.HasPrefix(cf.WillTopic, "$SYS") {
		c.s.log.Info("will refused: $SYS is the broker's", "client", c.id, "username", p.Username, "remote", c.addr, "topic", cf.WillTopic)
		return packet.NotAuthorized, "a will may not be published to $SYS"
	}
	if cf.WillFlag && !a.CanWill(p, cf.WillTopic) {
		c.s.log.Info("will refused by the ACL", "client", c.id, "username", p.Username, "remote", c.addr, "topic", cf.WillTopic)
		return packet.NotAuthorized, "the will's topic is not allowed for this client"
	}
	return packet.Success, ""
}

// mayPublish applies the ACL to a PUBLISH; a refusal is logged once per connection
// at info level (then at debug: a client retrying in a loop must not flood the log).
func (c *client) mayPublish(topic string) bool {
	a := c.s.opts.Auth
	if a == nil || a.CanPublish(c.principal, topic) {
		return true
	}
	c.logDenied("publish denied by the ACL", topic)
	return false
}

// maySubscribe applies the ACL to one subscription's filter (for a shared
// subscription, the filter after "$share/group/").
func (c *client) maySubscribe(filter string) bool {
	a := c.s.opts.Auth
	if a == nil || a.CanSubscribe(c.principal, filter) {
		return true
	}
	c.logDenied("subscribe denied by the ACL", filter)
	return false
}

// notAuthorizedSuback is the SUBACK code of a refused filter: 0x87 in MQTT 5, 0x80
// (Failure) in 3.1.1.
func (c *client) notAuthorizedSuback() packet.Code {
	if c.version == packet.V5 {
		return packet.NotAuthorized
	}
	return packet.UnspecifiedError
}

func (c *client) logDenied(msg, topic string) {
	log := c.s.log.Debug
	if !c.deniedLogged {
		c.deniedLogged = true
		log = c.s.log.Info
	}
	log(msg, "client", c.id, "username", c.principal.Username, "remote", c.addr, "topic", topic)
}

// willAllowed re-checks the will when it is about to be published: the rules may have
// changed since CONNECT.
func (c *client) willAllowed(w *session.Message) bool {
	a := c.s.opts.Auth
	if a == nil || a.CanWill(c.principal, w.Topic) {
		return true
	}
	c.s.log.Info("will dropped: the ACL no longer allows its topic", "client", c.id, "username", c.principal.Username, "topic", w.Topic)
	return false
}

// dueWill is a session's pending delayed will, judged by the rules in force now; nil
// when they refuse it. Lock held on entry.
func (s *Server) dueWill(e *entry) *session.Message {
	a := s.opts.Auth
	if e.will == nil || a == nil || a.CanWill(e.willBy, e.will.Topic) {
		return e.will
	}
	s.log.Info("delayed will dropped: the ACL no longer allows its topic", "client", e.sess.ID, "username", e.willBy.Username, "topic", e.will.Topic)
	return nil
}

// recheckEntry applies the ACL in force to one session on behalf of p: it removes the
// subscriptions p may not have (from the trie too when routed) and the queued and
// inflight messages p may not read. routes is the last route change it queued (see
// flushRoutes). Lock held on entry.
func (s *Server) recheckEntry(id string, e *entry, p auth.Principal, routed bool) (revoked int, routes uint64) {
	a := s.opts.Auth
	if a == nil {
		return 0, 0
	}
	for key, sub := range e.sess.SubscriptionsByKey() {
		if a.StillAllowed(p, sub.Filter) {
			continue
		}
		e.sess.Unsubscribe(key)
		if routed {
			routes = max(routes, s.removeSub(id, sub.ShareGroup, sub.Filter))
		}
		revoked++
		s.log.Info("subscription revoked by the ACL", "client", id, "username", p.Username, "filter", key)
	}
	if n := e.sess.Prune(func(m *session.Message) bool { return a.MayRead(p, m.Topic) }); n > 0 {
		s.stats.dropped.Add(uint64(n))
		s.log.Info("queued messages dropped: the ACL does not let the session's user read them", "client", id, "username", p.Username, "messages", n)
		revoked++
	}
	return revoked, routes
}

// recheckSubscriptions applies the ACL in force to every session's subscriptions and
// removes the ones it no longer allows: after a reload, a client keeps its connection
// but loses what it may not read any more. Sessions whose owner is unknown are left
// until a client claims them.
func (s *Server) recheckSubscriptions() {
	a := s.opts.Auth
	if a == nil {
		return
	}
	var routes uint64
	// After both unlocks: a SUBSCRIBE and a connect do not wait for a slow link.
	defer func() { s.flushRoutes(routes) }()
	s.aclMu.Lock() // no SUBSCRIBE between its verdict and its subscription meanwhile
	defer s.aclMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.sessions {
		if e.moving {
			continue
		}
		p, ok := principalOf(id, e.sess.Owner())
		if !ok {
			continue
		}
		revoked, r := s.recheckEntry(id, e, p, true)
		routes = max(routes, r)
		if revoked > 0 && e.client == nil && e.expiry != 0 {
			s.saveSession(e)
		}
	}
}
