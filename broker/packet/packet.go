// Package packet is the MQTT 3.1, 3.1.1 and 5.0 codec: packet types, properties,
// reason codes, encoding and a validating decoder. It depends on nothing but the
// standard library.
package packet

// Type is the MQTT control packet type (the upper four bits of the fixed header).
type Type byte

// Control packet types.
const (
	Reserved    Type = 0
	Connect     Type = 1
	Connack     Type = 2
	Publish     Type = 3
	Puback      Type = 4
	Pubrec      Type = 5
	Pubrel      Type = 6
	Pubcomp     Type = 7
	Subscribe   Type = 8
	Suback      Type = 9
	Unsubscribe Type = 10
	Unsuback    Type = 11
	Pingreq     Type = 12
	Pingresp    Type = 13
	Disconnect  Type = 14
	Auth        Type = 15
)

var typeNames = [...]string{"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC",
	"PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ",
	"PINGRESP", "DISCONNECT", "AUTH"}

// String returns the packet type's name as the specification writes it.
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "UNKNOWN"
}

// Protocol versions (the CONNECT protocol level).
const (
	V31  byte = 3
	V311 byte = 4
	V5   byte = 5
)

// MaxRemainingLength is the largest remaining length a variable byte integer can carry.
const MaxRemainingLength = 268435455

// Subscription is one entry of a SUBSCRIBE payload.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
}

// ConnectFields holds the variable header and payload of a CONNECT packet.
type ConnectFields struct {
	ProtocolName    string
	ProtocolVersion byte
	CleanStart      bool
	KeepAlive       uint16
	ClientID        string
	WillFlag        bool
	WillQoS         byte
	WillRetain      bool
	WillTopic       string
	WillPayload     []byte
	WillProperties  Properties
	UsernameFlag    bool
	Username        string
	PasswordFlag    bool
	Password        []byte
}

// Packet is any MQTT control packet. One struct for every type keeps decoding free of
// interface allocations; each type uses the fields its section of the spec defines.
type Packet struct {
	Type Type

	// PUBLISH fixed-header flags.
	Dup    bool
	QoS    byte
	Retain bool

	// PacketID for PUBLISH (QoS>0), PUBACK..PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK.
	PacketID uint16

	// ReasonCode of CONNACK (v3: the return code), PUBACK..PUBCOMP, DISCONNECT and AUTH.
	ReasonCode Code

	// Properties (v5 only).
	Properties Properties

	// CONNECT.
	Connect ConnectFields

	// CONNACK.
	SessionPresent bool

	// PUBLISH.
	Topic   string
	Payload []byte

	// SUBSCRIBE.
	Subscriptions []Subscription
	// UNSUBSCRIBE.
	Filters []string
	// SUBACK and UNSUBACK (v5; SUBACK also in v3).
	ReasonCodes []Code
}
