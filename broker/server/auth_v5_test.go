package server_test

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
)

// Authentication and ACL with a real MQTT 5 client (paho.golang) over TCP and
// WebSocket, with the exact reason codes of the specification.

func TestAuthV5Connect(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			b, _, _ := startAuthBroker(t, false, 0)
			cases := []struct {
				name string
				cp   *paho.Connect
				want byte
			}{
				{"good credentials", asUser("c1", "alice", "alice-pw"), 0x00},
				{"wrong password", asUser("c2", "alice", "bob-pw"), 0x86},
				{"unknown user", asUser("c3", "mallory", "alice-pw"), 0x86},
				{"username without password", &paho.Connect{ClientID: "c4", CleanStart: true, UsernameFlag: true, Username: "alice"}, 0x86},
				{"anonymous refused", asUser("c5", "", ""), 0x87},
				{"will the ACL refuses", withWill(asUser("c6", "alice", "alice-pw"), "bob/x"), 0x87},
				{"will the ACL allows", withWill(asUser("c7", "alice", "alice-pw"), "alice/will"), 0x00},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if _, code := v5Connect(t, tr, b, tc.cp); code != tc.want {
						t.Fatalf("CONNACK 0x%02X, want 0x%02X", code, tc.want)
					}
				})
			}
		})
	}
	t.Run("anonymous allowed", func(t *testing.T) {
		b, _, _ := startAuthBroker(t, true, 0)
		if _, code := v5Connect(t, tcpTransport, b, asUser("anon", "", "")); code != 0 {
			t.Fatalf("CONNACK 0x%02X, want success", code)
		}
		if _, code := v5Connect(t, tcpTransport, b, asUser("bad", "alice", "nope")); code != 0x86 {
			t.Fatalf("a wrong password with anonymous allowed: CONNACK 0x%02X, want 0x86", code)
		}
	})
}

func withWill(cp *paho.Connect, topic string) *paho.Connect {
	cp.WillMessage = &paho.WillMessage{Topic: topic, QoS: 1, Payload: []byte("gone")}
	return cp
}

// TestAuthV5PublishSubscribe covers publish (QoS 0, 1, 2), subscribe, shared
// subscriptions, retained messages and $SYS, allowed and refused.
func TestAuthV5PublishSubscribe(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			b, _, _ := startAuthBroker(t, true, 0)
			alice := v5Login(t, tr, b, "alice-1", "alice")
			bob := v5Login(t, tr, b, "bob-1", "bob")
			anon, _ := v5Connect(t, tr, b, asUser("anon-1", "", ""))

			// Subscriptions: allowed, refused (0x87), shared, $SYS, in one SUBSCRIBE.
			got := alice.trySubscribe(t, sub("alice/#", 1), sub("bob/#", 1), sub("$share/g/shared/x", 1),
				sub("$SYS/broker/uptime", 0), sub("public/#", 1))
			if want := []byte{1, 0x87, 1, 0, 1}; string(got) != string(want) {
				t.Fatalf("alice's SUBACK = % x, want % x", got, want)
			}
			got = bob.trySubscribe(t, sub("alice/#", 1), sub("$share/g/shared/x", 1), sub("$SYS/#", 0), sub("#", 1), sub("bob/#", 2))
			if want := []byte{0x87, 0x87, 0x87, 0x87, 2}; string(got) != string(want) {
				t.Fatalf("bob's SUBACK = % x, want % x", got, want)
			}
			if got := anon.trySubscribe(t, sub("anon/#", 1), sub("alice/#", 1)); string(got) != string([]byte{1, 0x87}) {
				t.Fatalf("anonymous SUBACK = % x, want 01 87", got)
			}

			// $SYS reaches alice (retained, refreshed by the $SYS loop).
			if p := alice.next(t); p.Topic != "$SYS/broker/uptime" {
				t.Fatalf("alice got %q first, want $SYS/broker/uptime", p.Topic)
			}

			// Publishes: bob may write to alice/inbox, not to alice/other.
			if code := bob.publishCode(t, msg("alice/inbox", 1, "hi")); code != 0x00 {
				t.Fatalf("allowed QoS 1 publish: PUBACK 0x%02X", code)
			}
			if code := bob.publishCode(t, msg("alice/other", 1, "x1")); code != 0x87 {
				t.Fatalf("refused QoS 1 publish: PUBACK 0x%02X, want 0x87", code)
			}
			if code := bob.publishCode(t, msg("alice/other", 2, "x2")); code != 0x87 {
				t.Fatalf("refused QoS 2 publish: PUBREC 0x%02X, want 0x87", code)
			}
			bob.publish(t, msg("alice/other", 0, "x0")) // refused silently: QoS 0 has no ack
			if code := bob.publishCode(t, msg("$SYS/x", 1, "sys")); code != 0x87 {
				t.Fatalf("publish to $SYS: PUBACK 0x%02X, want 0x87", code)
			}
			alice.publish(t, msg("alice/done", 1, "sentinel"))
			if got := drainSys(alice.untilSentinel(t, "sentinel")); len(got) != 2 || got[0] != "alice/inbox=hi" {
				t.Fatalf("alice received %v, want alice/inbox=hi then the sentinel", got)
			}

			// Retained: a refused retained publish stores nothing; an allowed one reaches
			// only subscribers the ACL lets read it.
			if code := bob.publishCode(t, &paho.Publish{Topic: "alice/ret", QoS: 1, Retain: true, Payload: []byte("no")}); code != 0x87 {
				t.Fatalf("refused retained publish: 0x%02X", code)
			}
			bob.publish(t, &paho.Publish{Topic: "alice/inbox", QoS: 1, Retain: true, Payload: []byte("kept")})
			alice2 := v5Login(t, tr, b, "alice-2", "alice")
			alice2.subscribe(t, 0, sub("alice/#", 1))
			alice2.publish(t, msg("alice/end", 1, "sentinel2"))
			if got := alice2.untilSentinel(t, "sentinel2"); len(got) != 2 || got[0] != "alice/inbox=kept" {
				t.Fatalf("alice-2 received %v, want only the allowed retained message, then the sentinel", got)
			}
			if got := bob.trySubscribe(t, sub("alice/inbox", 1)); got[0] != 0x87 {
				t.Fatalf("bob may write alice/inbox but not read it: SUBACK 0x%02X", got[0])
			}

			// Shared subscription: alice's member of group g receives what bob publishes.
			bob.publish(t, msg("shared/x", 1, "to-group"))
			if got := drainSys(alice.untilSentinel(t, "to-group")); got[len(got)-1] != "shared/x=to-group" {
				t.Fatalf("alice received %v, want the shared message last", got)
			}
			anon.publish(t, msg("anon/x", 1, "anon-ok"))
			if p := anon.next(t); string(p.Payload) != "anon-ok" {
				t.Fatalf("anonymous client got %q", p.Payload)
			}
		})
	}
}

// drainSys drops $SYS messages from a received list.
func drainSys(got []string) []string {
	var out []string
	for _, g := range got {
		if len(g) < 5 || g[:5] != "$SYS/" {
			out = append(out, g)
		}
	}
	return out
}

// TestAuthV5Will: a will is published only to a topic its client may publish to.
func TestAuthV5Will(t *testing.T) {
	b, _, _ := startAuthBroker(t, false, 0)
	watcher := v5Login(t, tcpTransport, b, "watcher", "alice")
	watcher.subscribe(t, 0, sub("alice/#", 1))
	rc := dialRaw(t, b.TCPAddr, packet.V5)
	rc.send(&packet.Packet{Type: packet.Connect, Connect: packet.ConnectFields{ProtocolVersion: packet.V5,
		CleanStart: true, ClientID: "dying", UsernameFlag: true, Username: "alice", PasswordFlag: true,
		Password: []byte("alice-pw"), WillFlag: true, WillQoS: 1, WillTopic: "alice/will", WillPayload: []byte("bye")}})
	if ack := rc.expect(packet.Connack); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02X", byte(ack.ReasonCode))
	}
	_ = rc.conn.Close() // no DISCONNECT: the will is due
	if p := watcher.next(t); p.Topic != "alice/will" || string(p.Payload) != "bye" {
		t.Fatalf("watcher got %q=%q, want the will", p.Topic, p.Payload)
	}
}

// TestAuthV5ClientIDOwnership: user B cannot take over user A's client ID, live or
// with a persistent session; A keeps its connection and can come back.
func TestAuthV5ClientIDOwnership(t *testing.T) {
	b, a, _ := startAuthBroker(t, true, 0)
	cp := asUser("device-7", "alice", "alice-pw")
	cp.CleanStart = false
	cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(3600))}
	alice := v5Login(t, tcpTransport, b, "watch", "alice")
	alice.subscribe(t, 0, sub("alice/#", 1))
	owner, code := v5Connect(t, tcpTransport, b, cp)
	if owner == nil {
		t.Fatalf("alice refused: 0x%02X", code)
	}
	for _, thief := range []*paho.Connect{asUser("device-7", "bob", "bob-pw"), asUser("device-7", "", "")} {
		if _, code := v5Connect(t, tcpTransport, b, thief); code != 0x87 {
			t.Fatalf("takeover by %q: CONNACK 0x%02X, want 0x87", thief.Username, code)
		}
	}
	// The owner's connection is still live.
	owner.publish(t, msg("alice/still-here", 1, "yes"))
	if p := alice.next(t); string(p.Payload) != "yes" {
		t.Fatalf("got %q", p.Payload)
	}
	// Offline persistent session: still alice's.
	_ = owner.Disconnect(&paho.Disconnect{})
	eventually(t, waitFor, "the owner's disconnect", func() bool { return b.Stats().ClientsConnected == 1 })
	if _, code := v5Connect(t, tcpTransport, b, asUser("device-7", "bob", "bob-pw")); code != 0x87 {
		t.Fatalf("takeover of an offline session by bob: 0x%02X, want 0x87", code)
	}
	back, _ := v5Connect(t, tcpTransport, b, cp)
	if back == nil || !back.Connack.SessionPresent {
		t.Fatal("alice could not resume her own session")
	}
	// An anonymous client's session may be claimed by a user (anyone could connect
	// anonymously with its client ID anyway).
	anonCP := asUser("sensor-9", "", "")
	anonCP.CleanStart = false
	anonCP.Properties = &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(3600))}
	anon, _ := v5Connect(t, tcpTransport, b, anonCP)
	if anon == nil {
		t.Fatal("anonymous client refused")
	}
	claimCP := asUser("sensor-9", "alice", "alice-pw")
	claimCP.CleanStart = false
	if claimed, code := v5Connect(t, tcpTransport, b, claimCP); claimed == nil || !claimed.Connack.SessionPresent {
		t.Fatalf("alice could not claim an anonymous session: 0x%02X", code)
	}
	if _, code := v5Connect(t, tcpTransport, b, anonCP); code != 0x87 {
		t.Fatalf("anonymous takeover of the session alice claimed: 0x%02X, want 0x87", code)
	}
	if n := a.Stats().Connects["client_id_owned"]; n != 4 {
		t.Errorf("client_id_owned refusals = %d, want 4", n)
	}
}
