package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/packet/packettest"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// The tests in this file feed the broker bad input over real sockets and check three
// things each time: the answer the specification asks for (a v5 DISCONNECT with the
// reason code, or a close), the counters behind $SYS/broker/packets/*, and that the
// broker still serves a fresh client afterwards.

const malTimeout = 5 * time.Second

// TestMalformedFixtures sends every client-to-server packet of the shared malformed
// fixture table to its own broker.
func TestMalformedFixtures(t *testing.T) {
	t.Parallel()
	n := 0
	for _, f := range packettest.Malformed() {
		if !f.ClientToServer {
			continue
		}
		n++
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			before := b.Stats()
			version := f.Version
			if f.Version == 0 {
				version = malConnectFixture(t, b, f)
			} else {
				c := malConnected(t, b, version, "bad", nil)
				c.write(f.Raw)
				malExpectKicked(t, c, f.Err)
			}
			malCounted(t, b, before, f.Err, 1)
			malHealthy(t, b, version)
		})
	}
	if n == 0 {
		t.Fatal("no client-to-server malformed fixtures")
	}
}

// malConnectFixture sends a bad CONNECT as the first packet and checks the answer. It
// returns the protocol version to use for the health check.
func malConnectFixture(t *testing.T, b *broker, f packettest.Fixture) byte {
	t.Helper()
	version := packet.V311
	if malConnectLevel(f.Raw) == packet.V5 {
		version = packet.V5
	}
	c := dialRaw(t, b.TCPAddr, version)
	c.write(f.Raw)
	got := expectClosed(t, c, malTimeout)
	switch {
	case f.Err == packet.UnsupportedProtocolVersion:
		// MQTT-3.1.2-2: CONNACK 0x01 in the v3 format, then close. (The fixture's level
		// is not 5, so the client cannot be expected to read v5.)
		if len(got) != 1 || got[0].Type != packet.Connack || byte(got[0].ReasonCode) != packet.ConnackV3BadProtocolVersion {
			t.Fatalf("got %s, want CONNACK 0x01 then close", malDescribe(got))
		}
	case version == packet.V5:
		// MQTT 5.0 4.13.1: the server MAY send CONNACK with the reason code first.
		if len(got) > 1 || (len(got) == 1 && (got[0].Type != packet.Connack || got[0].ReasonCode != f.Err)) {
			t.Fatalf("got %s, want close, optionally after CONNACK 0x%02X", malDescribe(got), byte(f.Err))
		}
	default:
		// MQTT-3.1.4-1: a v3 server closes without CONNACK on a bad CONNECT.
		if len(got) != 0 {
			t.Fatalf("got %s, want close without a packet", malDescribe(got))
		}
	}
	return version
}

// malConnectLevel returns the protocol level byte of a raw CONNECT (0 if too short).
func malConnectLevel(raw []byte) byte {
	r := bufio.NewReader(bytes.NewReader(raw))
	if _, err := packet.ReadFixedHeader(r, 0); err != nil {
		return 0
	}
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return 0
	}
	if _, err := r.Discard(int(n[0])<<8 | int(n[1])); err != nil {
		return 0
	}
	level, err := r.ReadByte()
	if err != nil {
		return 0
	}
	return level
}

// malCase is bad input on an established connection.
type malCase struct {
	name     string
	versions []byte
	opts     server.Options
	// bad sends the offending input on c, after any valid exchange it needs first.
	bad  func(t *testing.T, c *rawClient)
	want packet.Code
}

// TestMalformedSession sends bad input on an established connection, each case to its
// own broker: v5 clients must get DISCONNECT with the case's reason code, v3.1.1
// clients a close.
func TestMalformedSession(t *testing.T) {
	t.Parallel()
	both := []byte{packet.V311, packet.V5}
	v5 := []byte{packet.V5}
	sendPacket := func(p packet.Packet) func(*testing.T, *rawClient) {
		return func(_ *testing.T, c *rawClient) { c.send(&p) }
	}
	cases := []malCase{
		{
			// MQTT-3.1.0-2: a second CONNECT is a protocol error.
			name: "second CONNECT", versions: both, want: packet.ProtocolError,
			bad: func(_ *testing.T, c *rawClient) {
				c.send(&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{
					ProtocolVersion: c.version, CleanStart: true, ClientID: "bad"}})
			},
		},
		// Packets only a server sends (MQTT 5.0 2.1.2 gives each packet's direction; the
		// wrong one is a protocol error).
		{name: "CONNACK from client", versions: both, want: packet.ProtocolError,
			bad: sendPacket(packet.Packet{Type: packet.Connack})},
		{name: "SUBACK from client", versions: both, want: packet.ProtocolError,
			bad: sendPacket(packet.Packet{Type: packet.Suback, PacketID: 1, ReasonCodes: []packet.Code{0}})},
		{name: "UNSUBACK from client", versions: both, want: packet.ProtocolError,
			bad: sendPacket(packet.Packet{Type: packet.Unsuback, PacketID: 1, ReasonCodes: []packet.Code{0}})},
		{name: "PINGRESP from client", versions: both, want: packet.ProtocolError,
			bad: sendPacket(packet.Packet{Type: packet.Pingresp})},
		{
			// MQTT 5.0 3.2.2.3.6: a packet over the server's Maximum Packet Size gets
			// DISCONNECT 0x95. One of exactly the maximum is accepted.
			name: "PUBLISH over maximum packet size", versions: both, want: packet.PacketTooLarge,
			opts: server.Options{MaxPacketSize: 512},
			bad: func(t *testing.T, c *rawClient) {
				p := malPublishOfSize(t, c.version, 512)
				c.send(p)
				if ack := c.expect(packet.Puback); ack.PacketID != p.PacketID {
					t.Fatalf("PUBACK for %d, want %d", ack.PacketID, p.PacketID)
				}
				c.send(malPublishOfSize(t, c.version, 513))
			},
		},
		{
			// The size check runs on the fixed header: the broker must not wait for
			// (or allocate) 200 MB.
			name: "200 MB remaining length then stall", versions: both, want: packet.PacketTooLarge,
			bad: func(_ *testing.T, c *rawClient) {
				c.write(packet.AppendVarint([]byte{0x30}, 200<<20))
			},
		},
		{
			// MQTT 5.0 3.3.4 (MQTT-3.3.4-7): more unacknowledged QoS 2 PUBLISH packets
			// than the server's Receive Maximum is 0x93.
			name: "QoS 2 flood beyond receive maximum", versions: v5, want: packet.ReceiveMaximumExceeded,
			opts: server.Options{ReceiveMaximum: 3},
			bad: func(t *testing.T, c *rawClient) {
				for id := uint16(1); id <= 4; id++ {
					c.send(&packet.Packet{Type: packet.Publish, QoS: 2, PacketID: id, Topic: "q2", Payload: []byte("x")})
					if id <= 3 {
						if rec := c.expect(packet.Pubrec); rec.PacketID != id || rec.ReasonCode.IsError() {
							t.Fatalf("PUBREC %d reason 0x%02X, want %d success", rec.PacketID, byte(rec.ReasonCode), id)
						}
					}
				}
			},
		},
		{
			// MQTT-3.3.4-6: a PUBLISH from a client must not carry a subscription identifier.
			name: "PUBLISH with subscription identifier", versions: v5, want: packet.ProtocolError,
			bad: sendPacket(packet.Packet{Type: packet.Publish, Topic: "a", Payload: []byte("x"),
				Properties: packet.Properties{SubscriptionIdentifier: []uint32{1}}}),
		},
		{
			// MQTT-3.8.3-4: no local on a shared subscription is a protocol error.
			name: "no local on shared subscription", versions: v5, want: packet.ProtocolError,
			bad: func(t *testing.T, c *rawClient) {
				// The same option on a plain filter is fine.
				c.send(&packet.Packet{Type: packet.Subscribe, PacketID: 1,
					Subscriptions: []packet.Subscription{{Filter: "a/b", QoS: 1, NoLocal: true}}})
				if ack := c.expect(packet.Suback); len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != packet.GrantedQoS1 {
					t.Fatalf("SUBACK %v, want [granted qos 1]", ack.ReasonCodes)
				}
				c.send(&packet.Packet{Type: packet.Subscribe, PacketID: 2,
					Subscriptions: []packet.Subscription{{Filter: "$share/g/a/b", QoS: 1, NoLocal: true}}})
			},
		},
		{
			// MQTT 5.0 4.12: AUTH continues an exchange begun by an Authentication
			// Method in CONNECT; without one it is a protocol error.
			name: "AUTH without authentication method", versions: v5, want: packet.ProtocolError,
			bad: sendPacket(packet.Packet{Type: packet.Auth, ReasonCode: packet.ReAuthenticate,
				Properties: malProps(func(p *packet.Properties) { p.AuthMethod = "SCRAM-SHA-1"; p.Set(packet.PropAuthMethod) })}),
		},
		{
			// MQTT 5.0 3.14.2.2.2: a session expiry > 0 at DISCONNECT after 0 in CONNECT
			// is a protocol error.
			name: "DISCONNECT raising session expiry from 0", versions: v5, want: packet.ProtocolError,
			bad: sendPacket(packet.Packet{Type: packet.Disconnect,
				Properties: malProps(func(p *packet.Properties) { p.SessionExpiry = 60; p.Set(packet.PropSessionExpiry) })}),
		},
	}
	for _, tc := range cases {
		for _, version := range tc.versions {
			t.Run(tc.name+"/"+malVersionName(version), func(t *testing.T) {
				t.Parallel()
				b := startBroker(t, tc.opts)
				c := malConnected(t, b, version, "bad", nil)
				before := b.Stats()
				tc.bad(t, c)
				malExpectKicked(t, c, tc.want)
				malCounted(t, b, before, tc.want, 1)
				malHealthy(t, b, version)
			})
		}
	}
}

// TestMalformedWillAfterProtocolError checks that a connection closed for a protocol
// error publishes its will (MQTT 5.0 3.1.2.5: only DISCONNECT 0x00 discards it).
func TestMalformedWillAfterProtocolError(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	watcher := malConnected(t, b, packet.V5, "watcher", nil)
	malSubscribe(t, watcher, "will/bad")

	c := dialRaw(t, b.TCPAddr, packet.V5)
	c.send(&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V5,
		CleanStart: true, ClientID: "bad", WillFlag: true, WillQoS: 1, WillTopic: "will/bad", WillPayload: []byte("gone")}})
	if ack := c.expect(packet.Connack); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	c.send(&packet.Packet{Type: packet.Disconnect,
		Properties: malProps(func(p *packet.Properties) { p.SessionExpiry = 60; p.Set(packet.PropSessionExpiry) })})
	malExpectKicked(t, c, packet.ProtocolError)
	m := watcher.expect(packet.Publish)
	if m.Topic != "will/bad" || string(m.Payload) != "gone" {
		t.Fatalf("got %s %q, want the will", m.Topic, m.Payload)
	}
}

// TestMalformedReceiveMaximumAfterReconnect: a client whose PUBRECs were lost resends
// its pending QoS 2 PUBLISH packets with DUP after reconnecting (MQTT-4.4.0-1). They
// are the same messages, not new ones, so they do not exceed Receive Maximum; a new
// packet identifier still does.
func TestMalformedReceiveMaximumAfterReconnect(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{ReceiveMaximum: 3})
	persistent := malProps(func(p *packet.Properties) { p.SessionExpiry = 60; p.Set(packet.PropSessionExpiry) })
	publish := func(c *rawClient, id uint16, dup bool) {
		c.send(&packet.Packet{Type: packet.Publish, QoS: 2, PacketID: id, Dup: dup, Topic: "q2", Payload: []byte("x")})
	}

	c := malConnected(t, b, packet.V5, "q2", &persistent)
	for id := uint16(1); id <= 3; id++ {
		publish(c, id, false)
		c.expect(packet.Pubrec)
	}
	_ = c.conn.Close() // the PUBRECs are "lost"

	c = dialRaw(t, b.TCPAddr, packet.V5)
	p := &packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V5, ClientID: "q2"},
		Properties: persistent}
	c.send(p)
	// The old connection may still be closing: takeover or a new attach both keep the session.
	if ack := c.expect(packet.Connack); ack.ReasonCode != packet.Success || !ack.SessionPresent {
		t.Fatalf("CONNACK 0x%02X session present %v, want success with session", byte(ack.ReasonCode), ack.SessionPresent)
	}
	before := b.Stats()
	for id := uint16(1); id <= 3; id++ {
		publish(c, id, true)
		if rec := c.expect(packet.Pubrec); rec.PacketID != id || rec.ReasonCode.IsError() {
			t.Fatalf("PUBREC %d reason 0x%02X for resent %d", rec.PacketID, byte(rec.ReasonCode), id)
		}
	}
	publish(c, 4, false)
	malExpectKicked(t, c, packet.ReceiveMaximumExceeded)
	malCounted(t, b, before, packet.ReceiveMaximumExceeded, 1)
}

// TestMalformedFirstPacket covers connections that never deliver a usable CONNECT.
func TestMalformedFirstPacket(t *testing.T) {
	t.Parallel()
	const connectTimeout = 300 * time.Millisecond
	cases := []struct {
		name  string
		input []byte
		// slow: the broker has to wait for ConnectTimeout; otherwise it must refuse at
		// once, so the broker gets a timeout far longer than the test waits.
		slow bool
		// code is the counter the input must move (0: none).
		code packet.Code
	}{
		{name: "nothing", slow: true},
		{name: "partial CONNECT", input: []byte{0x10, 20, 0, 4, 'M'}, slow: true},
		{name: "fixed header only", input: []byte{0x10}, slow: true},
		{name: "PINGREQ first", input: []byte{0xC0, 0}, code: packet.ProtocolError},
		{name: "PUBLISH first", input: []byte{0x30, 5, 0, 1, 'a', 'h', 'i'}, code: packet.ProtocolError},
		{name: "CONNECT header announcing 200 MB", input: packet.AppendVarint([]byte{0x10}, 200<<20), code: packet.PacketTooLarge},
		{name: "remaining length 5 bytes", input: []byte{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, code: packet.MalformedPacket},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			timeout := connectTimeout
			if !tc.slow {
				timeout = time.Hour
			}
			b := startBroker(t, server.Options{ConnectTimeout: timeout})
			before := b.Stats()
			start := time.Now()
			c := dialRaw(t, b.TCPAddr, packet.V311)
			if len(tc.input) > 0 {
				c.write(tc.input)
			}
			if got := expectClosed(t, c, malTimeout); len(got) != 0 {
				t.Fatalf("got %s, want close without a packet", malDescribe(got))
			}
			if elapsed := time.Since(start); tc.slow && elapsed < connectTimeout {
				t.Fatalf("closed after %v, before the connect timeout %v", elapsed, connectTimeout)
			}
			if tc.code != 0 {
				malCounted(t, b, before, tc.code, 1)
			} else {
				malCounted(t, b, before, 0, 0)
			}
			if st := b.Stats(); st.ClientsTotal != before.ClientsTotal {
				t.Fatalf("ClientsTotal moved from %d to %d", before.ClientsTotal, st.ClientsTotal)
			}
			malHealthy(t, b, packet.V311)
		})
	}
}

// TestMalformedShutdownBeforeConnect: Shutdown closes every connection, including one
// still in the CONNECT phase, instead of waiting for its ConnectTimeout.
func TestMalformedShutdownBeforeConnect(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{ConnectTimeout: time.Hour})
	c := dialRaw(t, b.TCPAddr, packet.V311)
	c.write([]byte{0x10}) // a CONNECT that never completes
	eventually(t, malTimeout, "the broker to read the first byte", func() bool { return b.Stats().BytesReceived > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), malTimeout)
	defer cancel()
	start := time.Now()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v after %v", err, time.Since(start))
	}
	if got := expectClosed(t, c, time.Second); len(got) != 0 {
		t.Fatalf("got %s, want close without a packet", malDescribe(got))
	}
}

// TestMalformedGarbageFirstPacket sends a few hundred random buffers, some shaped like
// a CONNECT, as the first bytes of a connection. Every connection must be closed by
// the broker (at the latest after ConnectTimeout), and the broker must go on serving.
func TestMalformedGarbageFirstPacket(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{ConnectTimeout: 300 * time.Millisecond})
	before := b.Stats()
	bufs := malGarbage(rand.New(rand.NewPCG(1883, 8883)), 300)

	work := make(chan []byte)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for buf := range work {
				if err := malSendGarbage(b.TCPAddr, buf); err != nil {
					t.Errorf("garbage % X: %v", buf[:min(len(buf), 16)], err)
				}
			}
		})
	}
	for _, buf := range bufs {
		work <- buf
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		return
	}
	after := b.Stats()
	bad := after.MalformedPackets + after.ProtocolErrors - before.MalformedPackets - before.ProtocolErrors
	if bad == 0 {
		t.Fatal("no malformed packet or protocol error counted for garbage input")
	}
	if after.ClientsTotal != before.ClientsTotal {
		t.Fatalf("garbage was accepted as CONNECT %d times", after.ClientsTotal-before.ClientsTotal)
	}
	t.Logf("%d buffers: %d malformed, %d protocol errors", len(bufs),
		after.MalformedPackets-before.MalformedPackets, after.ProtocolErrors-before.ProtocolErrors)
	eventually(t, malTimeout, "no connected clients", func() bool { return b.Stats().ClientsConnected == 0 })
	malHealthy(t, b, packet.V5)
}

// malGarbage returns n buffers that do not decode as a valid CONNECT: random bytes,
// random CONNECT bodies, CONNECTs with a real protocol name and random rest, and
// valid CONNECTs with a few bytes changed or cut off.
func malGarbage(rng *rand.Rand, n int) [][]byte {
	var seeds [][]byte
	for _, f := range packettest.Valid() {
		if f.Packet != nil && f.Packet.Type == packet.Connect {
			seeds = append(seeds, f.Raw)
		}
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	var out [][]byte
	for len(out) < n {
		var buf []byte
		switch rng.IntN(4) {
		case 0:
			buf = random(1 + rng.IntN(512))
		case 1:
			body := random(rng.IntN(300))
			buf = append(packet.AppendVarint([]byte{0x10}, len(body)), body...)
		case 2:
			name := []string{"MQTT", "MQIsdp"}[rng.IntN(2)]
			body := append([]byte{0, byte(len(name))}, name...)
			body = append(body, []byte{3, 4, 5, byte(rng.UintN(256))}[rng.IntN(4)])
			body = append(body, random(rng.IntN(64))...)
			buf = append(packet.AppendVarint([]byte{0x10}, len(body)), body...)
		case 3:
			buf = bytes.Clone(seeds[rng.IntN(len(seeds))])
			for range 1 + rng.IntN(3) {
				buf[rng.IntN(len(buf))] = byte(rng.UintN(256))
			}
			if rng.IntN(3) == 0 {
				buf = buf[:rng.IntN(len(buf))+1]
			}
		}
		if malValidConnect(buf) {
			continue // would be served, not refused
		}
		out = append(out, buf)
	}
	return out
}

// malValidConnect reports whether buf starts with a CONNECT the broker would accept.
func malValidConnect(buf []byte) bool {
	// The limit keeps a random header from allocating up to 256 MB.
	p, err := packet.Read(bufio.NewReader(bytes.NewReader(buf)), 0, uint32(len(buf)))
	return err == nil && p.Type == packet.Connect
}

// malSendGarbage writes buf on a new connection and waits for the broker to close it.
// Only the error is returned: it runs outside the test goroutine.
func malSendGarbage(addr string, buf []byte) error {
	conn, err := net.DialTimeout("tcp", addr, malTimeout)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(malTimeout))
	if _, err := conn.Write(buf); err != nil && !isClosed(err) {
		return err
	}
	_, err = io.Copy(io.Discard, conn)
	if err != nil && !isClosed(err) {
		return err // a timeout: the broker kept the connection open
	}
	return nil
}

// malConnected dials and completes CONNECT/CONNACK for version.
func malConnected(t *testing.T, b *broker, version byte, id string, props *packet.Properties) *rawClient {
	t.Helper()
	c := dialRaw(t, b.TCPAddr, version)
	if ack := c.connect(id, true, 0, props); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02X for %s", byte(ack.ReasonCode), id)
	}
	return c
}

// malExpectKicked asserts the broker's answer to a protocol violation after CONNECT:
// DISCONNECT with want and a close in v5 (MQTT-4.13.1), a close alone before v5.
func malExpectKicked(t *testing.T, c *rawClient, want packet.Code) {
	t.Helper()
	got := expectClosed(t, c, malTimeout)
	if c.version != packet.V5 {
		if len(got) != 0 {
			t.Fatalf("got %s, want close without a packet", malDescribe(got))
		}
		return
	}
	if len(got) != 1 || got[0].Type != packet.Disconnect || got[0].ReasonCode != want {
		t.Fatalf("got %s, want DISCONNECT 0x%02X (%v) then close", malDescribe(got), byte(want), want)
	}
}

// malCounted asserts that the broker counted n bad packets of kind code since before:
// MalformedPacket in MalformedPackets, any other code in ProtocolErrors (0: neither).
func malCounted(t *testing.T, b *broker, before server.StatsSnapshot, code packet.Code, n uint64) {
	t.Helper()
	after := b.Stats()
	var wantMalformed, wantProtocol uint64
	switch {
	case code == packet.MalformedPacket:
		wantMalformed = n
	case code != 0:
		wantProtocol = n
	}
	gotMalformed := after.MalformedPackets - before.MalformedPackets
	gotProtocol := after.ProtocolErrors - before.ProtocolErrors
	if gotMalformed != wantMalformed || gotProtocol != wantProtocol {
		t.Fatalf("counted %d malformed, %d protocol errors; want %d, %d",
			gotMalformed, gotProtocol, wantMalformed, wantProtocol)
	}
}

// malHealthy checks that the broker still serves new clients: a QoS 1 round trip
// between two fresh connections of version.
func malHealthy(t *testing.T, b *broker, version byte) {
	t.Helper()
	const topic = "health/check"
	sub := malConnected(t, b, version, "health-sub", nil)
	malSubscribe(t, sub, topic)
	pub := malConnected(t, b, version, "health-pub", nil)
	pub.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 7, Topic: topic, Payload: []byte("ok")})
	if ack := pub.expect(packet.Puback); ack.PacketID != 7 || ack.ReasonCode != packet.Success {
		t.Fatalf("PUBACK %d reason 0x%02X", ack.PacketID, byte(ack.ReasonCode))
	}
	m := sub.expect(packet.Publish)
	if m.Topic != topic || string(m.Payload) != "ok" || m.QoS != 1 {
		t.Fatalf("got %s %q qos %d", m.Topic, m.Payload, m.QoS)
	}
	sub.send(&packet.Packet{Type: packet.Puback, PacketID: m.PacketID})
	for _, c := range []*rawClient{pub, sub} {
		c.send(&packet.Packet{Type: packet.Disconnect})
		if got := expectClosed(t, c, malTimeout); len(got) != 0 {
			t.Fatalf("got %s after DISCONNECT", malDescribe(got))
		}
	}
}

// malSubscribe subscribes c to filter at QoS 1.
func malSubscribe(t *testing.T, c *rawClient, filter string) {
	t.Helper()
	c.send(&packet.Packet{Type: packet.Subscribe, PacketID: 1,
		Subscriptions: []packet.Subscription{{Filter: filter, QoS: 1}}})
	if ack := c.expect(packet.Suback); len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != packet.GrantedQoS1 {
		t.Fatalf("SUBACK %v, want [granted qos 1]", ack.ReasonCodes)
	}
}

// malPublishOfSize returns a QoS 1 PUBLISH whose encoding for version is size bytes.
func malPublishOfSize(t *testing.T, version byte, size int) *packet.Packet {
	t.Helper()
	p := &packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 1, Topic: "big"}
	for n := size; n >= 0; n-- {
		p.Payload = make([]byte, n)
		if s := p.Size(version); s == size {
			return p
		} else if s < size {
			break
		}
	}
	t.Fatalf("no PUBLISH of exactly %d bytes", size)
	return nil
}

func malProps(set func(*packet.Properties)) packet.Properties {
	var p packet.Properties
	set(&p)
	return p
}

func malVersionName(v byte) string {
	if v == packet.V5 {
		return "v5"
	}
	return "v3.1.1"
}

// malDescribe lists packets for failure messages.
func malDescribe(ps []*packet.Packet) string {
	if len(ps) == 0 {
		return "no packet"
	}
	var b bytes.Buffer
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.Type.String())
		if p.Type == packet.Connack || p.Type == packet.Disconnect {
			fmt.Fprintf(&b, " 0x%02X", byte(p.ReasonCode))
		}
	}
	return b.String()
}
