package packet_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	pk "github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/packet/packettest"
)

func read(raw []byte, version byte, maxSize uint32) (*pk.Packet, error) {
	return pk.Read(bufio.NewReader(bytes.NewReader(raw)), version, maxSize)
}

func TestDecodeFixtures(t *testing.T) {
	for _, f := range packettest.All() {
		t.Run(f.Name, func(t *testing.T) {
			got, err := read(f.Raw, f.Version, 0)
			if !f.Valid() {
				if err == nil {
					t.Fatalf("decoded %+v, want error %v", got, f.Err)
				}
				if !errors.Is(err, f.Err) {
					t.Fatalf("error %v (code 0x%02X), want %v (0x%02X)", err, byte(pk.CodeOf(err)), f.Err, byte(f.Err))
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, f.Packet) {
				t.Fatalf("decoded\n %#v\nwant\n %#v", got, f.Packet)
			}
		})
	}
}

// TestReadIntoReuses decodes every fixture, valid and malformed, into one reused
// Packet, as a connection's read loop does: each valid one must come out exactly as
// if decoded into a fresh packet, with nothing left over from the packet before.
func TestReadIntoReuses(t *testing.T) {
	var p pk.Packet
	var stream []byte
	var want []packettest.Fixture
	for _, f := range packettest.Valid() {
		if f.Version == pk.V5 {
			stream = append(stream, f.Raw...)
			want = append(want, f)
		}
	}
	br := bufio.NewReader(bytes.NewReader(stream))
	for _, f := range want {
		if err := pk.ReadInto(br, &p, pk.V5, 0); err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		if !reflect.DeepEqual(&p, f.Packet) {
			t.Fatalf("%s: decoded into a reused packet\n %#v\nwant\n %#v", f.Name, &p, f.Packet)
		}
	}
	for _, f := range packettest.Malformed() {
		err := pk.ReadInto(bufio.NewReader(bytes.NewReader(f.Raw)), &p, f.Version, 0)
		if !errors.Is(err, f.Err) {
			t.Fatalf("%s: error %v, want %v", f.Name, err, f.Err)
		}
	}
}

func TestEncodeFixtures(t *testing.T) {
	for _, f := range packettest.Valid() {
		if f.DecodeOnly {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			got := f.Packet.Encode(nil, f.Version)
			if !bytes.Equal(got, f.Raw) {
				t.Fatalf("encoded\n % X\nwant\n % X", got, f.Raw)
			}
			if n := f.Packet.Size(f.Version); n != len(got) {
				t.Fatalf("Size() = %d, encoded %d bytes", n, len(got))
			}
		})
	}
}

// TestRoundTrip re-encodes every valid fixture (decode-only ones too) and decodes again.
func TestRoundTrip(t *testing.T) {
	for _, f := range packettest.Valid() {
		t.Run(f.Name, func(t *testing.T) {
			first, err := read(f.Raw, f.Version, 0)
			if err != nil {
				t.Fatal(err)
			}
			again, err := read(first.Encode([]byte{}, f.Version), f.Version, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(first, again) {
				t.Fatalf("round trip changed the packet:\n %#v\n %#v", first, again)
			}
		})
	}
}

func TestEncodeAppendsToDst(t *testing.T) {
	p := &pk.Packet{Type: pk.Publish, Topic: "t", Payload: []byte("x")}
	dst := []byte{0xAA}
	out := p.Encode(dst, pk.V311)
	if out[0] != 0xAA || !bytes.Equal(out[1:], []byte{0x30, 4, 0, 1, 't', 'x'}) {
		t.Fatalf("got % X", out)
	}
}

func TestMaximumPacketSize(t *testing.T) {
	raw := (&pk.Packet{Type: pk.Publish, Topic: "abc", Payload: make([]byte, 100)}).Encode(nil, pk.V311)
	if _, err := read(raw, pk.V311, uint32(len(raw))); err != nil {
		t.Fatalf("packet of exactly the limit refused: %v", err)
	}
	if _, err := read(raw, pk.V311, uint32(len(raw)-1)); !errors.Is(err, pk.PacketTooLarge) {
		t.Fatalf("err = %v, want PacketTooLarge", err)
	}
}

func TestTruncatedInput(t *testing.T) {
	for _, f := range packettest.Valid() {
		for n := 1; n < len(f.Raw); n++ {
			_, err := read(f.Raw[:n], f.Version, 0)
			if err == nil {
				t.Fatalf("%s: truncated to %d bytes decoded without error", f.Name, n)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, pk.MalformedPacket) && !errors.Is(err, io.EOF) {
				// A cut inside the fixed header's length or body must be an EOF.
				t.Fatalf("%s: truncated to %d: %v", f.Name, n, err)
			}
		}
	}
}

func TestVarint(t *testing.T) {
	for _, v := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, pk.MaxRemainingLength} {
		enc := pk.AppendVarint(nil, v)
		if len(enc) != pk.VarintLen(v) {
			t.Fatalf("%d: len %d, VarintLen %d", v, len(enc), pk.VarintLen(v))
		}
		got, n, err := pk.DecodeVarint(enc)
		if err != nil || int(got) != v || n != len(enc) {
			t.Fatalf("%d: got %d n=%d err=%v", v, got, n, err)
		}
	}
}

func TestValidUTF8(t *testing.T) {
	cases := map[string]bool{"": true, "abc": true, "ä/ö": true, "a\x00": false, "ä\x00": false,
		"\xff": false, "\xed\xa0\x80": false, "\U0001F600": true}
	for s, want := range cases {
		if got := pk.ValidUTF8([]byte(s)); got != want {
			t.Errorf("ValidUTF8(%q) = %v", s, got)
		}
		if got := pk.ValidUTF8String(s); got != want {
			t.Errorf("ValidUTF8String(%q) = %v", s, got)
		}
	}
}

func TestCodeIsError(t *testing.T) {
	err := pk.Errorf(pk.ProtocolError, "x")
	if !errors.Is(err, pk.ProtocolError) || errors.Is(err, pk.MalformedPacket) {
		t.Fatal("errors.Is does not match the wrapped code")
	}
	if pk.CodeOf(err) != pk.ProtocolError || pk.CodeOf(io.EOF) != pk.UnspecifiedError {
		t.Fatal("CodeOf")
	}
	if pk.SessionTakenOver.Error() != "session taken over" {
		t.Fatal(pk.SessionTakenOver.Error())
	}
}

func BenchmarkEncodePublish(b *testing.B) {
	p := &pk.Packet{Type: pk.Publish, QoS: 1, PacketID: 7, Topic: "sensors/room1/temperature", Payload: make([]byte, 64)}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = p.Encode(buf[:0], pk.V5)
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	raw := (&pk.Packet{Type: pk.Publish, QoS: 1, PacketID: 7, Topic: "sensors/room1/temperature", Payload: make([]byte, 64)}).Encode(nil, pk.V5)
	fh := pk.FixedHeader{Type: pk.Publish, Flags: raw[0] & 0x0F, Remaining: len(raw) - 2}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pk.Decode(fh, raw[2:], pk.V5); err != nil {
			b.Fatal(err)
		}
	}
}
