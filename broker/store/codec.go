package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
	"github.com/mqtt-operator/mqtt-operator/broker/topic"
)

// On-disk formats. A message is stored as the MQTT 5 PUBLISH packet that carries it
// (topic, payload, QoS, retain flag, forwarded properties), behind a small header
// with what a PUBLISH cannot say: the absolute expiry and the publisher. The codec
// is the broker's own, so a stored message is validated like one from the network.
const messageFormat byte = 1

var errFormat = errors.New("unknown record format")

func encodeMessage(m *session.Message) []byte {
	p := packet.Packet{Type: packet.Publish, Topic: m.Topic, Payload: m.Payload, QoS: m.QoS,
		Retain: m.Retain, Properties: m.Properties}
	if m.QoS > 0 {
		p.PacketID = 1 // required on the wire; meaningless here
	}
	var expiry int64
	if !m.Expiry.IsZero() {
		expiry = m.Expiry.UnixNano()
	}
	out := make([]byte, 0, 1+8+binary.MaxVarintLen64+len(m.Publisher)+p.Size(packet.V5))
	out = append(out, messageFormat)
	out = binary.BigEndian.AppendUint64(out, uint64(expiry))
	out = binary.AppendUvarint(out, uint64(len(m.Publisher)))
	out = append(out, m.Publisher...)
	return p.Encode(out, packet.V5)
}

// packetPool holds the packets decodeMessage decodes into (a Packet is about 800
// bytes; a forwarded or restored message needs one only for the moment).
var packetPool = sync.Pool{New: func() any { return new(packet.Packet) }}

func decodeMessage(b []byte) (*session.Message, error) {
	if len(b) < 9 || b[0] != messageFormat {
		return nil, errFormat
	}
	expiry := int64(binary.BigEndian.Uint64(b[1:9]))
	n, w := binary.Uvarint(b[9:])
	if w <= 0 || uint64(len(b)-9-w) < n {
		return nil, errors.New("truncated publisher")
	}
	rest := b[9+w:]
	publisher := string(rest[:n])
	raw := rest[n:]
	// The record is one whole packet: decode it in place, no reader around it.
	if len(raw) < 2 {
		return nil, errors.New("truncated packet")
	}
	remaining, w2, err := packet.DecodeVarint(raw[1:])
	if err != nil {
		return nil, err
	}
	// A copy: the decoded message keeps slices of it, and b may be a store iterator's
	// buffer that is reused.
	body := append([]byte(nil), raw[1+w2:]...)
	if uint64(len(body)) != uint64(remaining) {
		return nil, errors.New("bytes after the stored packet")
	}
	p, ok := packetPool.Get().(*packet.Packet)
	if !ok {
		p = new(packet.Packet)
	}
	defer func() {
		*p = packet.Packet{} // keeps nothing of this message
		packetPool.Put(p)
	}()
	// DecodeInto resets p: what the message takes from it (strings, slices) is this
	// decode's own, never shared with the pooled packet's next use.
	if err := packet.DecodeInto(p, packet.FixedHeader{Type: packet.Type(raw[0] >> 4), Flags: raw[0] & 0x0F, Remaining: int(remaining)}, body, packet.V5); err != nil {
		return nil, err
	}
	if p.Type != packet.Publish {
		return nil, fmt.Errorf("stored packet is a %s", p.Type)
	}
	m := &session.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain,
		Properties: p.Properties, Publisher: publisher}
	if expiry != 0 {
		m.Expiry = time.Unix(0, expiry).UTC()
	}
	return m, nil
}

// A queued delivery's record (Format 2): a version byte, QoS, flags, packet ID,
// the message ID, the subscription identifiers, then the message as encodeMessage
// writes it. The StoreSeq is in the key.
const deliveryFormat byte = 1

const (
	flagRetain byte = 1 << iota
	flagDup
	flagReleased
	flagShared
)

func encodeDelivery(d *session.Delivery) []byte {
	out := make([]byte, 0, 64+len(d.Msg.Payload)+len(d.Msg.Topic))
	var flags byte
	for _, f := range []struct {
		set bool
		bit byte
	}{{d.Retain, flagRetain}, {d.Dup, flagDup}, {d.Released, flagReleased}, {d.Shared, flagShared}} {
		if f.set {
			flags |= f.bit
		}
	}
	out = append(out, deliveryFormat, d.QoS, flags)
	out = binary.BigEndian.AppendUint16(out, d.PacketID)
	out = binary.AppendUvarint(out, d.Msg.ID.Origin)
	out = binary.AppendUvarint(out, d.Msg.ID.Seq)
	out = binary.AppendUvarint(out, uint64(len(d.SubIDs)))
	for _, id := range d.SubIDs {
		out = binary.AppendUvarint(out, uint64(id))
	}
	return append(out, encodeMessage(d.Msg)...)
}

func decodeDelivery(b []byte) (*session.Delivery, error) {
	if len(b) < 5 || b[0] != deliveryFormat {
		return nil, errFormat
	}
	d := &session.Delivery{QoS: b[1], PacketID: binary.BigEndian.Uint16(b[3:5])}
	if d.QoS > 2 {
		return nil, fmt.Errorf("QoS %d", d.QoS)
	}
	flags := b[2]
	d.Retain, d.Dup, d.Released, d.Shared = flags&flagRetain != 0, flags&flagDup != 0, flags&flagReleased != 0, flags&flagShared != 0
	b = b[5:]
	uvarint := func() (uint64, error) {
		v, w := binary.Uvarint(b)
		if w <= 0 {
			return 0, errors.New("truncated delivery record")
		}
		b = b[w:]
		return v, nil
	}
	origin, err := uvarint()
	if err != nil {
		return nil, err
	}
	seq, err := uvarint()
	if err != nil {
		return nil, err
	}
	n, err := uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(b)) { // each identifier takes a byte at least
		return nil, errors.New("truncated subscription identifiers")
	}
	for range n {
		id, err := uvarint()
		if err != nil {
			return nil, err
		}
		if id == 0 || id > 268435455 {
			return nil, fmt.Errorf("subscription identifier %d", id)
		}
		d.SubIDs = append(d.SubIDs, uint32(id))
	}
	m, err := decodeMessage(b)
	if err != nil {
		return nil, err
	}
	m.ID = session.MessageID{Origin: origin, Seq: seq}
	d.Msg = m
	return d, nil
}

// storedSession is the JSON form of a session.Snapshot.
type storedSession struct {
	Format        int                           `json:"format"`
	ID            string                        `json:"id"`
	Expiry        uint32                        `json:"expiry"`
	Disconnected  time.Time                     `json:"disconnected"`
	Subscriptions map[string]topic.Subscription `json:"subscriptions,omitempty"`
	Queue         []storedDelivery              `json:"queue,omitempty"` // only in Format 1 stores
	Inbound       []uint16                      `json:"inbound,omitempty"`
	Owner         string                        `json:"owner,omitempty"` // absent in stores before auth: unknown
	Partial       bool                          `json:"partial,omitempty"`
}

type storedDelivery struct {
	Msg      []byte   `json:"msg"` // encodeMessage
	QoS      byte     `json:"qos"`
	Retain   bool     `json:"retain,omitempty"`
	SubIDs   []uint32 `json:"subIDs,omitempty"`
	PacketID uint16   `json:"packetID,omitempty"`
	Dup      bool     `json:"dup,omitempty"`
	Released bool     `json:"released,omitempty"`
	// The message's session.MessageID (absent in older records: unknown).
	Origin uint64 `json:"origin,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Shared bool   `json:"shared,omitempty"`
}

const sessionFormat = 1

func encodeSession(s session.Snapshot) ([]byte, error) {
	out := storedSession{Format: sessionFormat, ID: s.ID, Expiry: s.Expiry, Disconnected: s.Disconnected,
		Subscriptions: s.Subscriptions, Inbound: s.Inbound, Owner: s.Owner, Partial: s.Partial}
	for _, d := range s.Queue {
		out.Queue = append(out.Queue, storedDelivery{Msg: encodeMessage(d.Msg), QoS: d.QoS, Retain: d.Retain,
			SubIDs: d.SubIDs, PacketID: d.PacketID, Dup: d.Dup, Released: d.Released,
			Origin: d.Msg.ID.Origin, Seq: d.Msg.ID.Seq, Shared: d.Shared})
	}
	return json.Marshal(out)
}

func decodeSession(b []byte) (session.Snapshot, error) {
	var in storedSession
	if err := json.Unmarshal(b, &in); err != nil {
		return session.Snapshot{}, err
	}
	if in.Format != sessionFormat {
		return session.Snapshot{}, errFormat
	}
	s := session.Snapshot{ID: in.ID, Expiry: in.Expiry, Disconnected: in.Disconnected,
		Subscriptions: in.Subscriptions, Inbound: in.Inbound, Owner: in.Owner, Partial: in.Partial}
	for i, d := range in.Queue {
		m, err := decodeMessage(d.Msg)
		if err != nil {
			return session.Snapshot{}, fmt.Errorf("queued message %d: %w", i, err)
		}
		m.ID = session.MessageID{Origin: d.Origin, Seq: d.Seq}
		s.Queue = append(s.Queue, &session.Delivery{Msg: m, QoS: d.QoS, Retain: d.Retain, SubIDs: d.SubIDs,
			PacketID: d.PacketID, Dup: d.Dup, Released: d.Released, Shared: d.Shared})
	}
	return s, nil
}
