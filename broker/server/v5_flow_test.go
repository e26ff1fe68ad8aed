package server_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// --- 1. QoS flows ---

func TestV5QoSMatrix(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pubQoS, subQoS, wantQoS byte
	}{
		{0, 0, 0}, {0, 1, 0}, {0, 2, 0},
		{1, 0, 0}, {1, 1, 1}, {1, 2, 1},
		{2, 0, 0}, {2, 1, 1}, {2, 2, 2},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			subscriber := tr.connect(t, b, &paho.Connect{ClientID: "qos-sub", CleanStart: true})
			publisher := tr.connect(t, b, &paho.Connect{ClientID: "qos-pub", CleanStart: true})
			for _, tc := range cases {
				t.Run(fmt.Sprintf("pub%d-sub%d", tc.pubQoS, tc.subQoS), func(t *testing.T) {
					topic := fmt.Sprintf("qos/%d/%d/é", tc.pubQoS, tc.subQoS)
					payload := fmt.Sprintf("payload %d->%d \x00\xff", tc.pubQoS, tc.subQoS)
					subscriber.subscribe(t, 0, sub(topic, tc.subQoS))
					resp := publisher.publish(t, msg(topic, tc.pubQoS, payload))
					if tc.pubQoS > 0 && resp.ReasonCode != byte(packet.Success) {
						t.Fatalf("publish acknowledged with 0x%02X, want success", resp.ReasonCode)
					}
					// The sentinel follows on the same topic: anything between the two,
					// such as a second copy of a QoS 2 message, fails the test.
					publisher.publish(t, msg(topic, 1, "sentinel"))

					got := subscriber.next(t)
					if got.Topic != topic || string(got.Payload) != payload {
						t.Fatalf("got %q on %q, want %q on %q", got.Payload, got.Topic, payload, topic)
					}
					if got.QoS != tc.wantQoS {
						t.Fatalf("delivered at QoS %d, want %d", got.QoS, tc.wantQoS)
					}
					if p := subscriber.nextPayload(t); p != "sentinel" {
						t.Fatalf("after the message got %q, want the sentinel (duplicate delivery?)", p)
					}
				})
			}
		})
	}
}

func TestV5OrderedBurst(t *testing.T) {
	t.Parallel()
	const n = 200
	for _, tr := range transports {
		for _, qos := range []byte{1, 2} {
			t.Run(fmt.Sprintf("%s/qos%d", tr.name, qos), func(t *testing.T) {
				t.Parallel()
				b := startBroker(t, server.Options{})
				subscriber := tr.connect(t, b, &paho.Connect{ClientID: "burst-sub", CleanStart: true})
				subscriber.subscribe(t, 0, sub("burst/t", qos))
				publisher := tr.connect(t, b, &paho.Connect{ClientID: "burst-pub", CleanStart: true})
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				// Asynchronous sends put the whole burst in flight at once.
				for i := range n {
					_, err := publisher.PublishWithOptions(ctx, msg("burst/t", qos, strconv.Itoa(i)),
						paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
					if err != nil {
						t.Fatalf("publish %d: %v", i, err)
					}
				}
				publisher.publish(t, msg("burst/t", qos, "end"))
				for i := range n {
					got := subscriber.next(t)
					if string(got.Payload) != strconv.Itoa(i) {
						t.Fatalf("message %d: got %q (order broken or message lost/duplicated)", i, got.Payload)
					}
					if got.QoS != qos {
						t.Fatalf("message %d delivered at QoS %d, want %d", i, got.QoS, qos)
					}
				}
				if p := subscriber.nextPayload(t); p != "end" {
					t.Fatalf("after %d messages got %q, want end (duplicate delivery)", n, p)
				}
			})
		}
	}
}

// --- 2. Receive Maximum ---

func TestV5ReceiveMaximum(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	props := &packet.Properties{ReceiveMaximum: 2}
	props.Set(packet.PropReceiveMaximum)
	rc, _ := connectRaw(t, b, "rm-sub", 0, props)
	rawSubscribe(t, rc, 1, 0, packet.Subscription{Filter: "rm/t", QoS: 1})

	publisher := tcpTransport.connect(t, b, &paho.Connect{ClientID: "rm-pub", CleanStart: true})
	for i := range 10 {
		publisher.publish(t, msg("rm/t", 1, strconv.Itoa(i)))
	}

	var unacked []*packet.Packet
	var got []string
	receive := func() {
		t.Helper()
		p := rc.expect(packet.Publish)
		unacked = append(unacked, p)
		got = append(got, string(p.Payload))
	}
	ackOldest := func() {
		t.Helper()
		rc.send(&packet.Packet{Type: packet.Puback, PacketID: unacked[0].PacketID})
		unacked = unacked[1:]
	}

	receive()
	receive()
	expectQuiet(t, rc, 300*time.Millisecond) // the window of 2 is full
	ackOldest()
	receive()
	expectQuiet(t, rc, 300*time.Millisecond) // one ack opens room for exactly one
	for len(got) < 10 {
		ackOldest()
		receive()
	}
	for len(unacked) > 0 {
		ackOldest()
	}
	want := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	if !slices.Equal(got, want) {
		t.Fatalf("received %v, want %v", got, want)
	}
	expectQuiet(t, rc, 100*time.Millisecond)
}

// --- 3. Topic aliases ---

func TestV5TopicAliasFromClient(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{TopicAliasMaximum: 5})
			subscriber := tr.connect(t, b, &paho.Connect{ClientID: "alias-sub", CleanStart: true})
			subscriber.subscribe(t, 0, sub("ta/#", 1))
			publisher := tr.connect(t, b, &paho.Connect{ClientID: "alias-pub", CleanStart: true})
			if tam := publisher.Connack.Properties.TopicAliasMaximum; tam == nil || *tam != 5 {
				t.Fatalf("CONNACK Topic Alias Maximum %v, want 5", tam)
			}
			steps := []struct {
				topic, payload, wantTopic string
				alias                     uint16
			}{
				{"ta/x", "set 1", "ta/x", 1},
				{"", "use 1", "ta/x", 1},
				{"ta/y", "set 5", "ta/y", 5},
				{"", "use 5", "ta/y", 5},
				{"ta/z", "reset 1", "ta/z", 1},
				{"", "use 1 again", "ta/z", 1},
				{"", "use 5 again", "ta/y", 5},
			}
			for _, s := range steps {
				p := msg(s.topic, 1, s.payload)
				p.Properties = &paho.PublishProperties{TopicAlias: ptr(s.alias)}
				publisher.publish(t, p)
			}
			for _, s := range steps {
				got := subscriber.next(t)
				if got.Topic != s.wantTopic || string(got.Payload) != s.payload {
					t.Fatalf("got %q on %q, want %q on %q", got.Payload, got.Topic, s.payload, s.wantTopic)
				}
				if got.Properties != nil && got.Properties.TopicAlias != nil {
					t.Fatalf("subscriber without Topic Alias Maximum got alias %d", *got.Properties.TopicAlias)
				}
			}
		})
	}
}

func TestV5TopicAliasErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		topic string
		alias uint16
		want  packet.Code
	}{
		{"alias above the maximum", "ta/x", 6, packet.TopicAliasInvalid},
		{"alias zero", "ta/x", 0, packet.TopicAliasInvalid},
		{"unknown alias with empty topic", "", 3, packet.ProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{TopicAliasMaximum: 5})
			rc, ack := connectRaw(t, b, "alias-bad", 0, nil)
			if got := ack.Properties.TopicAliasMaximum; got != 5 {
				t.Fatalf("CONNACK Topic Alias Maximum %d, want 5", got)
			}
			p := &packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 1, Topic: tc.topic, Payload: []byte("x")}
			p.Properties.TopicAlias = tc.alias
			p.Properties.Set(packet.PropTopicAlias)
			rc.send(p)
			expectServerDisconnect(t, rc, tc.want, waitFor)
		})
	}
}

func TestV5TopicAliasToClient(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	props := &packet.Properties{TopicAliasMaximum: 5}
	props.Set(packet.PropTopicAliasMaximum)
	rc, _ := connectRaw(t, b, "alias-out", 0, props)
	rawSubscribe(t, rc, 1, 0, packet.Subscription{Filter: "sa/#", QoS: 0})
	publisher := tcpTransport.connect(t, b, &paho.Connect{ClientID: "alias-out-pub", CleanStart: true})
	for _, s := range []struct{ topic, payload string }{{"sa/x", "1"}, {"sa/x", "2"}, {"sa/y", "3"}, {"sa/y", "4"}, {"sa/x", "5"}} {
		publisher.publish(t, msg(s.topic, 1, s.payload))
	}

	read := func(payload string) *packet.Packet {
		t.Helper()
		p := rc.expect(packet.Publish)
		if string(p.Payload) != payload {
			t.Fatalf("got payload %q, want %q", p.Payload, payload)
		}
		if !p.Properties.Has(packet.PropTopicAlias) || p.Properties.TopicAlias == 0 || p.Properties.TopicAlias > 5 {
			t.Fatalf("payload %q: topic alias present=%v value=%d, want 1..5", payload,
				p.Properties.Has(packet.PropTopicAlias), p.Properties.TopicAlias)
		}
		return p
	}
	x1 := read("1")
	if x1.Topic != "sa/x" {
		t.Fatalf("first PUBLISH of sa/x has topic %q, want the full topic with the new alias", x1.Topic)
	}
	x2 := read("2")
	if x2.Topic != "" || x2.Properties.TopicAlias != x1.Properties.TopicAlias {
		t.Fatalf("second PUBLISH of sa/x: topic %q alias %d, want empty topic and alias %d", x2.Topic, x2.Properties.TopicAlias, x1.Properties.TopicAlias)
	}
	y1 := read("3")
	if y1.Topic != "sa/y" || y1.Properties.TopicAlias == x1.Properties.TopicAlias {
		t.Fatalf("first PUBLISH of sa/y: topic %q alias %d, want the full topic and a new alias", y1.Topic, y1.Properties.TopicAlias)
	}
	y2 := read("4")
	if y2.Topic != "" || y2.Properties.TopicAlias != y1.Properties.TopicAlias {
		t.Fatalf("second PUBLISH of sa/y: topic %q alias %d, want empty topic and alias %d", y2.Topic, y2.Properties.TopicAlias, y1.Properties.TopicAlias)
	}
	x3 := read("5")
	if x3.Topic != "" || x3.Properties.TopicAlias != x1.Properties.TopicAlias {
		t.Fatalf("third PUBLISH of sa/x: topic %q alias %d, want empty topic and alias %d", x3.Topic, x3.Properties.TopicAlias, x1.Properties.TopicAlias)
	}
}

// --- 4. Message expiry ---

func TestV5MessageExpiry(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	persistent := &paho.ConnectProperties{SessionExpiryInterval: ptr[uint32](30)}
	subscriber := tcpTransport.connect(t, b, &paho.Connect{ClientID: "exp-sub", CleanStart: true, Properties: persistent})
	subscriber.subscribe(t, 0, sub("exp/t", 1))
	if err := subscriber.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, "subscriber to go offline", func() bool { return b.Stats().ClientsConnected == 0 })

	publisher := tcpTransport.connect(t, b, &paho.Connect{ClientID: "exp-pub", CleanStart: true})
	published := time.Now()
	short := msg("exp/t", 1, "short")
	short.Properties = &paho.PublishProperties{MessageExpiry: ptr[uint32](1)}
	long := msg("exp/t", 1, "long")
	long.Properties = &paho.PublishProperties{MessageExpiry: ptr[uint32](60)}
	for _, p := range []*paho.Publish{short, long} {
		if r := publisher.publish(t, p); r.ReasonCode != byte(packet.Success) {
			t.Fatalf("publish %q to an offline session acknowledged with 0x%02X", p.Payload, r.ReasonCode)
		}
	}
	eventually(t, waitFor, "the short expiry interval to pass", func() bool {
		return time.Since(published) > 1200*time.Millisecond
	})

	back := tcpTransport.connect(t, b, &paho.Connect{ClientID: "exp-sub", CleanStart: false, Properties: persistent})
	if !back.Connack.SessionPresent {
		t.Fatal("session not present on reconnect")
	}
	publisher.publish(t, msg("exp/t", 1, "sentinel"))
	got := back.next(t)
	if string(got.Payload) != "long" {
		t.Fatalf("first message after reconnect is %q, want long (the expired one must not be delivered)", got.Payload)
	}
	if got.Properties == nil || got.Properties.MessageExpiry == nil {
		t.Fatal("delivered message lost its Message Expiry Interval")
	}
	if me := *got.Properties.MessageExpiry; me == 0 || me >= 60 {
		t.Fatalf("Message Expiry Interval %d, want it decreased by the time spent queued (0 < x < 60)", me)
	}
	if p := back.nextPayload(t); p != "sentinel" {
		t.Fatalf("got %q, want sentinel", p)
	}
	eventually(t, waitFor, "MessagesExpired to count the short message", func() bool { return b.Stats().MessagesExpired == 1 })
}

// --- 5. Session expiry ---

func TestV5SessionExpiry(t *testing.T) {
	t.Parallel()
	connect := func(t *testing.T, b *broker, id string, clean bool, expiry *uint32) *v5Client {
		t.Helper()
		return tcpTransport.connect(t, b, &paho.Connect{ClientID: id, CleanStart: clean,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: expiry}})
	}

	t.Run("zero ends the session on disconnect", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, server.Options{})
		c := connect(t, b, "se0", false, nil)
		c.subscribe(t, 0, sub("se0/t", 1))
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitFor, "the session to end", func() bool { return b.Stats().Sessions == 0 })
		publisher := connect(t, b, "se0-pub", true, nil)
		if r := publisher.publish(t, msg("se0/t", 1, "x")); r.ReasonCode != byte(packet.NoMatchingSubscribers) {
			t.Fatalf("publish after the session ended acknowledged with 0x%02X, want 0x10", r.ReasonCode)
		}
		again := connect(t, b, "se0", false, nil)
		if again.Connack.SessionPresent {
			t.Fatal("session present after a disconnect with session expiry 0")
		}
	})

	t.Run("non-zero keeps the session and its queue", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, server.Options{})
		c := connect(t, b, "se30", true, ptr[uint32](30))
		c.subscribe(t, 0, sub("se30/t", 1))
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, waitFor, "the client to go offline", func() bool { return b.Stats().ClientsConnected == 0 })
		if n := b.Stats().Sessions; n != 1 {
			t.Fatalf("%d sessions after disconnect, want 1", n)
		}
		publisher := connect(t, b, "se30-pub", true, nil)
		for i := range 3 {
			if r := publisher.publish(t, msg("se30/t", 1, strconv.Itoa(i))); r.ReasonCode != byte(packet.Success) {
				t.Fatalf("publish %d acknowledged with 0x%02X, want success (queued)", i, r.ReasonCode)
			}
		}
		again := connect(t, b, "se30", false, ptr[uint32](30))
		if !again.Connack.SessionPresent {
			t.Fatal("session not present on reconnect")
		}
		for i := range 3 {
			if p := again.nextPayload(t); p != strconv.Itoa(i) {
				t.Fatalf("queued message %d: got %q", i, p)
			}
		}
	})

	t.Run("session ends when the interval passes", func(t *testing.T) {
		t.Parallel()
		b := startBroker(t, server.Options{})
		c := connect(t, b, "se1", true, ptr[uint32](1))
		c.subscribe(t, 0, sub("se1/t", 1))
		start := time.Now()
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 3*time.Second, "the session to expire", func() bool { return b.Stats().Sessions == 0 })
		if d := time.Since(start); d < time.Second {
			t.Fatalf("session ended %v after disconnect, before its 1s expiry interval", d)
		}
		again := connect(t, b, "se1", false, ptr[uint32](1))
		if again.Connack.SessionPresent {
			t.Fatal("session present after its expiry interval passed")
		}
	})
}
