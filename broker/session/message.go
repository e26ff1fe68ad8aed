// Package session holds what the broker keeps per client between connections:
// subscriptions, the outbound queue, QoS 1/2 inflight state and inbound QoS 2 state.
// It knows nothing about sockets; the server attaches a connection to a session.
package session

import (
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// Message is an application message as it is routed inside the broker. It is shared by
// every session it is delivered to and must not be modified once published.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Properties carries the v5 properties forwarded to subscribers (payload format,
	// content type, response topic, correlation data, user properties). Message expiry
	// is kept in Expiry and written per delivery.
	Properties packet.Properties
	// Expiry is when the message expires; zero means never.
	Expiry time.Time
	// Publisher is the client ID of the sender ("" for the broker itself); used by no-local.
	Publisher string
	// ID tells copies of one message apart from other messages across the cluster
	// (zero: unknown, as in retained messages; never taken for another message).
	ID MessageID
}

// MessageID identifies a message cluster-wide: the process that first routed it
// (a random number drawn at its start) and a sequence number there.
type MessageID struct {
	Origin, Seq uint64
}

// IsZero reports whether the ID is unknown.
func (id MessageID) IsZero() bool { return id.Origin == 0 }

// Expired reports whether the message has expired at now.
func (m *Message) Expired(now time.Time) bool {
	return !m.Expiry.IsZero() && !now.Before(m.Expiry)
}

// RemainingExpiry returns the message expiry interval to send at now, in whole seconds
// rounded up, and whether the message has an expiry at all.
func (m *Message) RemainingExpiry(now time.Time) (uint32, bool) {
	if m.Expiry.IsZero() {
		return 0, false
	}
	d := m.Expiry.Sub(now)
	if d <= 0 {
		return 0, true
	}
	return uint32((d + time.Second - 1) / time.Second), true
}

// ForwardedProperties copies from the properties of a received PUBLISH the ones a
// subscriber receives unchanged (MQTT 5.0 section 3.3.2.3).
func ForwardedProperties(in *packet.Properties) packet.Properties {
	out := packet.Properties{
		PayloadFormat:   in.PayloadFormat,
		ContentType:     in.ContentType,
		ResponseTopic:   in.ResponseTopic,
		CorrelationData: in.CorrelationData,
		User:            in.User,
	}
	for _, id := range forwardedProps {
		if in.Has(id) {
			out.Set(id)
		}
	}
	return out
}

// forwardedProps are the properties a subscriber receives as the publisher sent them
// (user properties are a list: present when not empty).
var forwardedProps = []packet.PropID{packet.PropPayloadFormat, packet.PropContentType, packet.PropResponseTopic, packet.PropCorrelationData}

// Delivery is one message on its way to one session.
type Delivery struct {
	Msg    *Message
	QoS    byte     // min(message QoS, subscription QoS)
	Retain bool     // RETAIN flag as sent to this subscriber
	SubIDs []uint32 // subscription identifiers of the matching subscriptions
	// Shared: for one of the session's shared subscriptions; a session with a shared
	// and a plain subscription matching one message gets one delivery of each.
	Shared bool

	PacketID uint16
	Dup      bool
	// Released is set once the client's PUBREC arrived: the server now owes PUBREL.
	Released bool
	// StoreSeq numbers the delivery in its session's queue as a store keeps it (see
	// Session.StoreSnapshot and EnqueueStored): later deliveries have higher numbers.
	StoreSeq uint64
	// resend marks inflight deliveries to retransmit after a reconnect.
	resend bool
}

// size is what a queued delivery counts against Limits.MaxQueuedBytes: its payload.
func (d *Delivery) size() int { return len(d.Msg.Payload) }
