package packet

// Encode appends the wire form of p for protocol version (V31, V311 or V5; CONNECT uses
// its own Connect.ProtocolVersion) to dst and returns the extended slice. The packet is
// sized first so the body is written once, straight after its fixed header.
func (p *Packet) Encode(dst []byte, version byte) []byte {
	if p.Type == Connect {
		version = p.Connect.ProtocolVersion
	}
	c := writer{counting: true}
	p.body(&c, version)
	w := writer{buf: dst}
	w.u8(byte(p.Type)<<4 | p.flags())
	w.varint(c.n)
	if cap(w.buf)-len(w.buf) < c.n {
		grown := make([]byte, len(w.buf), len(w.buf)+c.n)
		copy(grown, w.buf)
		w.buf = grown
	}
	p.body(&w, version)
	return w.buf
}

// Size returns the encoded length of p for version.
func (p *Packet) Size(version byte) int {
	if p.Type == Connect {
		version = p.Connect.ProtocolVersion
	}
	c := writer{counting: true}
	p.body(&c, version)
	return 1 + VarintLen(c.n) + c.n
}

func (p *Packet) flags() byte {
	switch p.Type {
	case Publish:
		var f byte
		if p.Dup {
			f |= 0x08
		}
		f |= p.QoS << 1
		if p.Retain {
			f |= 0x01
		}
		return f
	case Pubrel, Subscribe, Unsubscribe:
		return 0x02
	}
	return 0
}

func (p *Packet) body(w *writer, version byte) {
	switch p.Type {
	case Connect:
		p.connectBody(w)
	case Connack:
		if p.SessionPresent {
			w.u8(1)
		} else {
			w.u8(0)
		}
		w.u8(byte(p.ReasonCode))
		if version == V5 {
			w.properties(&p.Properties)
		}
	case Publish:
		w.str(p.Topic)
		if p.QoS > 0 {
			w.u16(p.PacketID)
		}
		if version == V5 {
			w.properties(&p.Properties)
		}
		w.raw(p.Payload)
	case Puback, Pubrec, Pubrel, Pubcomp:
		w.u16(p.PacketID)
		if version == V5 {
			p.reasonAndProps(w)
		}
	case Subscribe:
		w.u16(p.PacketID)
		if version == V5 {
			w.properties(&p.Properties)
		}
		for _, s := range p.Subscriptions {
			w.str(s.Filter)
			opts := s.QoS
			if version == V5 {
				if s.NoLocal {
					opts |= 0x04
				}
				if s.RetainAsPublished {
					opts |= 0x08
				}
				opts |= s.RetainHandling << 4
			}
			w.u8(opts)
		}
	case Suback, Unsuback:
		w.u16(p.PacketID)
		if version == V5 {
			w.properties(&p.Properties)
		}
		if p.Type == Suback || version == V5 {
			for _, c := range p.ReasonCodes {
				w.u8(byte(c))
			}
		}
	case Unsubscribe:
		w.u16(p.PacketID)
		if version == V5 {
			w.properties(&p.Properties)
		}
		for _, f := range p.Filters {
			w.str(f)
		}
	case Disconnect, Auth:
		if version == V5 {
			p.reasonAndProps(w)
		}
	}
}

// reasonAndProps writes the v5 short forms: nothing for success without properties.
func (p *Packet) reasonAndProps(w *writer) {
	if p.ReasonCode == Success && p.Properties.Empty() {
		return
	}
	w.u8(byte(p.ReasonCode))
	if !p.Properties.Empty() {
		w.properties(&p.Properties)
	}
}

func (p *Packet) connectBody(w *writer) {
	c := &p.Connect
	name := c.ProtocolName
	if name == "" {
		name = "MQTT"
		if c.ProtocolVersion == V31 {
			name = "MQIsdp"
		}
	}
	w.str(name)
	w.u8(c.ProtocolVersion)
	var f byte
	if c.CleanStart {
		f |= 0x02
	}
	if c.WillFlag {
		f |= 0x04 | c.WillQoS<<3
		if c.WillRetain {
			f |= 0x20
		}
	}
	if c.PasswordFlag {
		f |= 0x40
	}
	if c.UsernameFlag {
		f |= 0x80
	}
	w.u8(f)
	w.u16(c.KeepAlive)
	if c.ProtocolVersion == V5 {
		w.properties(&p.Properties)
	}
	w.str(c.ClientID)
	if c.WillFlag {
		if c.ProtocolVersion == V5 {
			w.properties(&c.WillProperties)
		}
		w.str(c.WillTopic)
		w.binary(c.WillPayload)
	}
	if c.UsernameFlag {
		w.str(c.Username)
	}
	if c.PasswordFlag {
		w.binary(c.Password)
	}
}
