package server_test

import (
	"bufio"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// Tests of the abuse limits (limits.go, ratelimit.go) with raw clients, which see the
// exact reason codes. The process-level acceptance (memory, latency under load, real
// client libraries) is in test/abuse.

// limitCount returns how often limit l refused something (or made a client wait).
func limitCount(b *broker, l server.Limit) uint64 { return b.Stats().Limits[l].Count }

// dialRawWS opens a raw client over the broker's WebSocket listener.
func dialRawWS(t testing.TB, b *broker, version byte) *rawClient {
	t.Helper()
	conn := transports[1].dial(t, b)
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn), version: version}
}

func TestConnectionCaps(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{MaxConnections: 3, MaxConnectionsPerListener: 2})
	tcp1, _ := connectRaw(t, b, "tcp-1", 0, nil)
	connectRaw(t, b, "tcp-2", 0, nil)

	// The TCP listener is full: v5 gets 0x97 with a reason, 3.1.1 gets 0x03, and the
	// connection is closed.
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	if ack := rc.connect("tcp-3", true, 0, nil); ack.ReasonCode != packet.QuotaExceeded || !strings.Contains(ack.Properties.ReasonString, "listener") {
		t.Fatalf("third TCP connection: CONNACK 0x%02X %q, want 0x97 naming the listener", byte(ack.ReasonCode), ack.Properties.ReasonString)
	}
	expectClosed(t, rc, waitFor)
	rc = dialRaw(t, b.TCPAddr, packet.V311)
	if ack := rc.connect("tcp-3-v311", true, 0, nil); ack.ReasonCode != packet.Code(packet.ConnackV3ServerUnavailable) {
		t.Fatalf("third TCP connection (3.1.1): CONNACK return code 0x%02X, want 0x03", byte(ack.ReasonCode))
	}
	expectClosed(t, rc, waitFor)

	// The WebSocket listener has room, the node one more slot.
	ws := dialRawWS(t, b, packet.V5)
	if ack := ws.connect("ws-1", true, 0, nil); ack.ReasonCode != packet.Success {
		t.Fatalf("first WebSocket connection: CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	ws = dialRawWS(t, b, packet.V5)
	if ack := ws.connect("ws-2", true, 0, nil); ack.ReasonCode != packet.QuotaExceeded || !strings.Contains(ack.Properties.ReasonString, "connection limit reached") {
		t.Fatalf("fourth connection: CONNACK 0x%02X %q, want 0x97 for the node", byte(ack.ReasonCode), ack.Properties.ReasonString)
	}
	if n := limitCount(b, server.LimitConnectionsPerListener); n != 2 {
		t.Errorf("connections_per_listener refusals = %d, want 2", n)
	}
	if n := limitCount(b, server.LimitConnections); n != 1 {
		t.Errorf("connections refusals = %d, want 1", n)
	}

	// A slot comes back when a connection ends.
	tcp1.send(&packet.Packet{Type: packet.Disconnect})
	expectClosed(t, tcp1, waitFor)
	eventually(t, waitFor, "a TCP slot to come back", func() bool {
		rc := dialRaw(t, b.TCPAddr, packet.V5)
		return rc.connect("tcp-again", true, 0, nil).ReasonCode == packet.Success
	})
}

func TestTopicLimits(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{MaxTopicLength: 16, MaxTopicLevels: 3})
	watcher, _ := connectRaw(t, b, "watcher", 0, nil)
	rawSubscribe(t, watcher, 1, 0, packet.Subscription{Filter: "#", QoS: 1})

	long := strings.Repeat("x", 17)
	deep := "a/b/c/d"
	pub, _ := connectRaw(t, b, "pub-v5", 0, nil)
	for i, topic := range []string{long, deep} {
		for _, qos := range []byte{1, 2} {
			id := uint16(10*i + int(qos))
			pub.send(&packet.Packet{Type: packet.Publish, QoS: qos, PacketID: id, Topic: topic, Payload: []byte("x")})
			ack := pub.expect([]packet.Type{0, packet.Puback, packet.Pubrec}[qos])
			if ack.ReasonCode != packet.TopicNameInvalid {
				t.Errorf("QoS %d to %q: %s 0x%02X, want 0x90", qos, topic, ack.Type, byte(ack.ReasonCode))
			}
		}
		pub.send(&packet.Packet{Type: packet.Publish, Topic: topic, Payload: []byte("x")}) // QoS 0: dropped
	}
	// MQTT 3.1.1: acknowledged and dropped.
	v3 := v3RawConnect(t, b, "pub-v311", true, 0, false)
	v3.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 7, Topic: deep, Payload: []byte("x")})
	v3RawExpect(t, v3, packet.Puback, 7)
	// The sentinel comes first: nothing over the limits was routed.
	pub.send(&packet.Packet{Type: packet.Publish, Topic: "a/b/c", Payload: []byte("sentinel")})
	if p := watcher.expect(packet.Publish); string(p.Payload) != "sentinel" {
		t.Fatalf("watcher got %q on %q, want the sentinel", p.Payload, p.Topic)
	}
	if got := limitCount(b, server.LimitTopicLength) + limitCount(b, server.LimitTopicLevels); got != 7 {
		t.Errorf("topic limit refusals = %d, want 7", got)
	}

	// Filters: 0x8F in v5, 0x80 in 3.1.1; the others in the same SUBSCRIBE are granted.
	pub.send(&packet.Packet{Type: packet.Subscribe, PacketID: 30, Subscriptions: []packet.Subscription{
		{Filter: "a/b/c/#"}, {Filter: "$share/g/" + long}, {Filter: "a/+/c"}}})
	ack := pub.expect(packet.Suback)
	if want := []packet.Code{packet.TopicFilterInvalid, packet.TopicFilterInvalid, 0}; !slices.Equal(ack.ReasonCodes, want) {
		t.Errorf("v5 SUBACK %v, want %v", ack.ReasonCodes, want)
	}
	v3.send(&packet.Packet{Type: packet.Subscribe, PacketID: 31, Subscriptions: []packet.Subscription{{Filter: long}}})
	if ack := v3RawExpect(t, v3, packet.Suback, 31); ack.ReasonCodes[0] != packet.UnspecifiedError {
		t.Errorf("3.1.1 SUBACK 0x%02X, want 0x80", byte(ack.ReasonCodes[0]))
	}

	// A will topic over the limits is refused at CONNECT.
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	rc.send(&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V5,
		CleanStart: true, ClientID: "will", WillFlag: true, WillTopic: deep, WillPayload: []byte("bye")}})
	if ack := rc.expect(packet.Connack); ack.ReasonCode != packet.TopicNameInvalid {
		t.Errorf("will on %q: CONNACK 0x%02X, want 0x90", deep, byte(ack.ReasonCode))
	}
}

func TestSubscriptionLimit(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{MaxSubscriptions: 2})
	rc, _ := connectRaw(t, b, "subs", 0, nil)
	rc.send(&packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: "a"}, {Filter: "b", QoS: 1}, {Filter: "c"}}})
	ack := rc.expect(packet.Suback)
	if want := []packet.Code{0, 1, packet.QuotaExceeded}; !slices.Equal(ack.ReasonCodes, want) {
		t.Fatalf("SUBACK %v, want %v", ack.ReasonCodes, want)
	}
	if !strings.Contains(ack.Properties.ReasonString, "c") {
		t.Errorf("SUBACK reason string %q does not name the refused filter", ack.Properties.ReasonString)
	}
	// Replacing a subscription does not count; after an unsubscribe there is room.
	rawSubscribe(t, rc, 2, 0, packet.Subscription{Filter: "a", QoS: 2})
	rc.send(&packet.Packet{Type: packet.Unsubscribe, PacketID: 3, Filters: []string{"b"}})
	rc.expect(packet.Unsuback)
	rawSubscribe(t, rc, 4, 0, packet.Subscription{Filter: "c"})
	if got := b.Stats().Subscriptions; got != 2 {
		t.Errorf("%d subscriptions in the broker, want 2", got)
	}

	v3 := v3RawConnect(t, b, "subs-v311", true, 0, false)
	v3.send(&packet.Packet{Type: packet.Subscribe, PacketID: 5, Subscriptions: []packet.Subscription{
		{Filter: "x"}, {Filter: "y"}, {Filter: "z"}}})
	if ack := v3RawExpect(t, v3, packet.Suback, 5); !slices.Equal(ack.ReasonCodes, []packet.Code{0, 0, packet.UnspecifiedError}) {
		t.Errorf("3.1.1 SUBACK %v, want [0 0 0x80]", ack.ReasonCodes)
	}
	if n := limitCount(b, server.LimitSubscriptions); n != 2 {
		t.Errorf("subscriptions refusals = %d, want 2", n)
	}
}

func TestRetainedLimits(t *testing.T) {
	t.Parallel()
	// Two messages, and 40 bytes of topic + payload.
	b := startBroker(t, server.Options{MaxRetained: 2, MaxRetainedBytes: 40})
	live, _ := connectRaw(t, b, "live", 0, nil)
	rawSubscribe(t, live, 1, 0, packet.Subscription{Filter: "r/#", QoS: 2})
	pub, _ := connectRaw(t, b, "pub", 0, nil)
	// The message was delivered either way, so the acknowledgement is a success (a
	// failure code would invite a resend: a duplicate, and for QoS 2 no exactly-once);
	// a reason string says when it was not stored.
	retain := func(id uint16, qos byte, topic, payload string, want packet.Code) {
		t.Helper()
		pub.send(&packet.Packet{Type: packet.Publish, QoS: qos, PacketID: id, Retain: true, Topic: topic, Payload: []byte(payload)})
		ack := pub.expect([]packet.Type{0, packet.Puback, packet.Pubrec}[qos])
		notStored := strings.Contains(ack.Properties.ReasonString, "not retained")
		if ack.ReasonCode != packet.Success || notStored != (want == packet.QuotaExceeded) {
			t.Fatalf("retained %q on %s: %s 0x%02X %q, want success, stored %v", payload, topic, ack.Type, byte(ack.ReasonCode), ack.Properties.ReasonString, want == packet.Success)
		}
		if qos == 2 {
			pub.send(&packet.Packet{Type: packet.Pubrel, PacketID: id})
			pub.expect(packet.Pubcomp)
		}
		// Stored or not, the message is delivered to the live subscriber.
		p := live.expect(packet.Publish)
		if string(p.Payload) != payload {
			t.Fatalf("live subscriber got %q, want %q", p.Payload, payload)
		}
		if p.QoS > 0 {
			live.send(&packet.Packet{Type: []packet.Type{0, packet.Puback, packet.Pubrec}[p.QoS], PacketID: p.PacketID})
			if p.QoS == 2 {
				live.expect(packet.Pubrel)
				live.send(&packet.Packet{Type: packet.Pubcomp, PacketID: p.PacketID})
			}
		}
	}
	retain(1, 1, "r/1", "one", packet.Success)                         // 6 bytes
	retain(2, 1, "r/2", "two", packet.Success)                         // 12 bytes
	retain(3, 1, "r/3", "three", packet.QuotaExceeded)                 // a third message
	retain(4, 2, "r/3", "three", packet.QuotaExceeded)                 // QoS 2: PUBREC 0x00, not stored
	retain(5, 1, "r/1", strings.Repeat("1", 35), packet.QuotaExceeded) // 3+35+6 > 40 bytes
	retain(6, 1, "r/1", strings.Repeat("1", 20), packet.Success)       // replaces: 3+20+6 = 29 bytes
	retain(7, 1, "r/2", "", packet.Success)                            // a clear always passes
	retain(8, 2, "r/3", "three", packet.Success)                       // room again

	fresh, _ := connectRaw(t, b, "fresh", 0, nil)
	rawSubscribe(t, fresh, 1, 0, packet.Subscription{Filter: "r/#"})
	var got []string
	for range 2 {
		p := fresh.expect(packet.Publish)
		got = append(got, p.Topic+"="+string(p.Payload))
	}
	if want := "[r/1=" + strings.Repeat("1", 20) + " r/3=three]"; fmt.Sprint(got) != want {
		t.Errorf("retained messages %v, want %s", got, want)
	}
	if st := b.Stats(); st.Retained != 2 {
		t.Errorf("%d retained messages, want 2", st.Retained)
	}
	if n, m := limitCount(b, server.LimitRetainedMessages), limitCount(b, server.LimitRetainedBytes); n != 2 || m != 1 {
		t.Errorf("retained refusals: %d messages, %d bytes; want 2 and 1", n, m)
	}
}

func TestQueuedBytesLimit(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{MaxQueuedBytes: 1000})
	// A persistent session that is offline queues QoS 1 messages up to 1000 bytes.
	rc := dialRaw(t, b.TCPAddr, packet.V311)
	if ack := rc.connect("offline", false, 0, nil); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	v3RawSubscribe(t, rc, "q", 1)
	rc.send(&packet.Packet{Type: packet.Disconnect})
	expectClosed(t, rc, waitFor)

	pub := v3RawConnect(t, b, "pub", true, 0, false)
	payload := make([]byte, 300)
	for i := range 5 {
		pub.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: uint16(i + 1), Topic: "q", Payload: payload})
		v3RawExpect(t, pub, packet.Puback, uint16(i+1))
	}
	if n := limitCount(b, server.LimitQueuedBytes); n != 2 {
		t.Errorf("queued_bytes drops = %d, want 2 (3 x 300 bytes fit in 1000)", n)
	}
	if n := b.Stats().MessagesDropped; n != 2 {
		t.Errorf("messages dropped = %d, want 2", n)
	}
	rc = dialRaw(t, b.TCPAddr, packet.V311)
	rc.connect("offline", false, 0, nil)
	for range 3 {
		p := rc.expect(packet.Publish)
		rc.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
	}
	expectQuiet(t, rc, 100*time.Millisecond)
}

func TestPublishRateThrottles(t *testing.T) {
	t.Parallel()
	// 20 messages and 2,000 bytes a second: 60 messages of 100 bytes take about 2s.
	b := startBroker(t, server.Options{PublishRate: 20, PublishByteRate: 2000})
	sub, _ := connectRaw(t, b, "sub", 0, nil)
	rawSubscribe(t, sub, 1, 0, packet.Subscription{Filter: "t", QoS: 1})
	pub, _ := connectRaw(t, b, "pub", 0, nil)
	payload := make([]byte, 100)
	const n = 60
	go func() {
		for i := range n {
			p := &packet.Packet{Type: packet.Publish, QoS: byte(i % 2), Topic: "t", Payload: payload}
			if p.QoS == 1 {
				p.PacketID = uint16(i)
			}
			_ = pub.conn.SetWriteDeadline(time.Now().Add(waitFor))
			if _, err := pub.conn.Write(p.Encode(nil, packet.V5)); err != nil {
				return
			}
		}
	}()
	// Nothing is dropped, QoS 0 included: the publisher is read more slowly.
	for range n {
		p := sub.read(3 * waitFor)
		if p.QoS == 1 {
			sub.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
		}
	}
	if m, by := limitCount(b, server.LimitPublishRate), limitCount(b, server.LimitPublishByteRate); m == 0 || by == 0 {
		t.Errorf("throttle waits: %d for messages, %d for bytes; want both > 0", m, by)
	}
	if d := b.Stats().MessagesDropped; d != 0 {
		t.Errorf("%d messages dropped", d)
	}
}

func TestConnectionRateThrottles(t *testing.T) {
	t.Parallel()
	// One connection at once, then 20 a second: the rest wait to be accepted, none is
	// refused. The last Accept still waits when the test ends: Shutdown must end it.
	b := startBroker(t, server.Options{ConnectionRate: 20, ConnectionBurst: 1})
	for i := range 5 {
		connectRaw(t, b, fmt.Sprint("c", i), 0, nil)
	}
	if n := limitCount(b, server.LimitConnectionRate); n < 3 {
		t.Errorf("connection rate waits = %d, want at least 3", n)
	}
}
