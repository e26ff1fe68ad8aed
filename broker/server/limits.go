package server

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/mqtt-operator/mqtt-operator/broker/internal/lockorder"
	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// Abuse limits: what one client, or all of them together, may take from a node. Each
// limit is a small check over an observed input that returns a reason code; the
// caller acts on it. Every refusal is counted by limit (Stats().Limits, the
// mqttd_limit_refusals_total and mqttd_limit_throttles_total metrics) and logged: at
// info level at most once per limit every logEvery, at debug level otherwise, so a
// flood of refusals cannot flood the log.

// Limit names one abuse limit in counters, metrics and logs.
type Limit int

// The limits, in the order Stats reports them.
const (
	LimitConnections            Limit = iota // node: Options.MaxConnections
	LimitConnectionsPerListener              // per listener: Options.MaxConnectionsPerListener
	LimitConnectionRate                      // per listener: Options.ConnectionRate (throttle)
	LimitQueuedMessages                      // per session: Options.MaxQueued
	LimitQueuedBytes                         // per session: Options.MaxQueuedBytes
	LimitRetainedMessages                    // node: Options.MaxRetained
	LimitRetainedBytes                       // node: Options.MaxRetainedBytes
	LimitSubscriptions                       // per client: Options.MaxSubscriptions
	LimitTopicLength                         // Options.MaxTopicLength
	LimitTopicLevels                         // Options.MaxTopicLevels
	LimitPublishRate                         // per client: Options.PublishRate (throttle)
	LimitPublishByteRate                     // per client: Options.PublishByteRate (throttle)
	numLimits
)

var limitNames = [numLimits]string{"connections", "connections_per_listener", "connection_rate",
	"queued_messages", "queued_bytes", "retained_messages", "retained_bytes", "subscriptions",
	"topic_length", "topic_levels", "publish_rate", "publish_byte_rate"}

// String is the limit's name as metrics label it.
func (l Limit) String() string { return limitNames[l] }

// Throttle reports whether the limit slows a client down instead of refusing it.
func (l Limit) Throttle() bool {
	return l == LimitConnectionRate || l == LimitPublishRate || l == LimitPublishByteRate
}

// LimitCount is how often one limit refused something or made a client wait.
type LimitCount struct {
	Limit Limit
	Count uint64
}

// limitCounters count the events of every limit (atomics: counted on the hot path).
type limitCounters struct {
	events [numLimits]atomic.Uint64
	drops  session.Drops      // the sessions' queue drops, by limit
	logged [numLimits]logGate // each limit's refusals: info level at most every logEvery
}

// logEvery is how often each limit's refusals are logged at info level.
const logEvery = 10 * time.Second

// logGate lets one event through at info level every logEvery; the others are
// logged at debug level.
type logGate struct{ last atomic.Int64 }

func (g *logGate) level() slog.Level {
	now := time.Now().UnixNano()
	last := g.last.Load()
	if now-last >= int64(logEvery) && g.last.CompareAndSwap(last, now) {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// count counts one event of limit l and returns the level to log it at.
func (lc *limitCounters) count(l Limit) slog.Level {
	lc.events[l].Add(1)
	return lc.logged[l].level()
}

func (lc *limitCounters) snapshot() []LimitCount {
	out := make([]LimitCount, numLimits)
	for i := range out {
		out[i] = LimitCount{Limit: Limit(i), Count: lc.events[i].Load()}
	}
	out[LimitQueuedMessages].Count += lc.drops.Messages.Load()
	out[LimitQueuedBytes].Count += lc.drops.Bytes.Load()
	return out
}

// hit counts one event of limit l caused by this connection and logs it.
func (c *client) hit(l Limit, why string, args ...any) {
	level := c.s.limits.count(l)
	if !c.s.log.Enabled(context.Background(), level) {
		return
	}
	args = append(args, "client", c.id, "remote", c.addr, "listener", c.listener, "limit", l.String(), "detail", why)
	c.s.log.Log(context.Background(), level, "client over a limit", args...)
}

// refuseOverLimit answers a CONNECT that admit refused (logged by hit, not again).
func (c *client) refuseOverLimit(code packet.Code, why string) {
	ack := packet.Packet{Type: packet.Connack, ReasonCode: code}
	c.explain(&ack, why)
	if c.version != packet.V5 {
		ack.ReasonCode = packet.Code(packet.ConnackV3(code))
	}
	c.writeNow(ack.Encode(nil, c.version))
}

// admission holds the connection counts the connection caps are checked against. A
// slot is reserved when CONNECT arrives and released when the connection ends; the
// reservation is a compare-and-swap, so racing CONNECTs never overshoot a cap.
type admission struct {
	node atomic.Int64

	mu        lockorder.Mutex // leaf lock: guards listeners
	listeners map[string]*listenerState
}

// listenerState is one named listener's connection count and accept throttle.
type listenerState struct {
	connected atomic.Int64
	accept    *rate.Limiter // nil: no connection rate limit
}

// listener returns the state of the listener called name, created on first use.
func (s *Server) listener(name string) *listenerState {
	a := &s.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.listeners == nil {
		a.listeners = make(map[string]*listenerState)
	}
	ls := a.listeners[name]
	if ls == nil {
		ls = &listenerState{}
		if s.opts.ConnectionRate > 0 {
			ls.accept = rate.NewLimiter(rate.Limit(s.opts.ConnectionRate), max(s.opts.ConnectionBurst, 1))
		}
		a.listeners[name] = ls
	}
	return ls
}

// reserve takes a slot under limit (0: no limit) and reports whether it got one.
func reserve(n *atomic.Int64, limit int) bool {
	for {
		v := n.Load()
		if limit > 0 && v >= int64(limit) {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// admit checks a CONNECT against the connection caps and the will topic against the
// topic limits, before anything costly (authentication, takeover) runs. It reserves
// the connection's slots; release gives them back. Over a cap the client gets
// CONNACK 0x97 Quota exceeded: the caps are administrative limits (MQTT 5.0 section
// 3.2.2.2); 0x89 Server busy stays for transient refusals. MQTT 3.1.1 clients get
// 0x03 Server unavailable, the only return code that fits.
func (c *client) admit(p *packet.Packet) (packet.Code, string) {
	s := c.s
	if !reserve(&s.admission.node, s.opts.MaxConnections) {
		c.hit(LimitConnections, "connection limit of the node reached", "max", s.opts.MaxConnections)
		return packet.QuotaExceeded, "connection limit reached"
	}
	ls := s.listener(c.listener)
	if !reserve(&ls.connected, s.opts.MaxConnectionsPerListener) {
		s.admission.node.Add(-1)
		c.hit(LimitConnectionsPerListener, "connection limit of the listener reached", "max", s.opts.MaxConnectionsPerListener)
		return packet.QuotaExceeded, "connection limit of this listener reached"
	}
	c.admitted = ls
	if p.Connect.WillFlag {
		if code, why := c.checkTopic(p.Connect.WillTopic, "will topic"); code != packet.Success {
			return packet.TopicNameInvalid, why
		}
	}
	return packet.Success, ""
}

// release gives back the slots admit reserved.
func (c *client) release() {
	if c.admitted != nil {
		c.admitted.connected.Add(-1)
		c.s.admission.node.Add(-1)
		c.admitted = nil
	}
}

// checkTopic checks a topic name or filter against the length and level limits. A
// topic over them is well formed but not accepted: TopicNameInvalid (0x90) for names,
// which the caller turns into TopicFilterInvalid (0x8F) for filters.
func (c *client) checkTopic(t, what string) (packet.Code, string) {
	s := c.s
	if m := s.opts.MaxTopicLength; m > 0 && len(t) > m {
		why := what + " longer than " + strconv.Itoa(m) + " bytes"
		c.hit(LimitTopicLength, why, "length", len(t))
		return packet.TopicNameInvalid, why
	}
	if m := s.opts.MaxTopicLevels; m > 0 && strings.Count(t, "/")+1 > m {
		why := what + " deeper than " + strconv.Itoa(m) + " levels"
		c.hit(LimitTopicLevels, why, "levels", strings.Count(t, "/")+1)
		return packet.TopicNameInvalid, why
	}
	return packet.Success, ""
}

// checkPublishTopic refuses a PUBLISH whose topic is over the topic limits: MQTT 5
// QoS 1/2 publishers get PUBACK/PUBREC 0x90 Topic Name invalid ("correctly formed,
// but not accepted by this Server"), and the connection stays; QoS 0 and MQTT 3.1.1
// messages are acknowledged as usual and dropped (MQTT-3.3.5-2 lets a 3.1.1 server
// acknowledge what it does not route), counted and logged. It reports whether the
// message was refused (and answered).
func (c *client) checkPublishTopic(p *packet.Packet) (refused bool) {
	code, why := c.checkTopic(p.Topic, "topic")
	if code == packet.Success {
		return false
	}
	c.ackPublish(p, code, true, why)
	return true
}

// checkSubscription decides one subscription of a SUBSCRIBE against the topic limits
// (the filter as subscribed, without $share/group/) and the subscription cap: key is
// the filter as subscribed, the session's key for it. A subscription that replaces an
// existing one never counts against the cap. Refusals are SUBACK codes: 0x8F Topic
// Filter invalid for the topic limits, 0x97 Quota exceeded for the cap; MQTT 3.1.1
// has only 0x80 Failure for both.
func (c *client) checkSubscription(key, filter string) packet.Code {
	code, _ := c.checkTopic(filter, "topic filter")
	if code == packet.Success {
		if m := c.s.opts.MaxSubscriptions; m > 0 && !c.sess.MaySubscribe(key, m) {
			c.hit(LimitSubscriptions, "subscription limit reached", "max", m, "filter", key)
			code = packet.QuotaExceeded
		}
	} else {
		code = packet.TopicFilterInvalid
	}
	if code != packet.Success && c.version != packet.V5 {
		code = packet.UnspecifiedError
	}
	return code
}

// retainedSize is what a retained message counts against MaxRetainedBytes.
func retainedSize(m *session.Message) int { return len(m.Topic) + len(m.Payload) }

// admitRetained decides whether msg may be stored as a retained message: clearing a
// topic always may; a new topic must fit under MaxRetained and MaxRetainedBytes, a
// replacement under MaxRetainedBytes. $SYS topics are the broker's own, never
// refused. In a cluster this runs on the publishing node against its replica of the
// retained set before the message enters the raft log, so the limits also bound the
// log and its snapshots; publishers on several nodes racing for the last room can
// overshoot by the messages in flight (the log, once committed, is applied as is on
// every node so that the replicas never diverge).
func (s *Server) admitRetained(msg *session.Message) (Limit, bool) {
	if len(msg.Payload) == 0 || strings.HasPrefix(msg.Topic, "$SYS/") || (s.opts.MaxRetained <= 0 && s.opts.MaxRetainedBytes <= 0) {
		return 0, true
	}
	s.retainedMu.RLock()
	defer s.retainedMu.RUnlock()
	old, replaces := s.retained[msg.Topic]
	if m := s.opts.MaxRetained; m > 0 && !replaces && len(s.retained) >= m {
		return LimitRetainedMessages, false
	}
	if m := s.opts.MaxRetainedBytes; m > 0 {
		bytes := s.retainedBytes + retainedSize(msg)
		if replaces {
			bytes -= retainedSize(old)
		}
		if bytes > m {
			return LimitRetainedBytes, false
		}
	}
	return 0, true
}

// refuseRetained counts and logs a retained message the retained limits kept out.
func (s *Server) refuseRetained(msg *session.Message, l Limit) {
	s.log.Log(context.Background(), s.limits.count(l), "retained message not stored: over the node's retained limits",
		"topic", msg.Topic, "publisher", msg.Publisher, "limit", l.String(), "bytes", retainedSize(msg),
		"maxMessages", s.opts.MaxRetained, "maxBytes", s.opts.MaxRetainedBytes)
}
