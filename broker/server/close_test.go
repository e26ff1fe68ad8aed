package server_test

import (
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// TestProtocolErrorDisconnectReadableWhileClientWrites: a client that is still
// writing when the server closes its connection for a protocol error (here a QoS 2
// flood beyond Receive Maximum, 0x93) must be able to read the DISCONNECT with the
// reason code. Closing a socket with unread input answers the client's next segment
// with a reset, and a client that sees its write fail reports "connection reset",
// never the reason; so the server half-closes after the DISCONNECT and drains the
// client's input for a bounded time (1 s, 256 KiB) before it closes. The client here
// writes like a single-threaded one: its whole flood, about 120 KiB in 12 writes, then
// it reads.
func TestProtocolErrorDisconnectReadableWhileClientWrites(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{ReceiveMaximum: 3})
	payload := make([]byte, 1000)
	for run := range 10 {
		c, _ := connectRaw(t, b, "flooder", 0, nil)
		id := uint16(0)
		for w := range 12 {
			var burst []byte
			for range 10 {
				id++
				p := &packet.Packet{Type: packet.Publish, QoS: 2, PacketID: id, Topic: "flood", Payload: payload}
				burst = p.Encode(burst, packet.V5)
			}
			_ = c.conn.SetWriteDeadline(time.Now().Add(waitFor))
			if _, err := c.conn.Write(burst); err != nil {
				t.Fatalf("run %d, write %d: the client's write failed before it could read the DISCONNECT: %v", run, w, err)
			}
		}
		var got *packet.Packet
		for got == nil {
			p, err := c.tryRead(waitFor)
			if err != nil {
				t.Fatalf("run %d: reading the server's DISCONNECT: %v", run, err)
			}
			if p.Type == packet.Disconnect {
				got = p
			}
		}
		if got.ReasonCode != packet.ReceiveMaximumExceeded {
			t.Fatalf("run %d: DISCONNECT 0x%02X, want 0x93", run, byte(got.ReasonCode))
		}
		if _, err := c.tryRead(waitFor); err == nil {
			t.Fatalf("run %d: a packet after the DISCONNECT", run)
		}
		_ = c.conn.Close()
	}
}
