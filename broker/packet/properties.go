package packet

// PropID is an MQTT 5.0 property identifier.
type PropID byte

// Property identifiers (MQTT 5.0 section 2.2.2.2).
const (
	PropPayloadFormat          PropID = 0x01
	PropMessageExpiry          PropID = 0x02
	PropContentType            PropID = 0x03
	PropResponseTopic          PropID = 0x08
	PropCorrelationData        PropID = 0x09
	PropSubscriptionIdentifier PropID = 0x0B
	PropSessionExpiry          PropID = 0x11
	PropAssignedClientID       PropID = 0x12
	PropServerKeepAlive        PropID = 0x13
	PropAuthMethod             PropID = 0x15
	PropAuthData               PropID = 0x16
	PropRequestProblemInfo     PropID = 0x17
	PropWillDelay              PropID = 0x18
	PropRequestResponseInfo    PropID = 0x19
	PropResponseInfo           PropID = 0x1A
	PropServerReference        PropID = 0x1C
	PropReasonString           PropID = 0x1F
	PropReceiveMaximum         PropID = 0x21
	PropTopicAliasMaximum      PropID = 0x22
	PropTopicAlias             PropID = 0x23
	PropMaximumQoS             PropID = 0x24
	PropRetainAvailable        PropID = 0x25
	PropUserProperty           PropID = 0x26
	PropMaximumPacketSize      PropID = 0x27
	PropWildcardSubAvailable   PropID = 0x28
	PropSubIDAvailable         PropID = 0x29
	PropSharedSubAvailable     PropID = 0x2A
)

// willProps marks properties allowed in the CONNECT will properties; it uses the unused
// packet type bit 0 (Reserved).
const willProps = 1 << Reserved

func allow(types ...Type) uint16 {
	var m uint16
	for _, t := range types {
		m |= 1 << t
	}
	return m
}

// propSpec is what the decoder needs to know of each property.
type propSpec struct {
	kind    propKind
	allowed uint16 // bit per packet Type (bit 0: will properties)
}

type propKind byte

const (
	kindNone propKind = iota
	kindByte
	kindUint16
	kindUint32
	kindVarInt
	kindString
	kindBinary
	kindPair
)

var propSpecs = [0x2B]propSpec{
	PropPayloadFormat:          {kindByte, allow(Publish) | willProps},
	PropMessageExpiry:          {kindUint32, allow(Publish) | willProps},
	PropContentType:            {kindString, allow(Publish) | willProps},
	PropResponseTopic:          {kindString, allow(Publish) | willProps},
	PropCorrelationData:        {kindBinary, allow(Publish) | willProps},
	PropSubscriptionIdentifier: {kindVarInt, allow(Publish, Subscribe)},
	PropSessionExpiry:          {kindUint32, allow(Connect, Connack, Disconnect)},
	PropAssignedClientID:       {kindString, allow(Connack)},
	PropServerKeepAlive:        {kindUint16, allow(Connack)},
	PropAuthMethod:             {kindString, allow(Connect, Connack, Auth)},
	PropAuthData:               {kindBinary, allow(Connect, Connack, Auth)},
	PropRequestProblemInfo:     {kindByte, allow(Connect)},
	PropWillDelay:              {kindUint32, willProps},
	PropRequestResponseInfo:    {kindByte, allow(Connect)},
	PropResponseInfo:           {kindString, allow(Connack)},
	PropServerReference:        {kindString, allow(Connack, Disconnect)},
	PropReasonString:           {kindString, allow(Connack, Puback, Pubrec, Pubrel, Pubcomp, Suback, Unsuback, Disconnect, Auth)},
	PropReceiveMaximum:         {kindUint16, allow(Connect, Connack)},
	PropTopicAliasMaximum:      {kindUint16, allow(Connect, Connack)},
	PropTopicAlias:             {kindUint16, allow(Publish)},
	PropMaximumQoS:             {kindByte, allow(Connack)},
	PropRetainAvailable:        {kindByte, allow(Connack)},
	PropUserProperty:           {kindPair, 0xFFFF},
	PropMaximumPacketSize:      {kindUint32, allow(Connect, Connack)},
	PropWildcardSubAvailable:   {kindByte, allow(Connack)},
	PropSubIDAvailable:         {kindByte, allow(Connack)},
	PropSharedSubAvailable:     {kindByte, allow(Connack)},
}

// UserProperty is one name/value pair of a v5 user property.
type UserProperty struct {
	Key, Value string
}

// Properties holds every MQTT 5.0 property. Presence is tracked in a bit set because
// zero is a meaningful value for several of them; use Has and Set.
type Properties struct {
	present uint64

	PayloadFormat          byte
	MessageExpiry          uint32
	ContentType            string
	ResponseTopic          string
	CorrelationData        []byte
	SubscriptionIdentifier []uint32 // several in a PUBLISH to a client, at most one in SUBSCRIBE
	SessionExpiry          uint32
	AssignedClientID       string
	ServerKeepAlive        uint16
	AuthMethod             string
	AuthData               []byte
	RequestProblemInfo     byte
	WillDelay              uint32
	RequestResponseInfo    byte
	ResponseInfo           string
	ServerReference        string
	ReasonString           string
	ReceiveMaximum         uint16
	TopicAliasMaximum      uint16
	TopicAlias             uint16
	MaximumQoS             byte
	RetainAvailable        byte
	User                   []UserProperty
	MaximumPacketSize      uint32
	WildcardSubAvailable   byte
	SubIDAvailable         byte
	SharedSubAvailable     byte
}

// Has reports whether property id is present.
// User properties and subscription identifiers are present when their slices are non-empty.
func (p *Properties) Has(id PropID) bool {
	switch id {
	case PropUserProperty:
		return len(p.User) > 0
	case PropSubscriptionIdentifier:
		return len(p.SubscriptionIdentifier) > 0
	}
	return p.present&(1<<id) != 0
}

// Set marks property id present (set its field as well).
func (p *Properties) Set(id PropID) { p.present |= 1 << id }

// Clear marks property id absent.
func (p *Properties) Clear(id PropID) { p.present &^= 1 << id }

// Empty reports whether no property is present.
func (p *Properties) Empty() bool {
	return p.present == 0 && len(p.User) == 0 && len(p.SubscriptionIdentifier) == 0
}
