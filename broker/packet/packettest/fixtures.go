// Package packettest holds the one shared table of MQTT packet fixtures, valid and
// malformed, used by the codec's round-trip tests, the decoder fuzzer's seed corpus and
// the server's malformed-input tests.
package packettest

import (
	pk "github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// Fixture is one packet on the wire and what decoding it must produce.
type Fixture struct {
	Name    string
	Version byte       // protocol version of the connection (CONNECT carries its own)
	Raw     []byte     // the complete packet, fixed header included
	Packet  *pk.Packet // the decoded packet when valid
	// Err is the reason code decoding must fail with; 0 for a valid packet.
	Err pk.Code
	// DecodeOnly marks a valid packet whose Raw is not the encoder's canonical form.
	DecodeOnly bool
	// ClientToServer marks packets a client may send, used by the server tests.
	ClientToServer bool
}

// Valid reports whether the fixture decodes without error.
func (f Fixture) Valid() bool { return f.Err == 0 }

// Bytes helpers keep the raw forms readable while staying byte-exact.

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func str(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func b(v ...byte) []byte { return v }

// fixed prefixes body with a fixed header of first byte h.
func fixed(h byte, body ...[]byte) []byte {
	bd := cat(body...)
	return cat([]byte{h}, pk.AppendVarint(nil, len(bd)), bd)
}

// props wraps a property block with its length.
func props(p ...[]byte) []byte {
	bd := cat(p...)
	return cat(pk.AppendVarint(nil, len(bd)), bd)
}

func withProps(set func(*pk.Properties)) pk.Properties {
	var p pk.Properties
	set(&p)
	return p
}

// All returns every fixture. It builds a fresh table on each call so callers may
// modify what they get.
func All() []Fixture {
	return append(Valid(), Malformed()...)
}

// Valid returns the well-formed fixtures.
func Valid() []Fixture {
	return []Fixture{
		{
			Name: "connect v3.1.1 minimal", Version: pk.V311, ClientToServer: true,
			Raw: fixed(0x10, str("MQTT"), b(4, 0x02, 0, 60), str("c1")),
			Packet: &pk.Packet{Type: pk.Connect, Connect: pk.ConnectFields{
				ProtocolName: "MQTT", ProtocolVersion: 4, CleanStart: true, KeepAlive: 60, ClientID: "c1"}},
		},
		{
			Name: "connect v3.1 MQIsdp with will, user, password", Version: pk.V31, ClientToServer: true,
			Raw: fixed(0x10, str("MQIsdp"), b(3, 0xEE, 0, 10), str("c31"), str("will/t"), str("bye"), str("u"), str("pw")),
			Packet: &pk.Packet{Type: pk.Connect, Connect: pk.ConnectFields{
				ProtocolName: "MQIsdp", ProtocolVersion: 3, CleanStart: true, KeepAlive: 10, ClientID: "c31",
				WillFlag: true, WillQoS: 1, WillRetain: true, WillTopic: "will/t", WillPayload: []byte("bye"),
				UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("pw")}},
		},
		{
			Name: "connect v5 with properties and will properties", Version: pk.V5, ClientToServer: true,
			DecodeOnly: true, // properties are not in the encoder's id order
			Raw: fixed(0x10, str("MQTT"), b(5, 0x16, 0, 30),
				props(b(0x11, 0, 0, 0x0E, 0x10), b(0x21, 0, 20), b(0x22, 0, 10), b(0x27, 0, 1, 0, 0),
					b(0x19, 1), b(0x17, 0), b(0x26), str("k"), str("v")),
				str("c5"),
				props(b(0x18, 0, 0, 0, 5), b(0x01, 1), b(0x02, 0, 0, 0, 60), b(0x03), str("text/plain"),
					b(0x08), str("resp"), b(0x09), str("corr")),
				str("lwt"), str("gone")),
			Packet: &pk.Packet{Type: pk.Connect,
				Properties: withProps(func(p *pk.Properties) {
					p.SessionExpiry, p.ReceiveMaximum, p.TopicAliasMaximum, p.MaximumPacketSize = 3600, 20, 10, 65536
					p.RequestResponseInfo, p.RequestProblemInfo = 1, 0
					p.User = []pk.UserProperty{{Key: "k", Value: "v"}}
					for _, id := range []pk.PropID{pk.PropSessionExpiry, pk.PropReceiveMaximum, pk.PropTopicAliasMaximum,
						pk.PropMaximumPacketSize, pk.PropRequestResponseInfo, pk.PropRequestProblemInfo} {
						p.Set(id)
					}
				}),
				Connect: pk.ConnectFields{ProtocolName: "MQTT", ProtocolVersion: 5, CleanStart: true, KeepAlive: 30,
					ClientID: "c5", WillFlag: true, WillQoS: 2, WillTopic: "lwt", WillPayload: []byte("gone"),
					WillProperties: withProps(func(p *pk.Properties) {
						p.WillDelay, p.PayloadFormat, p.MessageExpiry = 5, 1, 60
						p.ContentType, p.ResponseTopic, p.CorrelationData = "text/plain", "resp", []byte("corr")
						for _, id := range []pk.PropID{pk.PropWillDelay, pk.PropPayloadFormat, pk.PropMessageExpiry,
							pk.PropContentType, pk.PropResponseTopic, pk.PropCorrelationData} {
							p.Set(id)
						}
					})}},
		},
		{
			Name: "connect v5 empty client id, auth method", Version: pk.V5, ClientToServer: true,
			Raw: fixed(0x10, str("MQTT"), b(5, 0x02, 0, 0), props(b(0x15), str("SCRAM"), b(0x16), str("d")), str("")),
			Packet: &pk.Packet{Type: pk.Connect,
				Properties: withProps(func(p *pk.Properties) {
					p.AuthMethod, p.AuthData = "SCRAM", []byte("d")
					p.Set(pk.PropAuthMethod)
					p.Set(pk.PropAuthData)
				}),
				Connect: pk.ConnectFields{ProtocolName: "MQTT", ProtocolVersion: 5, CleanStart: true}},
		},
		{
			Name: "connack v3.1.1 accepted session present", Version: pk.V311,
			Raw:    b(0x20, 2, 1, 0),
			Packet: &pk.Packet{Type: pk.Connack, SessionPresent: true},
		},
		{
			Name: "connack v3.1.1 refused", Version: pk.V311,
			Raw:    b(0x20, 2, 0, 5),
			Packet: &pk.Packet{Type: pk.Connack, ReasonCode: 5},
		},
		{
			Name: "connack v5 with server properties", Version: pk.V5,
			Raw: fixed(0x20, b(0, 0), props(b(0x12), str("auto-1"), b(0x13, 0, 30), b(0x1F), str("ok"),
				b(0x21, 0, 10), b(0x22, 0, 5), b(0x24, 1), b(0x25, 1), b(0x27, 0, 0, 1, 0), b(0x28, 1), b(0x29, 1),
				b(0x2A, 1))),
			Packet: &pk.Packet{Type: pk.Connack, Properties: withProps(func(p *pk.Properties) {
				p.AssignedClientID, p.ServerKeepAlive, p.ReceiveMaximum, p.TopicAliasMaximum = "auto-1", 30, 10, 5
				p.MaximumQoS, p.RetainAvailable, p.MaximumPacketSize = 1, 1, 256
				p.WildcardSubAvailable, p.SubIDAvailable, p.SharedSubAvailable, p.ReasonString = 1, 1, 1, "ok"
				for _, id := range []pk.PropID{pk.PropAssignedClientID, pk.PropServerKeepAlive, pk.PropReceiveMaximum,
					pk.PropTopicAliasMaximum, pk.PropMaximumQoS, pk.PropRetainAvailable, pk.PropMaximumPacketSize,
					pk.PropWildcardSubAvailable, pk.PropSubIDAvailable, pk.PropSharedSubAvailable, pk.PropReasonString} {
					p.Set(id)
				}
			})},
		},
		{
			Name: "publish qos0 v3.1.1", Version: pk.V311, ClientToServer: true,
			Raw:    fixed(0x30, str("a/b"), []byte("hello")),
			Packet: &pk.Packet{Type: pk.Publish, Topic: "a/b", Payload: []byte("hello")},
		},
		{
			Name: "publish qos1 retain dup v3.1.1", Version: pk.V311, ClientToServer: true,
			Raw:    fixed(0x3B, str("x"), b(0, 7), []byte("p")),
			Packet: &pk.Packet{Type: pk.Publish, QoS: 1, Retain: true, Dup: true, PacketID: 7, Topic: "x", Payload: []byte("p")},
		},
		{
			Name: "publish qos2 empty payload v3.1.1", Version: pk.V311, ClientToServer: true,
			Raw:    fixed(0x34, str("q2"), b(0x12, 0x34)),
			Packet: &pk.Packet{Type: pk.Publish, QoS: 2, PacketID: 0x1234, Topic: "q2", Payload: []byte{}},
		},
		{
			Name: "publish v5 with properties", Version: pk.V5, ClientToServer: true,
			Raw: fixed(0x32, str("r/t"), b(0, 1), props(b(0x01, 1), b(0x02, 0, 0, 0, 9), b(0x23, 0, 3),
				b(0x08), str("reply/to"), b(0x09), str("id-1"), b(0x26), str("a"), str("1"), b(0x26), str("a"), str("2"),
				b(0x03), str("json")), []byte("{}")),
			Packet: &pk.Packet{Type: pk.Publish, QoS: 1, PacketID: 1, Topic: "r/t", Payload: []byte("{}"),
				Properties: withProps(func(p *pk.Properties) {
					p.PayloadFormat, p.MessageExpiry, p.TopicAlias = 1, 9, 3
					p.ResponseTopic, p.CorrelationData, p.ContentType = "reply/to", []byte("id-1"), "json"
					p.User = []pk.UserProperty{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}}
					for _, id := range []pk.PropID{pk.PropPayloadFormat, pk.PropMessageExpiry, pk.PropTopicAlias,
						pk.PropResponseTopic, pk.PropCorrelationData, pk.PropContentType} {
						p.Set(id)
					}
				})},
			DecodeOnly: true, // properties are not in the encoder's id order
		},
		{
			Name: "publish v5 to client with subscription identifiers", Version: pk.V5,
			Raw: fixed(0x30, str("s"), props(b(0x0B, 1), b(0x0B, 0x80, 0x01)), []byte("x")),
			Packet: &pk.Packet{Type: pk.Publish, Topic: "s", Payload: []byte("x"),
				Properties: pk.Properties{SubscriptionIdentifier: []uint32{1, 128}}},
		},
		{
			Name: "publish v5 alias only, empty topic", Version: pk.V5, ClientToServer: true,
			Raw: fixed(0x30, str(""), props(b(0x23, 0, 1)), []byte("y")),
			Packet: &pk.Packet{Type: pk.Publish, Topic: "", Payload: []byte("y"),
				Properties: withProps(func(p *pk.Properties) { p.TopicAlias = 1; p.Set(pk.PropTopicAlias) })},
		},
		{Name: "puback v3.1.1", Version: pk.V311, ClientToServer: true, Raw: b(0x40, 2, 0, 9), Packet: &pk.Packet{Type: pk.Puback, PacketID: 9}},
		{Name: "pubrec v3.1.1", Version: pk.V311, ClientToServer: true, Raw: b(0x50, 2, 0, 9), Packet: &pk.Packet{Type: pk.Pubrec, PacketID: 9}},
		{Name: "pubrel v3.1.1", Version: pk.V311, ClientToServer: true, Raw: b(0x62, 2, 0, 9), Packet: &pk.Packet{Type: pk.Pubrel, PacketID: 9}},
		{Name: "pubcomp v3.1.1", Version: pk.V311, ClientToServer: true, Raw: b(0x70, 2, 0, 9), Packet: &pk.Packet{Type: pk.Pubcomp, PacketID: 9}},
		{Name: "puback v5 short form", Version: pk.V5, ClientToServer: true, Raw: b(0x40, 2, 0, 9), Packet: &pk.Packet{Type: pk.Puback, PacketID: 9}},
		{
			Name: "puback v5 reason only", Version: pk.V5, ClientToServer: true,
			Raw: b(0x40, 3, 0, 9, 0x10), Packet: &pk.Packet{Type: pk.Puback, PacketID: 9, ReasonCode: pk.NoMatchingSubscribers},
		},
		{
			Name: "puback v5 reason 0 with empty props", Version: pk.V5, ClientToServer: true, DecodeOnly: true,
			Raw: b(0x40, 4, 0, 9, 0, 0), Packet: &pk.Packet{Type: pk.Puback, PacketID: 9},
		},
		{
			Name: "pubrec v5 with reason string", Version: pk.V5, ClientToServer: true,
			Raw: fixed(0x50, b(0, 2, 0x80), props(b(0x1F), str("no"))),
			Packet: &pk.Packet{Type: pk.Pubrec, PacketID: 2, ReasonCode: pk.UnspecifiedError,
				Properties: withProps(func(p *pk.Properties) { p.ReasonString = "no"; p.Set(pk.PropReasonString) })},
		},
		{
			Name: "pubrel v5 id not found", Version: pk.V5, ClientToServer: true,
			Raw: b(0x62, 3, 0, 2, 0x92), Packet: &pk.Packet{Type: pk.Pubrel, PacketID: 2, ReasonCode: pk.PacketIdentifierNotFound},
		},
		{
			Name: "subscribe v3.1.1 two filters", Version: pk.V311, ClientToServer: true,
			Raw: fixed(0x82, b(0, 1), str("a/+"), b(1), str("b/#"), b(2)),
			Packet: &pk.Packet{Type: pk.Subscribe, PacketID: 1, Subscriptions: []pk.Subscription{
				{Filter: "a/+", QoS: 1}, {Filter: "b/#", QoS: 2}}},
		},
		{
			Name: "subscribe v5 options and identifier", Version: pk.V5, ClientToServer: true,
			Raw: fixed(0x82, b(0, 2), props(b(0x0B, 0xFF, 0x7F), b(0x26), str("u"), str("p")),
				str("x/y"), b(0x2E), str("$share/g/z"), b(0x00)),
			Packet: &pk.Packet{Type: pk.Subscribe, PacketID: 2,
				Properties: pk.Properties{SubscriptionIdentifier: []uint32{16383}, User: []pk.UserProperty{{Key: "u", Value: "p"}}},
				Subscriptions: []pk.Subscription{
					{Filter: "x/y", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
					{Filter: "$share/g/z"}}},
		},
		{
			Name: "suback v3.1.1", Version: pk.V311,
			Raw: b(0x90, 5, 0, 1, 0, 1, 0x80), Packet: &pk.Packet{Type: pk.Suback, PacketID: 1,
				ReasonCodes: []pk.Code{0, 1, 0x80}},
		},
		{
			Name: "suback v5", Version: pk.V5,
			Raw: b(0x90, 6, 0, 1, 0, 0, 2, 0x8F), Packet: &pk.Packet{Type: pk.Suback, PacketID: 1,
				ReasonCodes: []pk.Code{0, 2, pk.TopicFilterInvalid}},
		},
		{
			Name: "unsubscribe v3.1.1", Version: pk.V311, ClientToServer: true,
			Raw:    fixed(0xA2, b(0, 3), str("a/+"), str("b")),
			Packet: &pk.Packet{Type: pk.Unsubscribe, PacketID: 3, Filters: []string{"a/+", "b"}},
		},
		{
			Name: "unsubscribe v5", Version: pk.V5, ClientToServer: true,
			Raw:    fixed(0xA2, b(0, 3), props(), str("a")),
			Packet: &pk.Packet{Type: pk.Unsubscribe, PacketID: 3, Filters: []string{"a"}},
		},
		{Name: "unsuback v3.1.1", Version: pk.V311, Raw: b(0xB0, 2, 0, 3), Packet: &pk.Packet{Type: pk.Unsuback, PacketID: 3}},
		{
			Name: "unsuback v5", Version: pk.V5, Raw: b(0xB0, 5, 0, 3, 0, 0x00, 0x11),
			Packet: &pk.Packet{Type: pk.Unsuback, PacketID: 3, ReasonCodes: []pk.Code{0, pk.NoSubscriptionExisted}},
		},
		{Name: "pingreq", Version: pk.V311, ClientToServer: true, Raw: b(0xC0, 0), Packet: &pk.Packet{Type: pk.Pingreq}},
		{Name: "pingresp", Version: pk.V5, Raw: b(0xD0, 0), Packet: &pk.Packet{Type: pk.Pingresp}},
		{Name: "disconnect v3.1.1", Version: pk.V311, ClientToServer: true, Raw: b(0xE0, 0), Packet: &pk.Packet{Type: pk.Disconnect}},
		{Name: "disconnect v5 short", Version: pk.V5, ClientToServer: true, Raw: b(0xE0, 0), Packet: &pk.Packet{Type: pk.Disconnect}},
		{
			Name: "disconnect v5 with will and session expiry", Version: pk.V5, ClientToServer: true,
			Raw: fixed(0xE0, b(0x04), props(b(0x11, 0, 0, 0, 0))),
			Packet: &pk.Packet{Type: pk.Disconnect, ReasonCode: pk.DisconnectWithWillMessage,
				Properties: withProps(func(p *pk.Properties) { p.Set(pk.PropSessionExpiry) })},
		},
		{
			Name: "disconnect v5 server shutting down with reference", Version: pk.V5,
			Raw: fixed(0xE0, b(0x9C), props(b(0x1C), str("other:1883"))),
			Packet: &pk.Packet{Type: pk.Disconnect, ReasonCode: pk.UseAnotherServer,
				Properties: withProps(func(p *pk.Properties) { p.ServerReference = "other:1883"; p.Set(pk.PropServerReference) })},
		},
		{
			Name: "auth v5", Version: pk.V5, ClientToServer: true,
			Raw: fixed(0xF0, b(0x18), props(b(0x15), str("m"))),
			Packet: &pk.Packet{Type: pk.Auth, ReasonCode: pk.ContinueAuthentication,
				Properties: withProps(func(p *pk.Properties) { p.AuthMethod = "m"; p.Set(pk.PropAuthMethod) })},
		},
	}
}

// Malformed returns fixtures that must fail to decode, with the reason code each must
// produce. Packets a client sends after CONNECT are ClientToServer so the server tests
// can send them on an established connection.
func Malformed() []Fixture {
	return []Fixture{
		{Name: "reserved type 0", Version: pk.V311, ClientToServer: true, Raw: b(0x00, 0), Err: pk.MalformedPacket},
		{Name: "auth in v3.1.1", Version: pk.V311, ClientToServer: true, Raw: b(0xF0, 0), Err: pk.MalformedPacket},
		{Name: "pingreq flags", Version: pk.V311, ClientToServer: true, Raw: b(0xC1, 0), Err: pk.MalformedPacket},
		{Name: "pingreq with body", Version: pk.V5, ClientToServer: true, Raw: b(0xC0, 1, 0), Err: pk.MalformedPacket},
		{Name: "subscribe flags 0", Version: pk.V311, ClientToServer: true, Raw: fixed(0x80, b(0, 1), str("a"), b(0)), Err: pk.MalformedPacket},
		{Name: "pubrel flags 0", Version: pk.V5, ClientToServer: true, Raw: b(0x60, 2, 0, 1), Err: pk.MalformedPacket},
		{Name: "publish qos 3", Version: pk.V311, ClientToServer: true, Raw: fixed(0x36, str("a"), b(0, 1)), Err: pk.MalformedPacket},
		{Name: "publish dup on qos0", Version: pk.V5, ClientToServer: true, Raw: fixed(0x38, str("a"), props()), Err: pk.MalformedPacket},
		{Name: "publish wildcard topic", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str("a/+"), props()), Err: pk.TopicNameInvalid},
		{Name: "publish hash topic v3", Version: pk.V311, ClientToServer: true, Raw: fixed(0x30, str("a/#")), Err: pk.TopicNameInvalid},
		{Name: "publish empty topic v3", Version: pk.V311, ClientToServer: true, Raw: fixed(0x30, str("")), Err: pk.ProtocolError},
		{Name: "publish empty topic no alias v5", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str(""), props()), Err: pk.ProtocolError},
		{Name: "publish topic alias 0", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str("a"), props(b(0x23, 0, 0))), Err: pk.TopicAliasInvalid},
		{Name: "publish packet id 0", Version: pk.V311, ClientToServer: true, Raw: fixed(0x32, str("a"), b(0, 0)), Err: pk.ProtocolError},
		{Name: "publish topic with NUL", Version: pk.V311, ClientToServer: true, Raw: fixed(0x30, str("a\x00b")), Err: pk.MalformedPacket},
		{Name: "publish topic invalid UTF-8", Version: pk.V311, ClientToServer: true, Raw: fixed(0x30, str("a\xffb")), Err: pk.MalformedPacket},
		{Name: "publish topic UTF-16 surrogate", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str("\xed\xa0\x80"), props()), Err: pk.MalformedPacket},
		{Name: "publish topic length beyond packet", Version: pk.V311, ClientToServer: true, Raw: b(0x30, 3, 0, 9, 'a'), Err: pk.MalformedPacket},
		{Name: "publish property length beyond packet", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str("a"), b(9, 1, 1)), Err: pk.MalformedPacket},
		{Name: "publish unknown property", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str("a"), props(b(0x7F, 0))), Err: pk.MalformedPacket},
		{Name: "publish property not allowed", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str("a"), props(b(0x11, 0, 0, 0, 1))), Err: pk.ProtocolError},
		{Name: "publish duplicate property", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str("a"), props(b(0x02, 0, 0, 0, 1), b(0x02, 0, 0, 0, 2))), Err: pk.ProtocolError},
		{Name: "publish payload format 2", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str("a"), props(b(0x01, 2))), Err: pk.ProtocolError},
		{Name: "remaining length 5 bytes", Version: pk.V311, ClientToServer: true, Raw: b(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), Err: pk.MalformedPacket},
		{Name: "puback v3 long", Version: pk.V311, ClientToServer: true, Raw: b(0x40, 3, 0, 1, 0), Err: pk.MalformedPacket},
		{Name: "puback short", Version: pk.V5, ClientToServer: true, Raw: b(0x40, 1, 0), Err: pk.MalformedPacket},
		{Name: "puback id 0", Version: pk.V5, ClientToServer: true, Raw: b(0x40, 2, 0, 0), Err: pk.ProtocolError},
		{Name: "puback bad reason code", Version: pk.V5, ClientToServer: true, Raw: b(0x40, 3, 0, 1, 0x92), Err: pk.ProtocolError},
		{Name: "pubcomp bad reason code", Version: pk.V5, ClientToServer: true, Raw: b(0x70, 3, 0, 1, 0x10), Err: pk.ProtocolError},
		{Name: "subscribe no filters v3", Version: pk.V311, ClientToServer: true, Raw: b(0x82, 2, 0, 1), Err: pk.ProtocolError},
		{Name: "subscribe no filters v5", Version: pk.V5, ClientToServer: true, Raw: b(0x82, 3, 0, 1, 0), Err: pk.ProtocolError},
		{Name: "subscribe qos 3", Version: pk.V311, ClientToServer: true, Raw: fixed(0x82, b(0, 1), str("a"), b(3)), Err: pk.MalformedPacket},
		{Name: "subscribe v3 reserved option bits", Version: pk.V311, ClientToServer: true, Raw: fixed(0x82, b(0, 1), str("a"), b(0x04)), Err: pk.MalformedPacket},
		{Name: "subscribe v5 reserved option bits", Version: pk.V5, ClientToServer: true, Raw: fixed(0x82, b(0, 1), props(), str("a"), b(0x40)), Err: pk.MalformedPacket},
		{Name: "subscribe v5 retain handling 3", Version: pk.V5, ClientToServer: true, Raw: fixed(0x82, b(0, 1), props(), str("a"), b(0x30)), Err: pk.ProtocolError},
		{Name: "subscribe v5 identifier 0", Version: pk.V5, ClientToServer: true, Raw: fixed(0x82, b(0, 1), props(b(0x0B, 0)), str("a"), b(0)), Err: pk.ProtocolError},
		{Name: "subscribe v5 two identifiers", Version: pk.V5, ClientToServer: true, Raw: fixed(0x82, b(0, 1), props(b(0x0B, 1), b(0x0B, 2)), str("a"), b(0)), Err: pk.ProtocolError},
		{Name: "subscribe missing options byte", Version: pk.V311, ClientToServer: true, Raw: fixed(0x82, b(0, 1), str("a")), Err: pk.MalformedPacket},
		{Name: "subscribe packet id 0", Version: pk.V311, ClientToServer: true, Raw: fixed(0x82, b(0, 0), str("a"), b(0)), Err: pk.ProtocolError},
		{Name: "unsubscribe no filters", Version: pk.V311, ClientToServer: true, Raw: b(0xA2, 2, 0, 1), Err: pk.ProtocolError},
		{Name: "unsubscribe flags 0", Version: pk.V311, ClientToServer: true, Raw: fixed(0xA0, b(0, 1), str("a")), Err: pk.MalformedPacket},
		{Name: "disconnect v3 with body", Version: pk.V311, ClientToServer: true, Raw: b(0xE0, 1, 0), Err: pk.MalformedPacket},
		{Name: "disconnect v5 bad property", Version: pk.V5, ClientToServer: true, Raw: fixed(0xE0, b(0), props(b(0x23, 0, 1))), Err: pk.ProtocolError},
		{Name: "variable byte integer too long in properties", Version: pk.V5, ClientToServer: true, Raw: fixed(0x30, str("a"), b(0xFF, 0xFF, 0xFF, 0xFF, 0x01)), Err: pk.MalformedPacket},
		{Name: "connect bad protocol name", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTX"), b(4, 2, 0, 0), str("c")), Err: pk.ProtocolError},
		{Name: "connect unsupported level", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(6, 2, 0, 0), str("c")), Err: pk.UnsupportedProtocolVersion},
		{Name: "connect reserved flag", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(4, 3, 0, 0), str("c")), Err: pk.MalformedPacket},
		{Name: "connect will qos without will", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(4, 0x0A, 0, 0), str("c")), Err: pk.MalformedPacket},
		{Name: "connect will qos 3", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(4, 0x1E, 0, 0), str("c"), str("t"), str("m")), Err: pk.MalformedPacket},
		{Name: "connect v3.1.1 password without user", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(4, 0x42, 0, 0), str("c"), str("p")), Err: pk.MalformedPacket},
		{Name: "connect truncated payload", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(4, 0x82, 0, 0), str("c")), Err: pk.MalformedPacket},
		{Name: "connect wildcard will topic", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(4, 0x06, 0, 0), str("c"), str("w/#"), str("m")), Err: pk.TopicNameInvalid},
		{Name: "connect v5 receive maximum 0", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(5, 2, 0, 0), props(b(0x21, 0, 0)), str("c")), Err: pk.ProtocolError},
		{Name: "connect v5 max packet size 0", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(5, 2, 0, 0), props(b(0x27, 0, 0, 0, 0)), str("c")), Err: pk.ProtocolError},
		{Name: "connect v5 auth data without method", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(5, 2, 0, 0), props(b(0x16), str("x")), str("c")), Err: pk.ProtocolError},
		{Name: "connect v5 will delay outside will", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(5, 2, 0, 0), props(b(0x18, 0, 0, 0, 1)), str("c")), Err: pk.ProtocolError},
		{Name: "connect v5 request problem info 2", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(5, 2, 0, 0), props(b(0x17, 2)), str("c")), Err: pk.ProtocolError},
		{Name: "connect trailing bytes", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(4, 2, 0, 0), str("c"), b(0)), Err: pk.MalformedPacket},
		{Name: "connect client id invalid UTF-8", Version: 0, ClientToServer: true, Raw: fixed(0x10, str("MQTT"), b(4, 2, 0, 0), str("\xc3\x28")), Err: pk.MalformedPacket},
	}
}
