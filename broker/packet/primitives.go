package packet

import (
	"encoding/binary"
	"unicode/utf8"
)

// reader decodes the primitive data types of section 1.5 from a packet body. The first
// failure sticks in err so callers check once per packet.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(code Code, msg string) {
	if r.err == nil {
		r.err = Errorf(code, msg)
	}
}

func (r *reader) remaining() int { return len(r.b) - r.off }

// bit reads a byte that must be 0 or 1 (a property such as the payload format
// indicator); any other value is a protocol error naming what.
func (r *reader) bit(what string) byte {
	v := r.u8()
	if v > 1 {
		r.fail(ProtocolError, what+" must be 0 or 1")
	}
	return v
}

// nonZeroU16 reads a two-byte integer that must not be 0; 0 fails with code and why.
func (r *reader) nonZeroU16(code Code, why string) uint16 {
	v := r.u16()
	if r.err == nil && v == 0 {
		r.fail(code, why)
	}
	return v
}

func (r *reader) u8() byte {
	if r.err != nil {
		return 0
	}
	if r.remaining() < 1 {
		r.fail(MalformedPacket, "packet too short")
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *reader) u16() uint16 {
	if r.err != nil {
		return 0
	}
	if r.remaining() < 2 {
		r.fail(MalformedPacket, "packet too short")
		return 0
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v
}

func (r *reader) u32() uint32 {
	if r.err != nil {
		return 0
	}
	if r.remaining() < 4 {
		r.fail(MalformedPacket, "packet too short")
		return 0
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) varint() uint32 {
	if r.err != nil {
		return 0
	}
	v, n, err := DecodeVarint(r.b[r.off:])
	if err != nil {
		r.fail(MalformedPacket, "bad variable byte integer")
		return 0
	}
	r.off += n
	return v
}

func (r *reader) binary() []byte {
	n := int(r.u16())
	if r.err != nil {
		return nil
	}
	if r.remaining() < n {
		r.fail(MalformedPacket, "length exceeds packet")
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

func (r *reader) str() string {
	b := r.binary()
	if r.err != nil {
		return ""
	}
	if !ValidUTF8(b) {
		r.fail(MalformedPacket, "invalid UTF-8 string")
		return ""
	}
	return string(b)
}

// ValidUTF8 reports whether b is a well-formed UTF-8 string as MQTT defines it: valid
// UTF-8 (which excludes surrogates) and no U+0000.
func ValidUTF8(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] == 0 {
			return false
		}
		if b[i] >= utf8.RuneSelf {
			return utf8.Valid(b[i:]) && !containsZero(b[i:])
		}
	}
	return true
}

func containsZero(b []byte) bool {
	for _, c := range b {
		if c == 0 {
			return true
		}
	}
	return false
}

// ValidUTF8String is ValidUTF8 for strings.
func ValidUTF8String(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return false
		}
		if s[i] >= utf8.RuneSelf {
			rest := s[i:]
			if !utf8.ValidString(rest) {
				return false
			}
			for j := 0; j < len(rest); j++ {
				if rest[j] == 0 {
					return false
				}
			}
			return true
		}
	}
	return true
}

// DecodeVarint decodes a variable byte integer, returning its value and length.
func DecodeVarint(b []byte) (uint32, int, error) {
	var v uint32
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, Errorf(MalformedPacket, "truncated variable byte integer")
		}
		v |= uint32(b[i]&0x7F) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, Errorf(MalformedPacket, "variable byte integer longer than 4 bytes")
}

// VarintLen returns the encoded length of v.
func VarintLen(v int) int {
	switch {
	case v < 128:
		return 1
	case v < 16384:
		return 2
	case v < 2097152:
		return 3
	default:
		return 4
	}
}

// AppendVarint appends v as a variable byte integer.
func AppendVarint(dst []byte, v int) []byte {
	for {
		b := byte(v & 0x7F)
		v >>= 7
		if v > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if v == 0 {
			return dst
		}
	}
}

// writer appends primitives. With counting set it only adds up lengths, so one
// function both sizes and encodes a packet.
type writer struct {
	buf      []byte
	n        int
	counting bool
}

func (w *writer) u8(v byte) {
	if w.counting {
		w.n++
		return
	}
	w.buf = append(w.buf, v)
}

func (w *writer) u16(v uint16) {
	if w.counting {
		w.n += 2
		return
	}
	w.buf = append(w.buf, byte(v>>8), byte(v))
}

func (w *writer) u32(v uint32) {
	if w.counting {
		w.n += 4
		return
	}
	w.buf = append(w.buf, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func (w *writer) varint(v int) {
	if w.counting {
		w.n += VarintLen(v)
		return
	}
	w.buf = AppendVarint(w.buf, v)
}

func (w *writer) str(s string) {
	if w.counting {
		w.n += 2 + len(s)
		return
	}
	w.buf = append(w.buf, byte(len(s)>>8), byte(len(s)))
	w.buf = append(w.buf, s...)
}

func (w *writer) binary(b []byte) {
	if w.counting {
		w.n += 2 + len(b)
		return
	}
	w.buf = append(w.buf, byte(len(b)>>8), byte(len(b)))
	w.buf = append(w.buf, b...)
}

func (w *writer) raw(b []byte) {
	if w.counting {
		w.n += len(b)
		return
	}
	w.buf = append(w.buf, b...)
}
