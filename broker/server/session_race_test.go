package server_test

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtt-operator/mqtt-operator/broker/packet"
	"github.com/mqtt-operator/mqtt-operator/broker/server"
)

// TestCleanSessionNeverResumed: a client connects with a clean session (MQTT 3.1.1
// Clean Session 1; MQTT 5 Clean Start with Session Expiry 0), subscribes, sends
// DISCONNECT and at once reconnects asking to resume its session, 1,000 times per
// version. The clean session ended with its connection (MQTT-3.1.2-7, MQTT 5
// 3.1.2.11.2), so SessionPresent is never 1, whichever of the old connection's
// teardown and the new CONNECT the server handles first.
func TestCleanSessionNeverResumed(t *testing.T) {
	t.Parallel()
	b := startBroker(t, server.Options{})
	persistent := &packet.Properties{SessionExpiry: 3600}
	persistent.Set(packet.PropSessionExpiry)
	for _, v := range []byte{packet.V311, packet.V5} {
		var props *packet.Properties
		if v == packet.V5 {
			props = persistent
		}
		for i := range 1000 {
			clean := dialRaw(t, b.TCPAddr, v)
			clean.connect("flip", true, 0, nil)
			clean.send(&packet.Packet{Type: packet.Subscribe, PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "flip/t", QoS: 1}}})
			clean.expect(packet.Suback)
			clean.send(&packet.Packet{Type: packet.Disconnect})
			again := dialRaw(t, b.TCPAddr, v)
			if ack := again.connect("flip", false, 0, props); ack.SessionPresent {
				t.Fatalf("version %d, run %d: a clean session was resumed (SessionPresent 1)", v, i)
			}
			_ = clean.conn.Close()
			_ = again.conn.Close()
		}
	}
}

// TestTakeoverOfExpiryZeroSessionSendsDelayedWill: a connection with a delayed will
// and Session Expiry 0 is taken over, here or from another node (Kick). Its session
// ends with it, so the will is due at once (MQTT-3.1.3-9: the delay ends when the
// session does), not dropped and not left waiting for a session that is gone.
func TestTakeoverOfExpiryZeroSessionSendsDelayedWill(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		takeover func(t *testing.T, b *broker, id string)
	}{
		{"by a connection on this node", func(t *testing.T, b *broker, id string) {
			tcpTransport.connect(t, b, &paho.Connect{ClientID: id, CleanStart: false})
		}},
		{"by a node that asks for the session (Kick)", func(t *testing.T, b *broker, id string) {
			if _, err := b.Kick(id, 1, true, server.Claim{}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, server.Options{})
			watcher := tcpTransport.connect(t, b, &paho.Connect{ClientID: "watcher", CleanStart: true})
			watcher.subscribe(t, 0, sub("will/#", 1))
			old := connectWithWill(t, b, "delayed", "will/delayed", 3600, 0)
			c.takeover(t, b, "delayed")
			expectServerDisconnect(t, old, packet.SessionTakenOver, waitFor)
			if p := watcher.nextPayload(t); p != "gone: delayed" {
				t.Fatalf("got %q, want the will", p)
			}
		})
	}
}
