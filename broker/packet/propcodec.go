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
		p.ReceiveMaximum = r.nonZeroU16(ProtocolError, "receive maximum 0")
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum = r.u16()
	case PropTopicAlias:
		p.TopicAlias = r.nonZeroU16(TopicAliasInvalid, "topic alias 0")
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
	prop(w, p, PropPayloadFormat, p.PayloadFormat, (*writer).u8)
	prop(w, p, PropMessageExpiry, p.MessageExpiry, (*writer).u32)
	prop(w, p, PropContentType, p.ContentType, (*writer).str)
	prop(w, p, PropResponseTopic, p.ResponseTopic, (*writer).str)
	prop(w, p, PropCorrelationData, p.CorrelationData, (*writer).binary)
	for _, id := range p.SubscriptionIdentifier {
		w.u8(byte(PropSubscriptionIdentifier))
		w.varint(int(id))
	}
	prop(w, p, PropSessionExpiry, p.SessionExpiry, (*writer).u32)
	prop(w, p, PropAssignedClientID, p.AssignedClientID, (*writer).str)
	prop(w, p, PropServerKeepAlive, p.ServerKeepAlive, (*writer).u16)
	prop(w, p, PropAuthMethod, p.AuthMethod, (*writer).str)
	prop(w, p, PropAuthData, p.AuthData, (*writer).binary)
	prop(w, p, PropRequestProblemInfo, p.RequestProblemInfo, (*writer).u8)
	prop(w, p, PropWillDelay, p.WillDelay, (*writer).u32)
	prop(w, p, PropRequestResponseInfo, p.RequestResponseInfo, (*writer).u8)
	prop(w, p, PropResponseInfo, p.ResponseInfo, (*writer).str)
	prop(w, p, PropServerReference, p.ServerReference, (*writer).str)
	prop(w, p, PropReasonString, p.ReasonString, (*writer).str)
	prop(w, p, PropReceiveMaximum, p.ReceiveMaximum, (*writer).u16)
	prop(w, p, PropTopicAliasMaximum, p.TopicAliasMaximum, (*writer).u16)
	prop(w, p, PropTopicAlias, p.TopicAlias, (*writer).u16)
	prop(w, p, PropMaximumQoS, p.MaximumQoS, (*writer).u8)
	prop(w, p, PropRetainAvailable, p.RetainAvailable, (*writer).u8)
	for _, u := range p.User {
		w.u8(byte(PropUserProperty))
		w.str(u.Key)
		w.str(u.Value)
	}
	prop(w, p, PropMaximumPacketSize, p.MaximumPacketSize, (*writer).u32)
	prop(w, p, PropWildcardSubAvailable, p.WildcardSubAvailable, (*writer).u8)
	prop(w, p, PropSubIDAvailable, p.SubIDAvailable, (*writer).u8)
	prop(w, p, PropSharedSubAvailable, p.SharedSubAvailable, (*writer).u8)
}

// prop writes property id with its value, put by put, when p has it.
func prop[T any](w *writer, p *Properties, id PropID, v T, put func(*writer, T)) {
	if p.Has(id) {
		w.u8(byte(id))
		put(w, v)
	}
}
