package server_test

import (
	"fmt"
	"slices"
	"strconv"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
	"github.com/mqtt-operator/mqtt-operator/broker/session"
)

// TestV311QoSMatrix checks every publish/subscribe QoS pair in both directions: the
// subscriber receives the payload intact at min(publish QoS, subscription QoS).
func TestV311QoSMatrix(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	for name, url := range v3Transports(b) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sub := v3Dial(t, url, "matrix-sub-"+name, true, nil)
			pub := v3Dial(t, url, "matrix-pub-"+name, true, nil)
			for subQoS := byte(0); subQoS <= 2; subQoS++ {
				sub.sub(fmt.Sprintf("matrix/%s/%d/+", name, subQoS), subQoS)
			}
			for pubQoS := byte(0); pubQoS <= 2; pubQoS++ {
				for subQoS := byte(0); subQoS <= 2; subQoS++ {
					topic := fmt.Sprintf("matrix/%s/%d/%d", name, subQoS, pubQoS)
					payload := fmt.Sprintf("pub %d sub %d \x00\xff\n", pubQoS, subQoS)
					pub.pub(topic, pubQoS, false, payload)
					m := sub.next()
					want := min(pubQoS, subQoS)
					if m.Topic() != topic || string(m.Payload()) != payload || m.Qos() != want || m.Retained() || m.Duplicate() {
						t.Fatalf("got %s %q qos %d retain %v dup %v, want %s %q qos %d",
							m.Topic(), m.Payload(), m.Qos(), m.Retained(), m.Duplicate(), topic, payload, want)
					}
				}
			}
		})
	}
}

// TestV311BurstOrder publishes 200 messages without waiting between them and checks
// that each arrives exactly once and in the publisher's order, at every QoS.
func TestV311BurstOrder(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	const n = 200
	for name, url := range v3Transports(b) {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("%s/qos%d", name, qos), func(t *testing.T) {
				t.Parallel()
				topic := fmt.Sprintf("burst/%s/%d", name, qos)
				sub := v3Dial(t, url, "burst-sub-"+topic, true, nil)
				sub.sub(topic, qos)
				sub.sub(topic+"/end", 0)
				pub := v3Dial(t, url, "burst-pub-"+topic, true, nil)
				toks := make([]mqtt.Token, 0, n)
				for i := range n {
					toks = append(toks, pub.Publish(topic, qos, false, fmt.Sprintf("%s-%03d", topic, i)))
				}
				for i, tok := range toks {
					v3Await(t, tok, fmt.Sprintf("publish %d", i))
				}
				pub.pub(topic+"/end", 1, false, "end")
				got := sub.until(topic + "/end")
				if len(got) != n {
					t.Fatalf("received %d messages, want exactly %d", len(got), n)
				}
				for i, m := range got {
					if want := fmt.Sprintf("%s-%03d", topic, i); string(m.Payload()) != want || m.Qos() != qos {
						t.Fatalf("message %d: %q qos %d, want %q qos %d", i, m.Payload(), m.Qos(), want, qos)
					}
				}
			})
		}
	}
}

// TestV311QoS2InboundReconnect interrupts a client's QoS 2 publication and resumes it
// on a new connection of the same persistent session: the retransmitted PUBLISH (DUP)
// is acknowledged but not routed again, so subscribers get the message exactly once.
func TestV311QoS2InboundReconnect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		seenPubrec bool // whether the client read PUBREC before the connection dropped
	}{
		{"drop after PUBREC", true},
		{"drop before PUBREC", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			sub := v3Dial(t, "tcp://"+b.TCPAddr, "q2in-sub", true, nil)
			sub.sub("q2in/t", 2)
			sub.sub("q2in/end", 0)

			first := v3RawConnect(t, b, "q2in-pub", false, 0, false)
			publish := &packet.Packet{Type: packet.Publish, QoS: 2, PacketID: 7, Topic: "q2in/t", Payload: []byte("exactly once")}
			first.send(publish)
			if tc.seenPubrec {
				v3RawExpect(t, first, packet.Pubrec, 7)
			}
			_ = first.conn.Close()
			v3WaitConnected(t, b, 1)

			second := v3RawConnect(t, b, "q2in-pub", false, 0, true)
			publish.Dup = true
			second.send(publish)
			v3RawExpect(t, second, packet.Pubrec, 7)
			second.send(&packet.Packet{Type: packet.Pubrel, PacketID: 7})
			v3RawExpect(t, second, packet.Pubcomp, 7)
			// Packet id 7 is free again: a new message with it is a new message.
			second.send(&packet.Packet{Type: packet.Publish, QoS: 2, PacketID: 7, Topic: "q2in/t", Payload: []byte("next")})
			v3RawExpect(t, second, packet.Pubrec, 7)
			second.send(&packet.Packet{Type: packet.Pubrel, PacketID: 7})
			v3RawExpect(t, second, packet.Pubcomp, 7)
			second.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 8, Topic: "q2in/end", Payload: []byte("end")})
			v3RawExpect(t, second, packet.Puback, 8)

			var payloads []string
			for _, m := range sub.until("q2in/end") {
				payloads = append(payloads, string(m.Payload()))
				if m.Qos() != 2 {
					t.Errorf("%q delivered at qos %d, want 2", m.Payload(), m.Qos())
				}
			}
			if want := []string{"exactly once", "next"}; !slices.Equal(payloads, want) {
				t.Fatalf("subscriber received %q, want %q", payloads, want)
			}
		})
	}
}

// TestV311QoS2OutboundReconnect interrupts a QoS 2 delivery to a persistent subscriber:
// before its PUBREC the broker must retransmit the PUBLISH with DUP and the same packet
// id; after it, only the PUBREL. Either way the message is delivered once.
func TestV311QoS2OutboundReconnect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		sendPubrec bool // the subscriber acknowledged with PUBREC (and saw PUBREL) before dropping
	}{
		{"drop before PUBREC", false},
		{"drop after PUBREC", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			first := v3RawConnect(t, b, "q2out-sub", false, 0, false)
			v3RawSubscribe(t, first, "q2out/t", 2)
			pub := v3Dial(t, "tcp://"+b.TCPAddr, "q2out-pub", true, nil)
			pub.pub("q2out/t", 2, false, "exactly once")

			p := first.expect(packet.Publish)
			if p.QoS != 2 || p.Dup || p.PacketID == 0 || string(p.Payload) != "exactly once" {
				t.Fatalf("first PUBLISH: qos %d dup %v id %d %q", p.QoS, p.Dup, p.PacketID, p.Payload)
			}
			id := p.PacketID
			if tc.sendPubrec {
				first.send(&packet.Packet{Type: packet.Pubrec, PacketID: id})
				v3RawExpect(t, first, packet.Pubrel, id) // the broker recorded PUBREC
			}
			_ = first.conn.Close()
			v3WaitConnected(t, b, 1)

			second := v3RawConnect(t, b, "q2out-sub", false, 0, true)
			if tc.sendPubrec {
				v3RawExpect(t, second, packet.Pubrel, id)
			} else {
				r := v3RawExpect(t, second, packet.Publish, id)
				if r.QoS != 2 || !r.Dup || r.Topic != "q2out/t" || string(r.Payload) != "exactly once" {
					t.Fatalf("retransmission: qos %d dup %v %s %q, want qos 2 dup true q2out/t %q",
						r.QoS, r.Dup, r.Topic, r.Payload, "exactly once")
				}
				second.send(&packet.Packet{Type: packet.Pubrec, PacketID: id})
				v3RawExpect(t, second, packet.Pubrel, id)
			}
			second.send(&packet.Packet{Type: packet.Pubcomp, PacketID: id})

			// The flow is complete: the next packet is the next message, not a copy.
			pub.pub("q2out/t", 1, false, "after")
			n := second.expect(packet.Publish)
			if string(n.Payload) != "after" || n.Dup {
				t.Fatalf("after PUBCOMP got PUBLISH %q dup %v, want %q", n.Payload, n.Dup, "after")
			}
			second.send(&packet.Packet{Type: packet.Puback, PacketID: n.PacketID})
		})
	}
}

// TestV311OfflineQueue checks persistent sessions: QoS 1 messages published while a
// clean-session=false subscriber is away are delivered in order when it returns (session
// present), QoS 0 ones are not (the broker keeps only QoS>0 for offline clients), and a
// clean-session=true connection discards the session.
func TestV311OfflineQueue(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	url := "tcp://" + b.TCPAddr

	sub := v3Dial(t, url, "offline-sub", false, nil)
	if sub.sessionPresent {
		t.Fatal("new session reported as present")
	}
	sub.sub("offline/t", 1)
	sub.Disconnect(50)
	v3WaitConnected(t, b, 0)

	pub := v3Dial(t, url, "offline-pub", true, nil)
	for i := range 50 {
		pub.pub("offline/t", 0, false, fmt.Sprintf("qos0-%02d", i))
		pub.pub("offline/t", 1, false, fmt.Sprintf("qos1-%02d", i))
	}

	back := v3Dial(t, url, "offline-sub", false, nil)
	if !back.sessionPresent {
		t.Fatal("reconnect with clean session false: session present is false")
	}
	for i := range 50 {
		m := back.next()
		if want := fmt.Sprintf("qos1-%02d", i); string(m.Payload()) != want || m.Qos() != 1 {
			t.Fatalf("queued message %d: %q qos %d, want %q qos 1", i, m.Payload(), m.Qos(), want)
		}
	}
	pub.pub("offline/t", 0, false, "live")
	if m := back.next(); string(m.Payload()) != "live" {
		t.Fatalf("after the queue got %q, want %q (QoS 0 messages must not be kept offline)", m.Payload(), "live")
	}

	// Clean session: the old session, its subscription and its queue are gone.
	back.Disconnect(50)
	v3WaitConnected(t, b, 1)
	pub.pub("offline/t", 1, false, "discarded")
	clean := v3Dial(t, url, "offline-sub", true, nil)
	if clean.sessionPresent {
		t.Fatal("clean session true: session present is true")
	}
	clean.sub("offline/end", 1)
	pub.pub("offline/t", 1, false, "not subscribed")
	pub.pub("offline/end", 1, false, "end")
	if got := clean.until("offline/end"); len(got) != 0 {
		t.Fatalf("clean session received %d messages of the discarded session, first %q", len(got), got[0].Payload())
	}
	clean.Disconnect(50)
	v3WaitConnected(t, b, 1)
	// A clean session lasts only as long as its connection.
	if again := v3Dial(t, url, "offline-sub", false, nil); again.sessionPresent {
		t.Fatal("session of a clean-session connection survived it")
	}
}

// TestV311QueueCap checks the per-session queue limit: an offline subscriber keeps at
// most MaxQueued messages, the drop policy chooses which, and drops are counted.
func TestV311QueueCap(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		policy    session.DropPolicy
		wantFirst int // payload index of the first kept message
	}{
		{"drop newest (default)", session.DropNewest, 0},
		{"drop oldest", session.DropOldest, 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{MaxQueued: 10, DropPolicy: tc.policy})
			v3OfflineSubscriber(t, b, "capped", "cap/t")

			pub := v3RawConnect(t, b, "cap-pub", true, 0, false)
			for i := range 25 {
				pub.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: uint16(i + 1), Topic: "cap/t", Payload: []byte(strconv.Itoa(i))})
				v3RawExpect(t, pub, packet.Puback, uint16(i+1))
			}
			if got := b.Stats().MessagesDropped; got != 15 {
				t.Errorf("MessagesDropped = %d, want 15", got)
			}

			back := v3RawConnect(t, b, "capped", false, 0, true)
			for i := range 10 {
				p := back.expect(packet.Publish)
				if want := strconv.Itoa(tc.wantFirst + i); string(p.Payload) != want {
					t.Fatalf("queued message %d: %q, want %q", i, p.Payload, want)
				}
				back.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
			}
			pub.send(&packet.Packet{Type: packet.Publish, QoS: 1, PacketID: 100, Topic: "cap/t", Payload: []byte("end")})
			v3RawExpect(t, pub, packet.Puback, 100)
			if p := back.expect(packet.Publish); string(p.Payload) != "end" {
				t.Fatalf("after 10 queued messages got %q, want %q", p.Payload, "end")
			}
		})
	}
}
