package packet

import "errors"

// Code is an MQTT reason code. It implements error so that protocol failures are
// returned as values and matched with errors.Is; errors.As recovers the code from a
// wrapped error that carries extra context.
type Code byte

// Reason codes of MQTT 5.0 (section 2.4). The v3 CONNACK return codes are mapped from
// these by ConnackV3.
const (
	Success                             Code = 0x00
	NormalDisconnection                 Code = 0x00
	GrantedQoS0                         Code = 0x00
	GrantedQoS1                         Code = 0x01
	GrantedQoS2                         Code = 0x02
	DisconnectWithWillMessage           Code = 0x04
	NoMatchingSubscribers               Code = 0x10
	NoSubscriptionExisted               Code = 0x11
	ContinueAuthentication              Code = 0x18
	ReAuthenticate                      Code = 0x19
	UnspecifiedError                    Code = 0x80
	MalformedPacket                     Code = 0x81
	ProtocolError                       Code = 0x82
	ImplementationSpecificError         Code = 0x83
	UnsupportedProtocolVersion          Code = 0x84
	ClientIdentifierNotValid            Code = 0x85
	BadUserNameOrPassword               Code = 0x86
	NotAuthorized                       Code = 0x87
	ServerUnavailable                   Code = 0x88
	ServerBusy                          Code = 0x89
	Banned                              Code = 0x8A
	ServerShuttingDown                  Code = 0x8B
	BadAuthenticationMethod             Code = 0x8C
	KeepAliveTimeout                    Code = 0x8D
	SessionTakenOver                    Code = 0x8E
	TopicFilterInvalid                  Code = 0x8F
	TopicNameInvalid                    Code = 0x90
	PacketIdentifierInUse               Code = 0x91
	PacketIdentifierNotFound            Code = 0x92
	ReceiveMaximumExceeded              Code = 0x93
	TopicAliasInvalid                   Code = 0x94
	PacketTooLarge                      Code = 0x95
	MessageRateTooHigh                  Code = 0x96
	QuotaExceeded                       Code = 0x97
	AdministrativeAction                Code = 0x98
	PayloadFormatInvalid                Code = 0x99
	RetainNotSupported                  Code = 0x9A
	QoSNotSupported                     Code = 0x9B
	UseAnotherServer                    Code = 0x9C
	ServerMoved                         Code = 0x9D
	SharedSubscriptionsNotSupported     Code = 0x9E
	ConnectionRateExceeded              Code = 0x9F
	MaximumConnectTime                  Code = 0xA0
	SubscriptionIdentifiersNotSupported Code = 0xA1
	WildcardSubscriptionsNotSupported   Code = 0xA2
)

var codeText = map[Code]string{
	0x00: "success",
	0x01: "granted qos 1",
	0x02: "granted qos 2",
	0x04: "disconnect with will message",
	0x10: "no matching subscribers",
	0x11: "no subscription existed",
	0x18: "continue authentication",
	0x19: "re-authenticate",
	0x80: "unspecified error",
	0x81: "malformed packet",
	0x82: "protocol error",
	0x83: "implementation specific error",
	0x84: "unsupported protocol version",
	0x85: "client identifier not valid",
	0x86: "bad user name or password",
	0x87: "not authorized",
	0x88: "server unavailable",
	0x89: "server busy",
	0x8A: "banned",
	0x8B: "server shutting down",
	0x8C: "bad authentication method",
	0x8D: "keep alive timeout",
	0x8E: "session taken over",
	0x8F: "topic filter invalid",
	0x90: "topic name invalid",
	0x91: "packet identifier in use",
	0x92: "packet identifier not found",
	0x93: "receive maximum exceeded",
	0x94: "topic alias invalid",
	0x95: "packet too large",
	0x96: "message rate too high",
	0x97: "quota exceeded",
	0x98: "administrative action",
	0x99: "payload format invalid",
	0x9A: "retain not supported",
	0x9B: "qos not supported",
	0x9C: "use another server",
	0x9D: "server moved",
	0x9E: "shared subscriptions not supported",
	0x9F: "connection rate exceeded",
	0xA0: "maximum connect time",
	0xA1: "subscription identifiers not supported",
	0xA2: "wildcard subscriptions not supported",
}

// Error returns the reason code's text from the specification.
func (c Code) Error() string {
	if s, ok := codeText[c]; ok {
		return s
	}
	return "unknown reason code"
}

// String is the same as Error.
func (c Code) String() string { return c.Error() }

// IsError reports whether the code signals failure (0x80 and above).
func (c Code) IsError() bool { return c >= 0x80 }

// CodeOf extracts the reason code carried by err, or UnspecifiedError when err carries none.
func CodeOf(err error) Code {
	var c Code
	if errors.As(err, &c) {
		return c
	}
	return UnspecifiedError
}

// MQTT 3.1/3.1.1 CONNACK return codes.
const (
	ConnackV3Accepted           byte = 0x00
	ConnackV3BadProtocolVersion byte = 0x01
	ConnackV3IdentifierRejected byte = 0x02
	ConnackV3ServerUnavailable  byte = 0x03
	ConnackV3BadCredentials     byte = 0x04
	ConnackV3NotAuthorized      byte = 0x05
)

// ConnackV3 maps a v5 CONNACK reason code to the closest v3 return code.
func ConnackV3(c Code) byte {
	switch c {
	case Success:
		return ConnackV3Accepted
	case UnsupportedProtocolVersion:
		return ConnackV3BadProtocolVersion
	case ClientIdentifierNotValid:
		return ConnackV3IdentifierRejected
	case BadUserNameOrPassword:
		return ConnackV3BadCredentials
	case NotAuthorized, Banned:
		return ConnackV3NotAuthorized
	default:
		return ConnackV3ServerUnavailable
	}
}

// wrapped is an error with context that still matches its Code via errors.Is/As.
type wrapped struct {
	code Code
	msg  string
}

func (w *wrapped) Error() string { return w.code.Error() + ": " + w.msg }
func (w *wrapped) Unwrap() error { return w.code }

// Errorf returns an error carrying code with a short explanation (no formatting verbs
// needed on the hot path, so it takes a plain string).
func Errorf(code Code, msg string) error { return &wrapped{code: code, msg: msg} }
