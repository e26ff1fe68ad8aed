package server

import (
	"strings"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// handle processes one packet read after CONNECT. A returned error carrying a reason
// code closes the connection with that code.
func (c *client) handle(p *packet.Packet) error {
	switch p.Type {
	case packet.Publish:
		return c.handlePublish(p)
	case packet.Puback, packet.Pubcomp:
		c.sess.Acked(p.PacketID)
	case packet.Pubrec:
		c.handlePubrec(p)
	case packet.Pubrel:
		ack := packet.Packet{Type: packet.Pubcomp, PacketID: p.PacketID}
		if !c.sess.ReleaseInbound(p.PacketID) {
			ack.ReasonCode = packet.PacketIdentifierNotFound
			c.explain(&ack, "no QoS 2 message with this packet identifier awaits release")
		}
		c.send(ack)
	case packet.Subscribe:
		return c.handleSubscribe(p)
	case packet.Unsubscribe:
		c.handleUnsubscribe(p)
	case packet.Pingreq:
		c.send(packet.Packet{Type: packet.Pingresp})
	case packet.Disconnect:
		return c.handleDisconnect(p)
	case packet.Auth:
		return packet.Errorf(packet.ProtocolError, "AUTH without an authentication method")
	default:
		return packet.Errorf(packet.ProtocolError, "unexpected "+p.Type.String()+" from client")
	}
	return nil
}

func (c *client) handlePubrec(p *packet.Packet) {
	if p.ReasonCode.IsError() {
		c.sess.Acked(p.PacketID) // the receiver refused it: the flow ends here
		return
	}
	rel := packet.Packet{Type: packet.Pubrel, PacketID: p.PacketID}
	if !c.sess.Received(p.PacketID) {
		rel.ReasonCode = packet.PacketIdentifierNotFound
		c.explain(&rel, "no QoS 2 message with this packet identifier is in flight")
	}
	c.send(rel)
}

func (c *client) handleDisconnect(p *packet.Packet) error {
	// The session expiry and the will are written under Server.mu: a new connection
	// taking over the session reads them in attach (and another node's in Kick).
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.version == packet.V5 && p.Properties.Has(packet.PropSessionExpiry) {
		if c.sessionExpiry == 0 && p.Properties.SessionExpiry != 0 {
			return packet.Errorf(packet.ProtocolError, "session expiry changed from 0 at DISCONNECT")
		}
		c.sessionExpiry = p.Properties.SessionExpiry
		if m := c.s.opts.MaxSessionExpiry; m > 0 && c.sessionExpiry > m {
			c.sessionExpiry = m
		}
	}
	// Only DISCONNECT 0x04 keeps the will (MQTT-3.14.4-3).
	c.sendWill = c.version == packet.V5 && p.ReasonCode == packet.DisconnectWithWillMessage
	return errClientDisconnect
}

func (c *client) handlePublish(p *packet.Packet) error {
	s := c.s
	if c.version == packet.V5 {
		props := &p.Properties
		if props.Has(packet.PropSubscriptionIdentifier) {
			return packet.Errorf(packet.ProtocolError, "PUBLISH from a client carries a subscription identifier")
		}
		if props.Has(packet.PropTopicAlias) {
			a := props.TopicAlias
			if a > s.opts.TopicAliasMaximum {
				return packet.Errorf(packet.TopicAliasInvalid, "topic alias above the maximum")
			}
			if p.Topic == "" {
				t, ok := c.aliasIn[a]
				if !ok {
					return packet.Errorf(packet.ProtocolError, "unknown topic alias")
				}
				p.Topic = t
			} else {
				if c.aliasIn == nil {
					c.aliasIn = make(map[uint16]string)
				}
				c.aliasIn[a] = p.Topic
			}
		}
	}
	// A resent PUBLISH of a recorded ID (after reconnecting) is not a new message.
	if p.QoS == 2 && c.sess.InboundLen() >= int(s.opts.ReceiveMaximum) && !c.sess.HasInbound(p.PacketID) {
		return packet.Errorf(packet.ReceiveMaximumExceeded, "too many unreleased QoS 2 messages")
	}
	s.stats.msgsIn.Add(1)

	// $SYS is the broker's own namespace.
	if strings.HasPrefix(p.Topic, "$SYS") {
		c.ackPublish(p, packet.NotAuthorized, true, "clients may not publish to $SYS topics")
		return nil
	}
	if c.checkPublishTopic(p) { // over the topic length or level limits
		return nil
	}
	// Refused by the ACL: MQTT 5 gets 0x87; a 3.1.1 client's message is acknowledged
	// and dropped (3.1.1 has no way to say no), and counted either way.
	if !c.mayPublish(p.Topic) {
		c.ackPublish(p, packet.NotAuthorized, true, "not authorized to publish to this topic")
		return nil
	}
	msg := &session.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Publisher: c.id}
	if c.version == packet.V5 {
		msg.Properties = session.ForwardedProperties(&p.Properties)
		if p.Properties.Has(packet.PropMessageExpiry) {
			msg.Expiry = time.Now().Add(time.Duration(p.Properties.MessageExpiry) * time.Second)
		}
	}
	switch p.QoS {
	case 0:
		// Refused when its retained copy cannot be replicated: counted and logged.
		if _, wait, _ := s.publishAsync(msg, false); wait != nil {
			wait()
		}
	case 1:
		n, wait, retained := s.publishAsync(msg, false)
		if retained == packet.UnspecifiedError && c.version != packet.V5 {
			// 3.1.1 has no negative PUBACK: the connection closes without one, so the
			// client sends the message again after it reconnects.
			return packet.Errorf(packet.UnspecifiedError, retainedWhy(retained))
		}
		if wait == nil && c.acks == nil {
			c.ackPublish(p, publishCode(n, retained), true, retainedWhy(retained))
			break
		}
		c.queueAck(p.PacketID, n, wait, retained)
	case 2:
		first := c.sess.AddInbound(p.PacketID)
		n, retained := 1, packet.Success
		if first {
			var wait func() int
			if n, wait, retained = s.publishAsync(msg, false); wait != nil {
				n += wait()
			}
		}
		if retained == packet.UnspecifiedError && c.version != packet.V5 {
			c.sess.ReleaseInbound(p.PacketID) // not accepted: a resend is a new message
			return packet.Errorf(packet.UnspecifiedError, retainedWhy(retained))
		}
		c.ackPublish(p, publishCode(n, retained), first, retainedWhy(retained))
	}
	return nil
}

// publishCode is the PUBACK/PUBREC reason code of a message routed to n sessions:
// a failure when its retained copy could not be replicated (it was not delivered).
func publishCode(n int, retained packet.Code) packet.Code {
	if retained == packet.UnspecifiedError {
		return retained
	}
	return matchedCode(n)
}

// retainedWhy is the reason string of a PUBACK/PUBREC whose retained copy was not
// stored. Over the retained limits (QuotaExceeded) the code stays a success: the
// message was delivered, and a failure code would invite a resend (a duplicate, and no
// exactly-once for QoS 2). Not replicated (UnspecifiedError): nothing was delivered.
func retainedWhy(retained packet.Code) string {
	switch retained {
	case packet.Success:
		return ""
	case packet.UnspecifiedError:
		return "refused: the cluster has no majority to store the retained message; nothing was delivered, publish it again"
	}
	return "delivered but not retained: the broker's retained-message limits are reached"
}

// pendingAck is a QoS 1 PUBACK waiting for other nodes' acks.
type pendingAck struct {
	id       uint16
	local    int
	wait     func() int
	retained packet.Code
}

// queueAck sends a QoS 1 PUBACK once the message's forwards are acknowledged, after
// every earlier one (MQTT-4.6.0-2: PUBACKs in the order of the PUBLISHes). Once a
// connection has queued one, all its PUBACKs go through the queue. Called from the
// read loop only.
func (c *client) queueAck(id uint16, local int, wait func() int, retained packet.Code) {
	if c.acks == nil {
		c.acks = make(chan pendingAck, c.s.opts.ReceiveMaximum)
		go c.acker(c.acks)
	}
	c.acks <- pendingAck{id: id, local: local, wait: wait, retained: retained}
}

func (c *client) acker(acks <-chan pendingAck) {
	for a := range acks {
		n := a.local
		if a.wait != nil {
			n += a.wait()
		}
		c.ackPublish(&packet.Packet{QoS: 1, PacketID: a.id}, publishCode(n, a.retained), true, retainedWhy(a.retained))
	}
}

func matchedCode(n int) packet.Code {
	if n == 0 {
		return packet.NoMatchingSubscribers
	}
	return packet.Success
}

// ackPublish sends PUBACK or PUBREC for p with code and reason string why. A refused
// QoS 2 message is not recorded, so its PUBREL will get "packet identifier not found".
func (c *client) ackPublish(p *packet.Packet, code packet.Code, first bool, why string) {
	if p.QoS == 0 {
		return
	}
	t := packet.Puback
	if p.QoS == 2 {
		t = packet.Pubrec
		if code.IsError() && first {
			c.sess.ReleaseInbound(p.PacketID)
		}
	}
	if c.version != packet.V5 {
		code = packet.Success
	}
	ack := packet.Packet{Type: t, PacketID: p.PacketID, ReasonCode: code}
	c.explain(&ack, why)
	c.send(ack)
}

func (c *client) handleSubscribe(p *packet.Packet) error {
	ack, routes, err := c.subscribe(p)
	// New routes go to the cluster outside aclMu (a reload's re-check does not wait for
	// a slow link) and before SUBACK, as when they were sent under the lock: a client
	// that saw SUBACK publishes through another node to a peer that has its route
	// (the peer applies it asynchronously, as always).
	c.s.flushRoutes(routes)
	if err != nil {
		return err
	}
	c.sendReleasing(ack)
	return nil
}

// subscribe judges and applies a SUBSCRIBE and returns its SUBACK, which the caller
// queues with sendReleasing: the retained messages it queued are held until then. The
// ACL verdicts, the subscriptions and their retained messages happen under aclMu
// (read): a reload's re-check (write) sees all of them or none. routes is the last
// route change it queued (see flushRoutes).
func (c *client) subscribe(p *packet.Packet) (ack packet.Packet, routes uint64, err error) {
	s := c.s
	s.aclMu.RLock()
	defer s.aclMu.RUnlock()
	ack = packet.Packet{Type: packet.Suback, PacketID: p.PacketID, ReasonCodes: make([]packet.Code, len(p.Subscriptions))}
	var subID uint32
	if len(p.Properties.SubscriptionIdentifier) > 0 {
		subID = p.Properties.SubscriptionIdentifier[0]
	}
	type retainedReq struct {
		filter string
		sub    topic.Subscription
	}
	var wantRetained []retainedReq
	var invalid, denied []string
	var overLimit []string // over the topic or subscription limits
	for i, req := range p.Subscriptions {
		group, filter, shared, err := topic.ParseShared(req.Filter)
		if !shared {
			filter = req.Filter
		}
		if err != nil || !topic.ValidFilter(filter) {
			ack.ReasonCodes[i] = packet.TopicFilterInvalid
			invalid = append(invalid, req.Filter)
			if c.version != packet.V5 {
				ack.ReasonCodes[i] = packet.UnspecifiedError
			}
			continue
		}
		if shared && req.NoLocal {
			return ack, routes, packet.Errorf(packet.ProtocolError, "no local on a shared subscription")
		}
		if code := c.checkSubscription(req.Filter, filter); code != packet.Success {
			ack.ReasonCodes[i] = code
			overLimit = append(overLimit, req.Filter)
			continue
		}
		if !c.maySubscribe(filter) { // a shared subscription's filter without $share/group/
			ack.ReasonCodes[i] = c.notAuthorizedSuback()
			denied = append(denied, req.Filter)
			continue
		}
		sub := topic.Subscription{ClientID: c.id, Filter: filter, ShareGroup: group, QoS: req.QoS,
			NoLocal: req.NoLocal, RetainAsPublished: req.RetainAsPublished, RetainHandling: req.RetainHandling,
			Identifier: subID}
		existed := c.sess.Subscribe(req.Filter, sub)
		routes = max(routes, s.addSub(sub))
		ack.ReasonCodes[i] = packet.Code(req.QoS)
		if !shared && (req.RetainHandling == 0 || (req.RetainHandling == 1 && !existed)) {
			wantRetained = append(wantRetained, retainedReq{filter, sub})
		}
	}
	// Retained messages are queued before SUBACK: a message published once the client
	// saw SUBACK then reaches it once, live with RETAIN 0, instead of a second time as a
	// retained message (MQTT-3.3.1-9). The writer holds them back until SUBACK is queued
	// (sendReleasing), so SUBACK is written first (MQTT-3.8.4 would allow either).
	if len(wantRetained) > 0 {
		c.holdDeliveries()
	}
	for _, r := range wantRetained {
		s.deliverRetained(c.sess, r.filter, r.sub)
	}
	switch {
	case len(invalid) > 0:
		c.explain(&ack, "invalid topic filter: "+strings.Join(invalid, ", "))
	case len(overLimit) > 0:
		c.explain(&ack, "over the broker's topic or subscription limits: "+strings.Join(overLimit, ", "))
	case len(denied) > 0:
		c.explain(&ack, "not authorized: "+strings.Join(denied, ", "))
	}
	return ack, routes, nil
}

func (c *client) handleUnsubscribe(p *packet.Packet) {
	var routes uint64
	ack := packet.Packet{Type: packet.Unsuback, PacketID: p.PacketID, ReasonCodes: make([]packet.Code, len(p.Filters))}
	for i, f := range p.Filters {
		sub, ok := c.sess.Unsubscribe(f)
		if !ok {
			ack.ReasonCodes[i] = packet.NoSubscriptionExisted
			continue
		}
		routes = max(routes, c.s.removeSub(c.id, sub.ShareGroup, sub.Filter))
	}
	c.s.flushRoutes(routes) // before UNSUBACK, as when routes were sent under the lock
	c.send(ack)
}
