package packet

// decodeProperties reads a property block for packet type t (Reserved: will properties).
func (r *reader) properties(p *Properties, t Type) {
	n := int(r.varint())
	if r.err != nil {
		return
	}
	if r.remaining() < n {
		r.fail(MalformedPacket, "property length exceeds packet")
		return
	}
	end := r.off + n
	sub := reader{b: r.b[:end], off: r.off}
	for sub.err == nil && sub.off < end {
		id := sub.varint()
		if sub.err != nil {
			break
		}
		if id >= uint32(len(propSpecs)) || propSpecs[id].kind == kindNone {
			sub.fail(MalformedPacket, "unknown property identifier")
			break
		}
		spec := propSpecs[id]
		if spec.allowed&(1<<t) == 0 {
			sub.fail(ProtocolError, "property not allowed in this packet")
			break
		}
		pid := PropID(id)
		// User properties and subscription identifiers are tracked by their slices;
		// SUBSCRIBE's single identifier is checked by the caller.
		if pid != PropUserProperty && pid != PropSubscriptionIdentifier {
			if p.Has(pid) {
				sub.fail(ProtocolError, "property included more than once")
				break
			}
			p.Set(pid)
		}
		sub.property(p, pid)
	}
	if sub.err != nil {
		r.err = sub.err
		return
	}
	r.off = end
}

func (r *reader) property(p *Properties, id PropID) {
	switch id {
	case PropPayloadFormat:
		p.PayloadFormat = r.bit("payload format indicator")
	case PropMessageExpiry:
		p.MessageExpiry = r.u32()
	case PropContentType:
		p.ContentType = r.str()
	case PropResponseTopic:
		p.ResponseTopic = r.str()
	case PropCorrelationData:
		p.CorrelationData = r.binary()
	case PropSubscriptionIdentifier:
		v := r.varint()
		if r.err == nil && v == 0 {
			r.fail(ProtocolError, "subscription identifier 0")
		}
		p.SubscriptionIdentifier = append(p.SubscriptionIdentifier, v)
	case PropSessionExpiry:
		p.SessionExpiry = r.u32()
	case PropAssignedClientID:
		p.AssignedClientID = r.str()
	case PropServerKeepAlive:
		p.ServerKeepAlive = r.u16()
	case PropAuthMethod:
		p.AuthMethod = r.str()
	case PropAuthData:
		p.AuthData = r.binary()
	case PropRequestProblemInfo:
		p.RequestProblemInfo = r.bit("request problem information")
	case PropWillDelay:
		p.WillDelay = r.u32()
	case PropRequestResponseInfo:
		p.RequestResponseInfo = r.bit("request response information")
	case PropResponseInfo:
		p.ResponseInfo = r.str()
	case PropServerReference:
		p.ServerReference = r.str()
	case PropReasonString:
		p.ReasonString = r.str()
	case PropReceiveMaximum:
		p.ReceiveMaximum = r.u16()
		if r.err == nil && p.ReceiveMaximum == 0 {
			r.fail(ProtocolError, "receive maximum 0")
		}
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum = r.u16()
	case PropTopicAlias:
		p.TopicAlias = r.u16()
		if r.err == nil && p.TopicAlias == 0 {
			r.fail(TopicAliasInvalid, "topic alias 0")
		}
	case PropMaximumQoS:
		p.MaximumQoS = r.bit("maximum qos")
	case PropRetainAvailable:
		p.RetainAvailable = r.u8()
	case PropUserProperty:
		k := r.str()
		v := r.str()
		p.User = append(p.User, UserProperty{Key: k, Value: v})
	case PropMaximumPacketSize:
		p.MaximumPacketSize = r.u32()
		if r.err == nil && p.MaximumPacketSize == 0 {
			r.fail(ProtocolError, "maximum packet size 0")
		}
	case PropWildcardSubAvailable:
		p.WildcardSubAvailable = r.u8()
	case PropSubIDAvailable:
		p.SubIDAvailable = r.u8()
	case PropSharedSubAvailable:
		p.SharedSubAvailable = r.u8()
	}
}

// properties writes the property block (length prefix included).
func (w *writer) properties(p *Properties) {
	c := writer{counting: true}
	c.propertyBody(p)
	w.varint(c.n)
	if w.counting {
		w.n += c.n
		return
	}
	w.propertyBody(p)
}

func (w *writer) propertyBody(p *Properties) {
	if p.Has(PropPayloadFormat) {
		w.u8(byte(PropPayloadFormat))
		w.u8(p.PayloadFormat)
	}
	if p.Has(PropMessageExpiry) {
		w.u8(byte(PropMessageExpiry))
		w.u32(p.MessageExpiry)
	}
	if p.Has(PropContentType) {
		w.u8(byte(PropContentType))
		w.str(p.ContentType)
	}
	if p.Has(PropResponseTopic) {
		w.u8(byte(PropResponseTopic))
		w.str(p.ResponseTopic)
	}
	if p.Has(PropCorrelationData) {
		w.u8(byte(PropCorrelationData))
		w.binary(p.CorrelationData)
	}
	for _, id := range p.SubscriptionIdentifier {
		w.u8(byte(PropSubscriptionIdentifier))
		w.varint(int(id))
	}
	if p.Has(PropSessionExpiry) {
		w.u8(byte(PropSessionExpiry))
		w.u32(p.SessionExpiry)
	}
	if p.Has(PropAssignedClientID) {
		w.u8(byte(PropAssignedClientID))
		w.str(p.AssignedClientID)
	}
	if p.Has(PropServerKeepAlive) {
		w.u8(byte(PropServerKeepAlive))
		w.u16(p.ServerKeepAlive)
	}
	if p.Has(PropAuthMethod) {
		w.u8(byte(PropAuthMethod))
		w.str(p.AuthMethod)
	}
	if p.Has(PropAuthData) {
		w.u8(byte(PropAuthData))
		w.binary(p.AuthData)
	}
	if p.Has(PropRequestProblemInfo) {
		w.u8(byte(PropRequestProblemInfo))
		w.u8(p.RequestProblemInfo)
	}
	if p.Has(PropWillDelay) {
		w.u8(byte(PropWillDelay))
		w.u32(p.WillDelay)
	}
	if p.Has(PropRequestResponseInfo) {
		w.u8(byte(PropRequestResponseInfo))
		w.u8(p.RequestResponseInfo)
	}
	if p.Has(PropResponseInfo) {
		w.u8(byte(PropResponseInfo))
		w.str(p.ResponseInfo)
	}
	if p.Has(PropServerReference) {
		w.u8(byte(PropServerReference))
		w.str(p.ServerReference)
	}
	if p.Has(PropReasonString) {
		w.u8(byte(PropReasonString))
		w.str(p.ReasonString)
	}
	if p.Has(PropReceiveMaximum) {
		w.u8(byte(PropReceiveMaximum))
		w.u16(p.ReceiveMaximum)
	}
	if p.Has(PropTopicAliasMaximum) {
		w.u8(byte(PropTopicAliasMaximum))
		w.u16(p.TopicAliasMaximum)
	}
	if p.Has(PropTopicAlias) {
		w.u8(byte(PropTopicAlias))
		w.u16(p.TopicAlias)
	}
	if p.Has(PropMaximumQoS) {
		w.u8(byte(PropMaximumQoS))
		w.u8(p.MaximumQoS)
	}
	if p.Has(PropRetainAvailable) {
		w.u8(byte(PropRetainAvailable))
		w.u8(p.RetainAvailable)
	}
	for _, u := range p.User {
		w.u8(byte(PropUserProperty))
		w.str(u.Key)
		w.str(u.Value)
	}
	if p.Has(PropMaximumPacketSize) {
		w.u8(byte(PropMaximumPacketSize))
		w.u32(p.MaximumPacketSize)
	}
	if p.Has(PropWildcardSubAvailable) {
		w.u8(byte(PropWildcardSubAvailable))
		w.u8(p.WildcardSubAvailable)
	}
	if p.Has(PropSubIDAvailable) {
		w.u8(byte(PropSubIDAvailable))
		w.u8(p.SubIDAvailable)
	}
	if p.Has(PropSharedSubAvailable) {
		w.u8(byte(PropSharedSubAvailable))
		w.u8(p.SharedSubAvailable)
	}
}
