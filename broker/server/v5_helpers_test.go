package server_test

// Integration tests of the MQTT 5 features with a real v5 client library
// (github.com/eclipse/paho.golang) over real sockets, TCP and WebSocket. Where paho
// cannot express or observe something (server DISCONNECT reason codes, Receive Maximum,
// server-to-client topic aliases, several subscription identifiers in one PUBLISH),
// the packet-level raw client of rawclient_test.go is used.
//
// Negative assertions ("X is not delivered") use a sentinel where they can: a later
// message that the broker queues behind X on the same session, so receiving the
// sentinel first proves X was never queued. Time-based features (expiry, will delay,
// keepalive) are observed with deadlines, never with sleeps.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// waitFor bounds every wait for something the broker should do promptly.
const waitFor = 5 * time.Second

// transport is one way of reaching a broker; the main cases run over each.
type transport struct {
	name string
	dial func(t testing.TB, b *broker) net.Conn
}

var transports = []transport{
	{name: "tcp", dial: func(t testing.TB, b *broker) net.Conn {
		t.Helper()
		conn, err := net.DialTimeout("tcp", b.TCPAddr, waitFor)
		if err != nil {
			t.Fatalf("dial tcp: %v", err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}},
	{name: "ws", dial: func(t testing.TB, b *broker) net.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, b.WSURL, &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			t.Fatalf("dial websocket: %v", err)
		}
		conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
		t.Cleanup(func() { _ = conn.Close() })
		return atomicWrites(t, conn)
	}},
}

// atomicWrites puts a loopback TCP pair in front of inner and pumps bytes both ways.
// paho.golang v0.23.0 writes one packet with several Write calls (net.Buffers) and from
// more than one goroutine (PUBLISH from the caller, PUBREL/PUBCOMP from its reader, acks
// from its router), so on a net.Conn without writev, such as a WebSocket, packets
// interleave and the broker rightly rejects the stream as malformed. A TCP socket
// writes each net.Buffers with one locked writev, keeping every packet whole; the
// broker still receives the byte stream over the WebSocket.
func atomicWrites(t testing.TB, inner net.Conn) net.Conn {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	client, err := net.DialTimeout("tcp", l.Addr().String(), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	pumped, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = io.Copy(inner, pumped)
		_ = inner.Close()
	}()
	go func() {
		_, _ = io.Copy(pumped, inner)
		_ = pumped.Close()
	}()
	t.Cleanup(func() {
		_ = client.Close()
		_ = pumped.Close()
	})
	return client
}

// tcpTransport is for the time-based cases, which do not depend on the transport.
var tcpTransport = transports[0]

// v5Client is a connected paho v5 client that records the PUBLISH packets it receives.
type v5Client struct {
	*paho.Client
	Connack          *paho.Connack
	msgs             chan *paho.Publish
	serverDisconnect chan *paho.Disconnect
}

// connect dials b over tr and connects a paho client with cp; it fails the test when
// the connection is refused. The client disconnects when the test ends.
func (tr transport) connect(t testing.TB, b *broker, cp *paho.Connect) *v5Client {
	t.Helper()
	c, code := v5Connect(t, tr, b, cp)
	if c == nil {
		t.Fatalf("connect %q over %s: CONNACK 0x%02X", cp.ClientID, tr.name, code)
	}
	return c
}

// next returns the next received message or fails the test.
func (c *v5Client) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.msgs:
		return p
	case <-time.After(waitFor):
		t.Fatalf("%s: no message within %v", c.ClientID(), waitFor)
		return nil
	}
}

// nextPayload returns the payload of the next received message.
func (c *v5Client) nextPayload(t testing.TB) string {
	t.Helper()
	return string(c.next(t).Payload)
}

// expectNone fails if a message arrives within window.
func (c *v5Client) expectNone(t testing.TB, window time.Duration) {
	t.Helper()
	select {
	case p := <-c.msgs:
		t.Fatalf("%s: unexpected message on %q: %q", c.ClientID(), p.Topic, p.Payload)
	case <-time.After(window):
	}
}

// publish sends p and fails the test unless it is acknowledged without error.
func (c *v5Client) publish(t testing.TB, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	resp, err := c.tryPublish(p)
	if err != nil {
		t.Fatalf("%s: publish to %q: %v", c.ClientID(), p.Topic, err)
	}
	return resp
}

func (c *v5Client) tryPublish(p *paho.Publish) (*paho.PublishResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return c.Publish(ctx, p)
}

// subscribe sends one SUBSCRIBE with opts (and subscription identifier id when
// non-zero) and fails the test unless every filter is granted.
func (c *v5Client) subscribe(t testing.TB, id int, opts ...paho.SubscribeOptions) {
	t.Helper()
	s := &paho.Subscribe{Subscriptions: opts}
	if id != 0 {
		s.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: &id}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.Subscribe(ctx, s); err != nil {
		t.Fatalf("%s: subscribe %+v: %v", c.ClientID(), opts, err)
	}
}

// barrier makes a round trip through the broker's reader of this connection: once it
// returns, everything the broker does while handling earlier packets of this client
// (such as queuing retained messages after a SUBSCRIBE) is done.
func (c *v5Client) barrier(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"barrier/never-subscribed"}}); err != nil {
		t.Fatalf("%s: barrier: %v", c.ClientID(), err)
	}
}

func msg(topic string, qos byte, payload string) *paho.Publish {
	return &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)}
}

func sub(filter string, qos byte) paho.SubscribeOptions {
	return paho.SubscribeOptions{Topic: filter, QoS: qos}
}

func ptr[T any](v T) *T { return &v }

// --- raw client helpers (TCP) ---

// expectServerDisconnect asserts that the server sends DISCONNECT with code as its last
// packet and closes the connection within timeout.
func expectServerDisconnect(t testing.TB, rc *rawClient, code packet.Code, timeout time.Duration) {
	t.Helper()
	got := expectClosed(t, rc, timeout)
	if len(got) != 1 || got[0].Type != packet.Disconnect {
		t.Fatalf("before the close got %s, want exactly one DISCONNECT", describe(got))
	}
	if got[0].ReasonCode != code {
		t.Fatalf("DISCONNECT reason 0x%02X (%v), want 0x%02X (%v)", byte(got[0].ReasonCode), got[0].ReasonCode, byte(code), code)
	}
}

func describe(ps []*packet.Packet) string {
	s := "["
	for i, p := range ps {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s(0x%02X)", p.Type, byte(p.ReasonCode))
	}
	return s + "]"
}

// expectQuiet fails if the server sends anything, or closes, within window.
func expectQuiet(t testing.TB, rc *rawClient, window time.Duration) {
	t.Helper()
	p, err := rc.tryRead(window)
	if err == nil {
		t.Fatalf("unexpected %s (topic %q payload %q)", p.Type, p.Topic, p.Payload)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("connection failed while expecting silence: %v", err)
	}
}

// rawSubscribe sends one SUBSCRIBE (with subscription identifier id when non-zero) and
// waits for its SUBACK.
func rawSubscribe(t testing.TB, rc *rawClient, packetID uint16, id uint32, subs ...packet.Subscription) {
	t.Helper()
	p := &packet.Packet{Type: packet.Subscribe, PacketID: packetID, Subscriptions: subs}
	if id != 0 {
		p.Properties.SubscriptionIdentifier = []uint32{id}
	}
	rc.send(p)
	ack := rc.expect(packet.Suback)
	if ack.PacketID != packetID {
		t.Fatalf("SUBACK for packet %d, want %d", ack.PacketID, packetID)
	}
}

// connectRaw opens a raw v5 TCP connection and connects with props, failing unless
// the CONNACK is a success.
func connectRaw(t testing.TB, b *broker, clientID string, keepAlive uint16, props *packet.Properties) (*rawClient, *packet.Packet) {
	t.Helper()
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	ack := rc.connect(clientID, true, keepAlive, props)
	if ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02X for %q", byte(ack.ReasonCode), clientID)
	}
	return rc, ack
}
