package server_test

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// Integration tests of MQTT 3.1.1 (and 3.1) behavior against the real server, driven by
// the Eclipse Paho Go client over TCP and WebSocket, and by the raw packet client where
// a test needs to stop a flow at an exact packet.

// v3Wait bounds every wait for something the broker should do promptly.
const v3Wait = 5 * time.Second

// v3Client is a Paho MQTT 3.1.1 client whose messages, from every subscription, arrive
// on msgs in the order the broker sent them.
type v3Client struct {
	mqtt.Client
	t              testing.TB
	id             string
	msgs           chan mqtt.Message
	lost           chan error
	sessionPresent bool
}

// v3Dial connects a Paho client to url (tcp:// or ws://). configure may adjust the
// options (will, protocol version) before connecting. The client is disconnected when
// the test ends.
func v3Dial(t testing.TB, url, id string, clean bool, configure func(*mqtt.ClientOptions)) *v3Client {
	t.Helper()
	c := &v3Client{t: t, id: id, msgs: make(chan mqtt.Message, 4096), lost: make(chan error, 1)}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(v3Wait).SetKeepAlive(30 * time.Second).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.msgs <- m }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case c.lost <- err:
			default:
			}
		})
	if configure != nil {
		configure(opts)
	}
	c.Client = mqtt.NewClient(opts)
	tok := c.Connect()
	v3Await(t, tok, "connect "+id)
	ct, ok := tok.(*mqtt.ConnectToken)
	if !ok {
		t.Fatalf("connect returned a %T", tok)
	}
	c.sessionPresent = ct.SessionPresent()
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(50)
		}
	})
	return c
}

// v3Await waits for a Paho token and fails the test on timeout or error.
func v3Await(t testing.TB, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(v3Wait) {
		t.Fatalf("%s: no answer within %v", what, v3Wait)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// sub subscribes (without a per-route handler, so every message goes to msgs exactly
// once) and checks the granted QoS.
func (c *v3Client) sub(filter string, qos byte) {
	c.t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	v3Await(c.t, tok, c.id+" subscribe "+filter)
	// Paho keys the result by the filter without a $share/{group}/ prefix.
	st, ok := tok.(*mqtt.SubscribeToken)
	if !ok {
		c.t.Fatalf("subscribe returned a %T", tok)
	}
	res := st.Result()
	if len(res) != 1 {
		c.t.Fatalf("%s subscribe %s: results %v", c.id, filter, res)
	}
	for _, got := range res {
		if got != qos {
			c.t.Fatalf("%s subscribe %s: granted 0x%02X, want %d", c.id, filter, got, qos)
		}
	}
}

// pub publishes and waits until the flow for its QoS completed.
func (c *v3Client) pub(topic string, qos byte, retain bool, payload string) {
	c.t.Helper()
	v3Await(c.t, c.Publish(topic, qos, retain, payload), c.id+" publish "+topic)
}

// next returns the next message or fails the test.
func (c *v3Client) next() mqtt.Message {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(v3Wait):
		c.t.Fatalf("%s: no message within %v", c.id, v3Wait)
		return nil
	}
}

// until returns the messages received before the first one on topic sentinel, which
// the broker queued after everything the test is interested in.
func (c *v3Client) until(sentinel string) []mqtt.Message {
	c.t.Helper()
	var got []mqtt.Message
	for {
		m := c.next()
		if m.Topic() == sentinel {
			return got
		}
		got = append(got, m)
	}
}

// v3Retained returns the retained messages a new subscription to filter with qos
// receives. A second subscription, to a retained sentinel of its own, is handled by
// the broker after the first, so its message marks the end of the first's.
func v3Retained(t testing.TB, b *broker, id, filter string, qos byte) []mqtt.Message {
	t.Helper()
	c := v3Dial(t, "tcp://"+b.TCPAddr, id, true, nil)
	defer c.Disconnect(50)
	sentinel := "zz-sentinel/" + id
	c.pub(sentinel, 1, true, "end")
	c.sub(filter, qos)
	c.sub(sentinel, 0)
	got := c.until(sentinel)
	c.pub(sentinel, 1, true, "") // leave no trace
	return got
}

// v3WaitConnected waits until the broker counts n connected clients: a dropped
// connection has then been fully processed (will published, session detached).
func v3WaitConnected(t testing.TB, b *broker, n int64) {
	t.Helper()
	eventually(t, v3Wait, fmt.Sprintf("%d connected clients", n), func() bool {
		return b.Stats().ClientsConnected == n
	})
}

// v3RawSubscribe subscribes a raw client (packet id 1) and checks the SUBACK.
func v3RawSubscribe(t testing.TB, c *rawClient, filter string, qos byte) {
	const id = 1
	t.Helper()
	c.send(&packet.Packet{Type: packet.Subscribe, PacketID: id,
		Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}})
	ack := c.expect(packet.Suback)
	if ack.PacketID != id || len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != packet.Code(qos) {
		t.Fatalf("SUBACK %+v for %s qos %d", ack, filter, qos)
	}
}

// v3RawExpect reads the next packet and checks its type and packet identifier.
func v3RawExpect(t testing.TB, c *rawClient, typ packet.Type, id uint16) *packet.Packet {
	t.Helper()
	p := c.expect(typ)
	if p.PacketID != id {
		t.Fatalf("%s with packet id %d, want %d", typ, p.PacketID, id)
	}
	return p
}

// v3RawConnect dials and connects a v3.1.1 raw client, checking CONNACK's return code
// and session present flag.
func v3RawConnect(t testing.TB, b *broker, id string, clean bool, keepAlive uint16, wantPresent bool) *rawClient {
	t.Helper()
	c := dialRaw(t, b.TCPAddr, packet.V311)
	ack := c.connect(id, clean, keepAlive, nil)
	if ack.ReasonCode != 0 || ack.SessionPresent != wantPresent {
		t.Fatalf("%s CONNACK: code 0x%02X session present %v, want 0x00 and %v",
			id, byte(ack.ReasonCode), ack.SessionPresent, wantPresent)
	}
	return c
}

func v3Transports(b *broker) map[string]string {
	return map[string]string{"tcp": "tcp://" + b.TCPAddr, "ws": b.WSURL}
}

// v3OfflineSubscriber leaves a persistent session (clean session false) subscribed
// to filter at QoS 1 and offline: it connects, subscribes, disconnects and waits
// until no client is connected.
func v3OfflineSubscriber(t testing.TB, b *broker, id, filter string) {
	t.Helper()
	sub := v3RawConnect(t, b, id, false, 0, false)
	v3RawSubscribe(t, sub, filter, 1)
	sub.send(&packet.Packet{Type: packet.Disconnect})
	expectClosed(t, sub, v3Wait)
	v3WaitConnected(t, b, 0)
}
