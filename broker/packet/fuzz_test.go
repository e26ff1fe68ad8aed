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

// FuzzDecode feeds arbitrary bytes to the decoder for every protocol version. Whatever
// decodes must re-encode to something that decodes to the same packet; anything else
// must fail with a reason code or an io error, never a panic.
func FuzzDecode(f *testing.F) {
	for _, fx := range packettest.All() {
		f.Add(fx.Version, fx.Raw)
	}
	f.Fuzz(func(t *testing.T, version byte, raw []byte) {
		switch version {
		case 0, pk.V31, pk.V311, pk.V5:
		default:
			version = []byte{0, pk.V31, pk.V311, pk.V5}[version%4]
		}
		p, err := pk.Read(bufio.NewReader(bytes.NewReader(raw)), version, 1<<20)
		if err != nil {
			var code pk.Code
			if !errors.As(err, &code) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error without reason code: %v", err)
			}
			return
		}
		enc := p.Encode(nil, version)
		q, err := pk.Read(bufio.NewReader(bytes.NewReader(enc)), version, 0)
		if err != nil {
			t.Fatalf("re-encoded packet does not decode: %v\n% X", err, enc)
		}
		if !reflect.DeepEqual(normalize(p), normalize(q)) {
			t.Fatalf("round trip changed the packet:\n %#v\n %#v", p, q)
		}
	})
}

// normalize makes nil and empty payloads equal (an empty payload encodes to nothing).
func normalize(p *pk.Packet) *pk.Packet {
	c := *p
	if len(c.Payload) == 0 {
		c.Payload = nil
	}
	return &c
}
