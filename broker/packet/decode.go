package packet

import (
	"bufio"
	"io"
)

// FixedHeader is the first part of every packet.
type FixedHeader struct {
	Type      Type
	Flags     byte
	Remaining int
}

// ReadFixedHeader reads a fixed header from br. It fails with MalformedPacket on a bad
// remaining length and PacketTooLarge when the whole packet would exceed maxSize
// (0: no limit beyond the protocol's). io errors are returned as they are.
func ReadFixedHeader(br *bufio.Reader, maxSize uint32) (FixedHeader, error) {
	var fh FixedHeader
	b, err := br.ReadByte()
	if err != nil {
		return fh, err
	}
	fh.Type = Type(b >> 4)
	fh.Flags = b & 0x0F
	mult := 1
	for i := 0; ; i++ {
		if i == 4 {
			return fh, Errorf(MalformedPacket, "remaining length longer than 4 bytes")
		}
		c, err := br.ReadByte()
		if err != nil {
			if err == io.EOF {
				return fh, io.ErrUnexpectedEOF
			}
			return fh, err
		}
		fh.Remaining += int(c&0x7F) * mult
		mult <<= 7
		if c&0x80 == 0 {
			if maxSize > 0 && uint64(1+i+1+fh.Remaining) > uint64(maxSize) {
				return fh, Errorf(PacketTooLarge, "packet exceeds maximum packet size")
			}
			return fh, nil
		}
	}
}

// Read reads and decodes one packet. version is the connection's protocol version
// (0 before CONNECT, when only CONNECT is acceptable to the caller). The packet's byte
// slices (payload, binary properties) point into a buffer owned by the packet.
func Read(br *bufio.Reader, version byte, maxSize uint32) (*Packet, error) {
	fh, body, err := readBody(br, maxSize)
	if err != nil {
		return nil, err
	}
	return Decode(fh, body, version)
}

// ReadInto is Read into a caller-owned packet, which it resets first: a connection's
// read loop reuses one Packet instead of allocating one per message. Slices and
// strings in p stay valid after the next ReadInto (each read gets a new body buffer).
func ReadInto(br *bufio.Reader, p *Packet, version byte, maxSize uint32) error {
	fh, body, err := readBody(br, maxSize)
	if err != nil {
		return err
	}
	return DecodeInto(p, fh, body, version)
}

func readBody(br *bufio.Reader, maxSize uint32) (FixedHeader, []byte, error) {
	fh, err := ReadFixedHeader(br, maxSize)
	if err != nil {
		return fh, nil, err
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(br, body); err != nil {
		if err == io.EOF {
			return fh, nil, io.ErrUnexpectedEOF
		}
		return fh, nil, err
	}
	return fh, body, nil
}

// Decode decodes a packet body. For CONNECT the version comes from the packet itself.
// On an error in a CONNECT whose protocol level was read, the returned packet is non-nil
// and carries Connect.ProtocolVersion so the caller can answer in the client's format.
func Decode(fh FixedHeader, body []byte, version byte) (*Packet, error) {
	p := new(Packet)
	if err := DecodeInto(p, fh, body, version); err != nil {
		if fh.Type == Connect && p.Connect.ProtocolVersion != 0 {
			return p, err // the caller answers in the client's protocol version
		}
		return nil, err
	}
	return p, nil
}

// DecodeInto is Decode into p, which it resets first. On error p holds what was
// decoded so far (for CONNECT at least Connect.ProtocolVersion).
func DecodeInto(p *Packet, fh FixedHeader, body []byte, version byte) error {
	*p = Packet{Type: fh.Type}
	if err := checkFlags(fh, version); err != nil {
		return err
	}
	r := reader{b: body}
	switch fh.Type {
	case Connect:
		if err := r.connect(p); err != nil {
			return err
		}
	case Connack:
		r.connack(p, version)
	case Publish:
		r.publish(p, fh.Flags, version)
	case Puback, Pubrec, Pubrel, Pubcomp:
		r.ack(p, version)
	case Subscribe:
		r.subscribe(p, version)
	case Suback, Unsuback:
		r.suback(p, version)
	case Unsubscribe:
		r.unsubscribe(p, version)
	case Pingreq, Pingresp:
	case Disconnect, Auth:
		r.disconnect(p, version)
	}
	if r.err == nil && r.off != len(r.b) {
		r.fail(MalformedPacket, "unexpected bytes after packet")
	}
	return r.err
}

func checkFlags(fh FixedHeader, version byte) error {
	switch fh.Type {
	case Reserved:
		return Errorf(MalformedPacket, "reserved packet type 0")
	case Auth:
		if version != V5 {
			return Errorf(MalformedPacket, "AUTH is only defined in MQTT 5")
		}
	case Publish:
		qos := (fh.Flags >> 1) & 3
		if qos == 3 {
			return Errorf(MalformedPacket, "publish qos 3")
		}
		if qos == 0 && fh.Flags&0x08 != 0 {
			return Errorf(MalformedPacket, "dup flag set on qos 0 publish")
		}
		return nil
	case Pubrel, Subscribe, Unsubscribe:
		if fh.Flags != 0x02 {
			return Errorf(MalformedPacket, "fixed header flags must be 0010")
		}
		return nil
	}
	if fh.Flags != 0 {
		return Errorf(MalformedPacket, "fixed header flags must be 0000")
	}
	if (fh.Type == Pingreq || fh.Type == Pingresp) && fh.Remaining != 0 {
		return Errorf(MalformedPacket, "ping packets have no body")
	}
	return nil
}

func (r *reader) connect(p *Packet) error {
	c := &p.Connect
	c.ProtocolName = r.str()
	c.ProtocolVersion = r.u8()
	if r.err != nil {
		return r.err
	}
	switch {
	case c.ProtocolName == "MQTT" && (c.ProtocolVersion == V311 || c.ProtocolVersion == V5):
	case c.ProtocolName == "MQIsdp" && c.ProtocolVersion == V31:
	case c.ProtocolName == "MQTT" || c.ProtocolName == "MQIsdp":
		return Errorf(UnsupportedProtocolVersion, "unsupported protocol level")
	default:
		return Errorf(ProtocolError, "unknown protocol name")
	}
	flags := r.u8()
	if flags&0x01 != 0 {
		r.fail(MalformedPacket, "connect reserved flag set")
	}
	c.CleanStart = flags&0x02 != 0
	c.WillFlag = flags&0x04 != 0
	c.WillQoS = (flags >> 3) & 3
	c.WillRetain = flags&0x20 != 0
	c.PasswordFlag = flags&0x40 != 0
	c.UsernameFlag = flags&0x80 != 0
	if !c.WillFlag && (c.WillQoS != 0 || c.WillRetain) {
		r.fail(MalformedPacket, "will qos or retain set without will flag")
	}
	if c.WillQoS == 3 {
		r.fail(MalformedPacket, "will qos 3")
	}
	if c.ProtocolVersion != V5 && c.PasswordFlag && !c.UsernameFlag {
		r.fail(MalformedPacket, "password without user name")
	}
	c.KeepAlive = r.u16()
	if c.ProtocolVersion == V5 {
		r.properties(&p.Properties, Connect)
		if r.err == nil && p.Properties.Has(PropAuthData) && !p.Properties.Has(PropAuthMethod) {
			r.fail(ProtocolError, "authentication data without method")
		}
	}
	c.ClientID = r.str()
	if c.WillFlag {
		if c.ProtocolVersion == V5 {
			r.properties(&c.WillProperties, Reserved)
		}
		c.WillTopic = r.str()
		if r.err == nil && !validTopicName(c.WillTopic) {
			r.fail(TopicNameInvalid, "will topic is not a valid topic name")
		}
		c.WillPayload = r.binary()
	}
	if c.UsernameFlag {
		c.Username = r.str()
	}
	if c.PasswordFlag {
		c.Password = r.binary()
	}
	return nil
}

func (r *reader) connack(p *Packet, version byte) {
	f := r.u8()
	if f&^0x01 != 0 {
		r.fail(MalformedPacket, "connack reserved flags set")
	}
	p.SessionPresent = f&0x01 != 0
	p.ReasonCode = Code(r.u8())
	if version == V5 {
		r.properties(&p.Properties, Connack)
	}
}

func (r *reader) publish(p *Packet, flags byte, version byte) {
	p.Dup = flags&0x08 != 0
	p.QoS = (flags >> 1) & 3
	p.Retain = flags&0x01 != 0
	p.Topic = r.str()
	if p.QoS > 0 {
		p.PacketID = r.u16()
		if r.err == nil && p.PacketID == 0 {
			r.fail(ProtocolError, "packet identifier 0")
		}
	}
	if version == V5 {
		r.properties(&p.Properties, Publish)
	}
	if r.err != nil {
		return
	}
	if p.Topic == "" {
		if version != V5 || !p.Properties.Has(PropTopicAlias) {
			r.fail(ProtocolError, "empty topic name")
			return
		}
	} else if !validTopicName(p.Topic) {
		r.fail(TopicNameInvalid, "topic name contains wildcards")
		return
	}
	p.Payload = r.b[r.off:len(r.b):len(r.b)]
	r.off = len(r.b)
}

var validAckCodes = [16][]Code{
	Puback:  {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99},
	Pubrec:  {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99},
	Pubrel:  {0x00, 0x92},
	Pubcomp: {0x00, 0x92},
}

func (r *reader) ack(p *Packet, version byte) {
	p.PacketID = r.u16()
	if r.err == nil && p.PacketID == 0 {
		r.fail(ProtocolError, "packet identifier 0")
	}
	if version != V5 || r.remaining() == 0 {
		return
	}
	p.ReasonCode = Code(r.u8())
	if !codeIn(p.ReasonCode, validAckCodes[p.Type]) {
		r.fail(ProtocolError, "invalid reason code for "+p.Type.String())
	}
	if r.remaining() > 0 {
		r.properties(&p.Properties, p.Type)
	}
}

func codeIn(c Code, list []Code) bool {
	for _, v := range list {
		if v == c {
			return true
		}
	}
	return false
}

func (r *reader) subscribe(p *Packet, version byte) {
	p.PacketID = r.u16()
	if r.err == nil && p.PacketID == 0 {
		r.fail(ProtocolError, "packet identifier 0")
	}
	if version == V5 {
		r.properties(&p.Properties, Subscribe)
		if len(p.Properties.SubscriptionIdentifier) > 1 {
			r.fail(ProtocolError, "more than one subscription identifier")
		}
	}
	for r.err == nil && r.remaining() > 0 {
		var s Subscription
		s.Filter = r.str()
		opts := r.u8()
		s.QoS = opts & 0x03
		if s.QoS == 3 {
			r.fail(MalformedPacket, "subscription qos 3")
		}
		if version == V5 {
			if opts&0xC0 != 0 {
				r.fail(MalformedPacket, "subscription options reserved bits set")
			}
			s.NoLocal = opts&0x04 != 0
			s.RetainAsPublished = opts&0x08 != 0
			s.RetainHandling = (opts >> 4) & 0x03
			if s.RetainHandling == 3 {
				r.fail(ProtocolError, "retain handling 3")
			}
		} else if opts&0xFC != 0 {
			r.fail(MalformedPacket, "subscription reserved bits set")
		}
		p.Subscriptions = append(p.Subscriptions, s)
	}
	if r.err == nil && len(p.Subscriptions) == 0 {
		r.fail(ProtocolError, "subscribe without topic filters")
	}
}

func (r *reader) suback(p *Packet, version byte) {
	p.PacketID = r.u16()
	if version == V5 {
		r.properties(&p.Properties, p.Type)
	}
	if p.Type == Unsuback && version != V5 {
		return // v3 UNSUBACK is the packet identifier alone
	}
	for r.err == nil && r.remaining() > 0 {
		p.ReasonCodes = append(p.ReasonCodes, Code(r.u8()))
	}
}

func (r *reader) unsubscribe(p *Packet, version byte) {
	p.PacketID = r.u16()
	if r.err == nil && p.PacketID == 0 {
		r.fail(ProtocolError, "packet identifier 0")
	}
	if version == V5 {
		r.properties(&p.Properties, Unsubscribe)
	}
	for r.err == nil && r.remaining() > 0 {
		p.Filters = append(p.Filters, r.str())
	}
	if r.err == nil && len(p.Filters) == 0 {
		r.fail(ProtocolError, "unsubscribe without topic filters")
	}
}

func (r *reader) disconnect(p *Packet, version byte) {
	if version != V5 {
		if r.remaining() != 0 {
			r.fail(MalformedPacket, "disconnect has no body before MQTT 5")
		}
		return
	}
	if r.remaining() == 0 {
		return
	}
	p.ReasonCode = Code(r.u8())
	if r.remaining() > 0 {
		r.properties(&p.Properties, p.Type)
	}
}

// validTopicName: non-empty, no wildcards. UTF-8 rules are checked by the reader.
func validTopicName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '+' || s[i] == '#' {
			return false
		}
	}
	return true
}
