package server_test

import (
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// --- 6. Subscription options ---

func TestV5NoLocal(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			self := tr.connect(t, b, &paho.Connect{ClientID: "nl-self", CleanStart: true})
			self.subscribe(t, 0, paho.SubscribeOptions{Topic: "nl/t", QoS: 1, NoLocal: true})
			other := tr.connect(t, b, &paho.Connect{ClientID: "nl-other", CleanStart: true})
			other.subscribe(t, 0, sub("nl/t", 1))

			self.publish(t, msg("nl/t", 1, "from self"))
			other.publish(t, msg("nl/t", 1, "from other"))
			if p := self.nextPayload(t); p != "from other" {
				t.Fatalf("no-local subscriber got %q first, want only the other client's message", p)
			}
			// Without no-local a client gets its own messages.
			if p := other.nextPayload(t); p != "from self" {
				t.Fatalf("other got %q, want from self", p)
			}
			if p := other.nextPayload(t); p != "from other" {
				t.Fatalf("other got %q, want its own message", p)
			}
		})
	}
}

func TestV5RetainAsPublished(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			keep := tr.connect(t, b, &paho.Connect{ClientID: "rap-keep", CleanStart: true})
			keep.subscribe(t, 0, paho.SubscribeOptions{Topic: "rap/t", QoS: 1, RetainAsPublished: true})
			clearing := tr.connect(t, b, &paho.Connect{ClientID: "rap-clear", CleanStart: true})
			clearing.subscribe(t, 0, sub("rap/t", 1))
			publisher := tr.connect(t, b, &paho.Connect{ClientID: "rap-pub", CleanStart: true})

			retained := msg("rap/t", 1, "retained")
			retained.Retain = true
			publisher.publish(t, retained)
			publisher.publish(t, msg("rap/t", 1, "plain"))

			cases := []struct {
				name    string
				c       *v5Client
				payload string
				retain  bool
			}{
				{"retain-as-published keeps the flag", keep, "retained", true},
				{"retain-as-published on a plain message", keep, "plain", false},
				{"default clears the flag", clearing, "retained", false},
				{"default on a plain message", clearing, "plain", false},
			}
			for _, tc := range cases {
				got := tc.c.next(t)
				if string(got.Payload) != tc.payload || got.Retain != tc.retain {
					t.Fatalf("%s: got %q retain=%v, want %q retain=%v", tc.name, got.Payload, got.Retain, tc.payload, tc.retain)
				}
			}
		})
	}
}

func TestV5RetainHandling(t *testing.T) {
	t.Parallel()
	cases := []struct {
		handling      byte
		first, second []string // what a subscription, then a re-subscription, receive before a live message
	}{
		{0, []string{"retained"}, []string{"retained"}},
		{1, []string{"retained"}, nil},
		{2, nil, nil},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			publisher := tr.connect(t, b, &paho.Connect{ClientID: "rh-pub", CleanStart: true})
			for _, tc := range cases {
				t.Run(fmt.Sprintf("handling%d", tc.handling), func(t *testing.T) {
					topic := fmt.Sprintf("rh/%d", tc.handling)
					r := msg(topic, 1, "retained")
					r.Retain = true
					publisher.publish(t, r)
					c := tr.connect(t, b, &paho.Connect{ClientID: "rh-" + strconv.Itoa(int(tc.handling)), CleanStart: true})
					for round, want := range [][]string{tc.first, tc.second} {
						c.subscribe(t, 0, paho.SubscribeOptions{Topic: topic, QoS: 1, RetainHandling: tc.handling})
						c.barrier(t) // retained messages of the SUBSCRIBE are queued by now
						live := "live" + strconv.Itoa(round)
						publisher.publish(t, msg(topic, 1, live))
						var got []string
						for {
							m := c.next(t)
							if string(m.Payload) == live {
								break
							}
							if !m.Retain {
								t.Fatalf("round %d: message %q sent on subscribe without RETAIN", round, m.Payload)
							}
							got = append(got, string(m.Payload))
						}
						if !slices.Equal(got, want) {
							t.Fatalf("round %d (re-subscribe=%v): retained messages %v, want %v", round, round == 1, got, want)
						}
					}
				})
			}
		})
	}
}

// --- 7. Subscription identifiers ---

func TestV5SubscriptionIdentifier(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			c := tr.connect(t, b, &paho.Connect{ClientID: "sid-sub", CleanStart: true})
			c.subscribe(t, 7, sub("sid/+", 1))
			c.subscribe(t, 0, sub("noid/#", 1))
			publisher := tr.connect(t, b, &paho.Connect{ClientID: "sid-pub", CleanStart: true})
			publisher.publish(t, msg("sid/a", 1, "with id"))
			publisher.publish(t, msg("noid/a", 1, "without id"))

			got := c.next(t)
			if got.Properties == nil || got.Properties.SubscriptionIdentifier == nil || *got.Properties.SubscriptionIdentifier != 7 {
				t.Fatalf("message %q: subscription identifier %v, want 7", got.Payload, got.Properties)
			}
			got = c.next(t)
			if got.Properties != nil && got.Properties.SubscriptionIdentifier != nil {
				t.Fatalf("message %q from a subscription without identifier carries %d", got.Payload, *got.Properties.SubscriptionIdentifier)
			}
		})
	}
}

func TestV5SubscriptionIdentifiersOverlap(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	rc, _ := connectRaw(t, b, "sid-raw", 0, nil)
	rawSubscribe(t, rc, 1, 1, packet.Subscription{Filter: "sid/#", QoS: 0})
	rawSubscribe(t, rc, 2, 2, packet.Subscription{Filter: "sid/a", QoS: 1})
	publisher := tcpTransport.connect(t, b, &paho.Connect{ClientID: "sid-raw-pub", CleanStart: true})
	publisher.publish(t, msg("sid/a", 1, "both"))
	publisher.publish(t, msg("sid/b", 1, "one"))

	p := rc.expect(packet.Publish)
	ids := slices.Sorted(slices.Values(p.Properties.SubscriptionIdentifier))
	if string(p.Payload) != "both" || !slices.Equal(ids, []uint32{1, 2}) {
		t.Fatalf("got %q with identifiers %v, want both with [1 2] in one PUBLISH", p.Payload, ids)
	}
	if p.QoS != 1 {
		t.Fatalf("overlapping delivery at QoS %d, want the highest granted (1)", p.QoS)
	}
	rc.send(&packet.Packet{Type: packet.Puback, PacketID: p.PacketID})
	p = rc.expect(packet.Publish)
	if string(p.Payload) != "one" || !slices.Equal(p.Properties.SubscriptionIdentifier, []uint32{1}) {
		t.Fatalf("got %q with identifiers %v, want one with [1] (a second copy of both?)", p.Payload, p.Properties.SubscriptionIdentifier)
	}
}

// --- 8. Shared subscriptions ---

func TestV5SharedSubscriptions(t *testing.T) {
	t.Parallel()
	const n = 60
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			type member struct {
				group string
				c     *v5Client
			}
			var members []member
			for _, g := range []struct {
				name string
				size int
			}{{"g1", 3}, {"g2", 2}} {
				for i := range g.size {
					id := fmt.Sprintf("%s-m%d", g.name, i)
					c := tr.connect(t, b, &paho.Connect{ClientID: id, CleanStart: true})
					c.subscribe(t, 0, sub("$share/"+g.name+"/sh/#", 1))
					c.subscribe(t, 0, sub("done/"+id, 1))
					members = append(members, member{g.name, c})
				}
			}
			plain := tr.connect(t, b, &paho.Connect{ClientID: "plain", CleanStart: true})
			plain.subscribe(t, 0, sub("sh/#", 1))
			plain.subscribe(t, 0, sub("done/plain", 1))

			publisher := tr.connect(t, b, &paho.Connect{ClientID: "sh-pub", CleanStart: true})
			for i := range n {
				publisher.publish(t, msg("sh/t", 1, strconv.Itoa(i)))
			}
			// Each session's queue is FIFO: its "done" message comes after every share
			// message queued for it, duplicates included.
			receivedBy := func(c *v5Client, id string) []string {
				t.Helper()
				publisher.publish(t, msg("done/"+id, 1, "done"))
				var got []string
				for {
					m := c.next(t)
					if m.Topic == "done/"+id {
						return got
					}
					got = append(got, string(m.Payload))
				}
			}
			perGroup := map[string]map[string]int{"g1": {}, "g2": {}}
			for _, m := range members {
				got := receivedBy(m.c, m.c.ClientID())
				if len(got) == 0 {
					t.Errorf("%s got no message: the group does not share the load", m.c.ClientID())
				}
				for _, p := range got {
					perGroup[m.group][p]++
				}
			}
			for group, counts := range perGroup {
				for i := range n {
					if c := counts[strconv.Itoa(i)]; c != 1 {
						t.Errorf("group %s received message %d %d times, want exactly once", group, i, c)
					}
				}
				if len(counts) != n {
					t.Errorf("group %s received %d distinct messages, want %d", group, len(counts), n)
				}
			}
			got := receivedBy(plain, "plain")
			want := make([]string, n)
			for i := range want {
				want[i] = strconv.Itoa(i)
			}
			if !slices.Equal(got, want) {
				t.Errorf("plain subscriber got %v, want all %d in order", got, n)
			}
		})
	}
}

// --- 9. Request/response and user properties ---

func TestV5PropertiesPassThrough(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			requester := tr.connect(t, b, &paho.Connect{ClientID: "requester", CleanStart: true})
			requester.subscribe(t, 0, sub("rr/reply", 2))
			responder := tr.connect(t, b, &paho.Connect{ClientID: "responder", CleanStart: true})
			responder.subscribe(t, 0, sub("rr/request", 2))

			for _, qos := range []byte{0, 1, 2} {
				want := &paho.PublishProperties{
					ResponseTopic:   "rr/reply",
					CorrelationData: []byte{0, 1, 2, 0xFF, qos},
					ContentType:     "application/json; charset=utf-8",
					PayloadFormat:   ptr[byte](1),
					User: paho.UserProperties{
						{Key: "trace", Value: "abc"}, {Key: "dup", Value: "first"}, {Key: "empty", Value: ""},
						{Key: "dup", Value: "second"}, {Key: "ünï", Value: "cødé"},
					},
				}
				req := msg("rr/request", qos, `{"question":42}`)
				req.Properties = want
				requester.publish(t, req)

				got := responder.next(t)
				p := got.Properties
				if p == nil {
					t.Fatalf("qos %d: request arrived without properties", qos)
				}
				if p.ResponseTopic != want.ResponseTopic || string(p.CorrelationData) != string(want.CorrelationData) ||
					p.ContentType != want.ContentType || p.PayloadFormat == nil || *p.PayloadFormat != 1 {
					t.Fatalf("qos %d: properties changed in transit: response topic %q, correlation %v, content type %q, payload format %v",
						qos, p.ResponseTopic, p.CorrelationData, p.ContentType, p.PayloadFormat)
				}
				if !slices.Equal(p.User, want.User) {
					t.Fatalf("qos %d: user properties %v, want %v (order and duplicates kept)", qos, p.User, want.User)
				}
				if p.MessageExpiry != nil {
					t.Fatalf("qos %d: message expiry %d added in transit", qos, *p.MessageExpiry)
				}

				reply := msg(p.ResponseTopic, qos, "answer")
				reply.Properties = &paho.PublishProperties{CorrelationData: p.CorrelationData}
				responder.publish(t, reply)
				back := requester.next(t)
				if string(back.Payload) != "answer" || back.Properties == nil || string(back.Properties.CorrelationData) != string(want.CorrelationData) {
					t.Fatalf("qos %d: reply %q with properties %+v, want the request's correlation data", qos, back.Payload, back.Properties)
				}
			}
		})
	}
}
