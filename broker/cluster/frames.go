package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// The link protocol's versions. A link starts with the hello exchange in gob, which
// every release speaks; the dialer's hello names the highest version it speaks
// (hello.Proto), the listener's ack the version both will use, and from the next
// frame on both ends use it. A node of a release before versions (no Proto) gets and
// sends gob throughout.
const (
	protoGob    = 0 // every frame gob-encoded (releases before the binary format)
	protoBinary = 2 // frames in the binary format below

	protoLatest = protoBinary
)

// The binary frame format (protoBinary): a 4-byte big-endian length, then the body:
// the kind byte and the kind's fields in a fixed order. Integers are unsigned varints
// (Count: signed), strings and byte slices a varint length and the bytes, lists a
// varint count and the items, booleans one flags byte per frame. No reflection, no
// type descriptors: a forwarded message costs its record plus about 20 bytes. The
// store's record (frame.Msg) has a format of its own and evolves separately.
//
//	fPing, fPong:  -
//	fAck:          Seq, Count
//	fForward:      Seq, MsgID.Origin, MsgID.Seq, Msg, Shared (Group, Filter each)
//	fRoutes:       flags (1: Full), Add, Del (Group, Filter each)
//	fReq:          Seq, flags, Op, Name, Addr, ClusterID, Node, ClientID, Owner, Epoch, Turn, Data
//	fResp:         Seq, flags, Code, Message, ClusterID, Node, Epoch, Index, Turn, Data, Also, Skipped
//
// The hello exchange is never binary.

// maxFrame bounds one binary frame (a route snapshot of a large node, a moved session
// with its queue): what the 4-byte length can say. A reader allocates as the bytes
// arrive (readFrame), so a length alone costs nothing.
const maxFrame = 1<<32 - 1

var (
	errFrame = errors.New("malformed cluster frame")
	// errFrameTooBig: a frame over maxFrame was not written; the link goes on.
	errFrameTooBig = errors.New("cluster frame too big")
)

// request flags.
const (
	rqClean = 1 << iota
	rqCheckOwner
	rqTurns
	rqStale
	rqNonVoter
)

// appendFrame appends f in the binary format.
func appendFrame(b []byte, f *frame) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, f.Kind)
	switch f.Kind {
	case fPing, fPong:
	case fAck:
		b = binary.AppendUvarint(b, f.Seq)
		b = binary.AppendVarint(b, int64(f.Count))
	case fForward:
		b = binary.AppendUvarint(b, f.Seq)
		b = binary.AppendUvarint(b, f.MsgID.Origin)
		b = binary.AppendUvarint(b, f.MsgID.Seq)
		b = appendBytes(b, f.Msg)
		b = appendRoutes(b, f.Shared)
	case fRoutes:
		if f.Routes == nil {
			return b[:start], fmt.Errorf("%w: routes frame without routes", errFrame)
		}
		var flags byte
		if f.Routes.Full {
			flags = 1
		}
		b = append(b, flags)
		b = appendRoutes(b, f.Routes.Add)
		b = appendRoutes(b, f.Routes.Del)
	case fReq:
		r := f.Req
		if r == nil {
			return b[:start], fmt.Errorf("%w: request frame without a request", errFrame)
		}
		b = binary.AppendUvarint(b, f.Seq)
		b = append(b, flag(r.Clean, rqClean)|flag(r.CheckOwner, rqCheckOwner)|flag(r.Turns, rqTurns)|
			flag(r.Stale, rqStale)|flag(r.NonVoter, rqNonVoter))
		for _, s := range [...]string{r.Op, r.Name, r.Addr, r.ClusterID, r.Node, r.ClientID, r.Owner} {
			b = appendString(b, s)
		}
		b = binary.AppendUvarint(b, r.Epoch)
		b = binary.AppendUvarint(b, r.Turn)
		b = appendBytes(b, r.Data)
	case fResp:
		r := f.Resp
		if r == nil {
			return b[:start], fmt.Errorf("%w: response frame without a response", errFrame)
		}
		b = binary.AppendUvarint(b, f.Seq)
		var flags byte
		if r.OK {
			flags = 1
		}
		b = append(b, flags)
		for _, s := range [...]string{r.Code, r.Message, r.ClusterID, r.Node} {
			b = appendString(b, s)
		}
		b = binary.AppendUvarint(b, r.Epoch)
		b = binary.AppendUvarint(b, r.Index)
		b = binary.AppendUvarint(b, r.Turn)
		b = appendBytes(b, r.Data)
		b = appendStrings(b, r.Also)
		b = appendStrings(b, r.Skipped)
	default:
		return b[:start], fmt.Errorf("%w: kind %d has no binary form", errFrame, f.Kind)
	}
	n := len(b) - start - 4
	if n > maxFrame {
		return b[:start], fmt.Errorf("%w: %d bytes, over %d", errFrameTooBig, n, maxFrame)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	return b, nil
}

func flag(on bool, bit byte) byte {
	if on {
		return bit
	}
	return 0
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendRoutes(b []byte, rs []server.Route) []byte {
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		b = appendString(b, r.Group)
		b = appendString(b, r.Filter)
	}
	return b
}

// readFrame reads one binary frame into f (reset first). The frame's byte slices (Msg,
// Data) share one buffer of their own, allocated for this frame: f may keep them.
func readFrame(r io.Reader, f *frame) error {
	*f = frame{}
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n == 0 {
		return fmt.Errorf("%w: length 0", errFrame)
	}
	// Up to readChunk at first, then growing as the bytes arrive: a peer cannot make
	// this node allocate more than a few times what it sends.
	body := make([]byte, 0, min(n, readChunk))
	for len(body) < n {
		if len(body) == cap(body) {
			body = slices.Grow(body, min(n-len(body), max(len(body)/4, readChunk)))
		}
		m, err := r.Read(body[len(body):min(cap(body), n)])
		body = body[:len(body)+m]
		if err != nil && len(body) < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return decodeFrame(body, f)
}

// readChunk is what readFrame allocates before the bytes arrive.
const readChunk = 1 << 20

// decodeFrame decodes a frame's body; f's byte slices alias body.
func decodeFrame(body []byte, f *frame) error {
	d := decoder{b: body}
	f.Kind = d.byte()
	switch f.Kind {
	case fPing, fPong:
	case fAck:
		f.Seq = d.uvarint()
		f.Count = int(d.varint())
	case fForward:
		f.Seq = d.uvarint()
		f.MsgID = session.MessageID{Origin: d.uvarint(), Seq: d.uvarint()}
		f.Msg = d.bytes()
		f.Shared = d.routes()
	case fRoutes:
		f.Routes = &routes{Full: d.byte()&1 != 0}
		f.Routes.Add = d.routes()
		f.Routes.Del = d.routes()
	case fReq:
		f.Seq = d.uvarint()
		flags := d.byte()
		r := &request{Clean: flags&rqClean != 0, CheckOwner: flags&rqCheckOwner != 0, Turns: flags&rqTurns != 0,
			Stale: flags&rqStale != 0, NonVoter: flags&rqNonVoter != 0}
		for _, s := range [...]*string{&r.Op, &r.Name, &r.Addr, &r.ClusterID, &r.Node, &r.ClientID, &r.Owner} {
			*s = d.string()
		}
		r.Epoch = d.uvarint()
		r.Turn = d.uvarint()
		r.Data = d.bytes()
		f.Req = r
	case fResp:
		f.Seq = d.uvarint()
		r := &response{OK: d.byte()&1 != 0}
		for _, s := range [...]*string{&r.Code, &r.Message, &r.ClusterID, &r.Node} {
			*s = d.string()
		}
		r.Epoch = d.uvarint()
		r.Index = d.uvarint()
		r.Turn = d.uvarint()
		r.Data = d.bytes()
		r.Also = d.strings()
		r.Skipped = d.strings()
		f.Resp = r
	default:
		return fmt.Errorf("%w: unknown kind %d", errFrame, f.Kind)
	}
	if d.err != nil {
		return fmt.Errorf("%w: kind %d: %w", errFrame, f.Kind, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: kind %d: %d bytes left over", errFrame, f.Kind, len(d.b))
	}
	return nil
}

// decoder takes fields off the front of b; the first error sticks and zero values
// follow it.
type decoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated")

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(errShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length or a list's count of items that take at least minBytes each,
// which the bytes left must be able to hold.
func (d *decoder) count(minBytes int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/minBytes) {
		d.fail(errShort)
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte {
	n := d.count(1)
	if d.err != nil || n == 0 {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) strings() []string {
	n := d.count(1) // a string's length
	if d.err != nil || n == 0 {
		return nil
	}
	out := make([]string, 0, min(n, 1024)) // appends grow it as items decode
	for range n {
		out = append(out, d.string())
	}
	return out
}

func (d *decoder) routes() []server.Route {
	n := d.count(2) // two strings' lengths
	if d.err != nil || n == 0 {
		return nil
	}
	out := make([]server.Route, 0, min(n, 1024)) // appends grow it as items decode
	for range n {
		out = append(out, server.Route{Group: d.string(), Filter: d.string()})
	}
	return out
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}
